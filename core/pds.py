"""com.atproto.repo.uploadBlob to the uploader's own PDS, with the token they forwarded.

The PDS URL comes from a user-controlled DID document, so every attempt checks it again
(:mod:`atproto_video.core.netguard`): outside dev mode only public https endpoints, and the request
goes to the address that was checked (no second DNS lookup that could be rebound), with the
hostname kept for the Host header and TLS verification. No redirects, bounded timeouts, a
bounded answer. Transient failures (connection errors, timeouts, 5xx, 429) are retried with
exponential backoff until the token's ``exp``; the token itself never appears in an error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from atproto_video.core.lexicon import NSID_UPLOAD_BLOB, FailureCode
from atproto_video.core.netguard import (
    PinnedUrl,
    Resolver,
    Unresolved,
    UnsafeEndpoint,
    pin_endpoint,
    system_resolve,
)

CHUNK = 1 << 20
MAX_ANSWER_BYTES = 64 * 1024

# (bytes sent, total bytes): called as the body streams out.
Progress = Callable[[int, int], Awaitable[None]]


class PdsUploadError(Exception):
    """The PDS did not take the blob; ``failure_code`` is what the job fails with."""

    failure_code = FailureCode.PDS_UPLOAD

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PdsBlobTooLarge(PdsUploadError):
    failure_code = FailureCode.PDS_UPLOAD_SIZE


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 60.0
    initial_s: float = 1.0
    max_s: float = 30.0
    # Give up instead of starting an attempt with less than this left before the token's exp.
    min_remaining_s: float = 1.0


async def resolve_target(
    pds_url: str, *, allow_private: bool, resolve: Resolver = system_resolve
) -> PinnedUrl:
    """Check the endpoint and pin the request to a checked address. Raises UnsafeEndpoint."""
    parts = urlsplit(pds_url.rstrip("/"))
    url = urlunsplit((parts.scheme, parts.netloc, f"{parts.path}/xrpc/{NSID_UPLOAD_BLOB}", "", ""))
    return await pin_endpoint(url, allow_private=allow_private, resolve=resolve)


async def _file_body(path: Path, size: int, on_progress: Progress | None) -> AsyncIterator[bytes]:
    """The file in chunks, read off the event loop; never more than one chunk in memory."""
    f = await asyncio.to_thread(path.open, "rb")
    try:
        sent = 0
        while sent < size:
            block = await asyncio.to_thread(f.read, min(CHUNK, size - sent))
            if not block:
                raise PdsUploadError("the processed video changed size while uploading")
            sent += len(block)
            yield block
            if on_progress is not None:
                await on_progress(sent, size)
    finally:
        await asyncio.to_thread(f.close)


def _describe(status: int, body: bytes) -> str:
    """``HTTP 401 ExpiredToken: token expired`` from an XRPC error body (bounded)."""
    out = f"HTTP {status}"
    try:
        doc = json.loads(body)
    except ValueError:
        return out
    if isinstance(doc, dict):
        if isinstance(doc.get("error"), str):
            out += f" {doc['error'][:100]}"
        if isinstance(doc.get("message"), str):
            out += f": {doc['message'][:300]}"
    return out


async def _read_limited(resp: httpx.Response) -> bytes:
    out = bytearray()
    async for block in resp.aiter_bytes():
        out += block
        if len(out) > MAX_ANSWER_BYTES:
            raise PdsUploadError("the PDS answered with an oversized body")
    return bytes(out)


def _parse_blob(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise PdsUploadError("the PDS answered uploadBlob with invalid JSON") from None
    blob = doc.get("blob") if isinstance(doc, dict) else None
    ref = blob.get("ref") if isinstance(blob, dict) else None
    if (
        not isinstance(blob, dict)
        or not isinstance(ref, dict)
        or not isinstance(ref.get("$link"), str)
        or not isinstance(blob.get("size"), int)
    ):
        raise PdsUploadError("the PDS answered uploadBlob without a blob ref")
    return blob


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after", "")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class _Transient:
    reason: str
    retry_after: float | None = None


async def _attempt(
    client: httpx.AsyncClient,
    target: PinnedUrl,
    token: str,
    path: Path,
    size: int,
    mime_type: str,
    timeout_s: float,
    on_progress: Progress | None,
) -> dict[str, Any] | _Transient:
    """One POST: the blob, a transient failure to retry, or a final PdsUploadError."""
    headers = {
        "authorization": f"Bearer {token}",
        "content-type": mime_type,
        "content-length": str(size),
        "accept": "application/json",
    }
    headers.update(target.headers())
    try:
        async with client.stream(
            "POST",
            target.url,
            content=_file_body(path, size, on_progress),
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            extensions=target.extensions(),
        ) as resp:
            body = await _read_limited(resp)
    except httpx.TransportError as exc:
        return _Transient(f"{type(exc).__name__} talking to the PDS")
    status = resp.status_code
    if status == 200:
        return _parse_blob(body)
    if status == 413:
        raise PdsBlobTooLarge(
            f"the PDS refused the video as too large ({size} bytes): {_describe(status, body)}"
        )
    if status == 429 or status >= 500:
        return _Transient(_describe(status, body), _retry_after(resp))
    if 300 <= status < 400:
        raise PdsUploadError(f"the PDS answered with a redirect (HTTP {status}); not followed")
    raise PdsUploadError(f"the PDS refused the upload: {_describe(status, body)}")


async def upload_blob(
    pds_url: str,
    token: str,
    path: Path,
    *,
    deadline: float,
    mime_type: str = "video/mp4",
    allow_private: bool = False,
    policy: RetryPolicy | None = None,
    on_progress: Progress | None = None,
    on_retry: Callable[[str, float], None] | None = None,
    resolve: Resolver = system_resolve,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> dict[str, Any]:
    """POST the file to ``<pds>/xrpc/com.atproto.repo.uploadBlob``; returns the PDS's blob.

    ``deadline`` is the token's exp (Unix seconds). Raises :class:`PdsBlobTooLarge` on 413 and
    :class:`PdsUploadError` for every other final failure.
    """
    policy = policy or RetryPolicy()
    size = path.stat().st_size
    last: str | None = None
    async with httpx.AsyncClient(
        follow_redirects=False, trust_env=False, transport=transport
    ) as client:
        attempt = 0
        while True:
            remaining = deadline - clock()
            if remaining <= policy.min_remaining_s:
                break
            try:
                target = await resolve_target(pds_url, allow_private=allow_private, resolve=resolve)
            except Unresolved as exc:
                outcome: dict[str, Any] | _Transient = _Transient(str(exc))
            except UnsafeEndpoint as exc:
                raise PdsUploadError(f"refusing to upload to the PDS: {exc}") from None
            else:
                per_try = min(policy.timeout_s, max(1.0, remaining))
                outcome = await _attempt(
                    client, target, token, path, size, mime_type, per_try, on_progress
                )
            if not isinstance(outcome, _Transient):
                return outcome
            last = outcome.reason
            delay = min(policy.max_s, policy.initial_s * 2 ** min(attempt, 30))
            if outcome.retry_after is not None:
                delay = min(policy.max_s, max(delay, outcome.retry_after))
            delay = min(delay, max(0.0, deadline - clock() - policy.min_remaining_s))
            if on_retry is not None:
                on_retry(last, delay)
            await sleep(delay)
            attempt += 1
    if last is None:
        raise PdsUploadError(
            "the upload token expired before the video was ready to upload to the PDS"
        )
    raise PdsUploadError(
        f"the upload token expired before the PDS accepted the video (last error: {last})"
    )
