"""XRPC errors: ``{"error": Name, "message": text}`` with the status codes of SPEC section 7."""

from __future__ import annotations

from typing import Any

from atproto_video.core.dbfaults import db_unavailable, disk_or_database_full


class XrpcError(Exception):
    status = 400
    name = "InvalidRequest"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if name is not None:
            self.name = name
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.name, "message": self.message}


class InvalidRequest(XrpcError):
    status, name = 400, "InvalidRequest"


class AuthRequired(XrpcError):
    status, name = 401, "AuthRequired"


class Forbidden(XrpcError):
    status, name = 403, "Forbidden"


class NotFound(XrpcError):
    status, name = 404, "NotFound"


class PayloadTooLarge(XrpcError):
    status, name = 413, "PayloadTooLarge"


class RateLimitExceeded(XrpcError):
    status, name = 429, "RateLimitExceeded"


class InternalServerError(XrpcError):
    status, name = 500, "InternalServerError"


class MethodNotImplemented(XrpcError):
    status, name = 501, "MethodNotImplemented"


class UpstreamFailure(XrpcError):
    status, name = 502, "UpstreamFailure"


class NotEnoughResources(XrpcError):
    status, name = 503, "NotEnoughResources"


#: Seconds a client is told to wait before retrying after a temporary outage.
RETRY_AFTER_S = 5
#: ... and after finding the storage volume full (freeing space takes an operator longer).
STORAGE_FULL_RETRY_AFTER_S = 30
STORAGE_FULL_MESSAGE = "video storage is full; try again later"


def storage_full(message: str = STORAGE_FULL_MESSAGE) -> NotEnoughResources:
    """The answer when the storage volume (or its quota) has no room for an upload: a
    retryable 503, like any other shortage, whose message says what is short."""
    return NotEnoughResources(message,
                              headers={"retry-after": str(STORAGE_FULL_RETRY_AFTER_S)})


def from_unexpected(exc: BaseException) -> XrpcError:
    """The XRPC answer for an exception no handler expected.

    A database that cannot be reached is temporary: 503 ``NotEnoughResources`` with
    ``retry-after``, so clients retry instead of giving up; so is a full storage volume
    (ENOSPC, EDQUOT). Anything else is a bug: 500, with no internals in the message.
    """
    if disk_or_database_full(exc):
        return storage_full()
    if db_unavailable(exc):
        return NotEnoughResources("the service database is unavailable; try again shortly",
                                  headers={"retry-after": str(RETRY_AFTER_S)})
    return InternalServerError("Internal Server Error")
