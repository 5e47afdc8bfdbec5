"""XRPC errors: ``{"error": Name, "message": text}`` with the status codes of SPEC section 7."""

from __future__ import annotations

from typing import Any


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


def from_unexpected(exc: BaseException) -> XrpcError:
    """The answer to an exception no handler expected: one place to map failure kinds (the
    handler has logged it; nothing internal is shown)."""
    return InternalServerError("Internal Server Error")
