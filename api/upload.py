"""app.bsky.video.uploadVideo: authenticate, check quota, stream to storage, create the job.

Two token kinds (SPEC section 3): a seed-mode token for this service, or the Bluesky app's
token for the uploader's own PDS (``com.atproto.repo.uploadBlob``). The latter is kept,
encrypted, on the job so the processed MP4 can be uploaded to that PDS; its endpoint is
checked against the SSRF rules here, before anything is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from atproto_video.api.auth import Caller
from atproto_video.api.context import AppContext
from atproto_video.api.errors import (
    AuthRequired,
    InvalidRequest,
    NotEnoughResources,
    PayloadTooLarge,
    RateLimitExceeded,
    XrpcError,
    from_unexpected,
    storage_full,
)
from atproto_video.api.models import UploadVideoOutput, UploadVideoParams
from atproto_video.api.responses import JSON
from atproto_video.core import metrics
from atproto_video.core.config import ConfigError
from atproto_video.core.dbfaults import (
    db_unavailable,
    disk_or_database_full,
    retry_while_unavailable,
)
from atproto_video.core.jobs import DuplicateUpload, Job, NewJob, new_job_id, utcnow
from atproto_video.core.lexicon import (
    ALREADY_EXISTS,
    ALREADY_EXISTS_MESSAGE,
    NSID_UPLOAD_VIDEO,
    QUOTA_BYTES_EXCEEDED,
    QUOTA_VIDEOS_EXCEEDED,
    JobStatus,
)
from atproto_video.core.netguard import UnsafeEndpoint, check_endpoint
from atproto_video.core.quota import SINGLE, QuotaExceeded, TooManyOpenUploads
from atproto_video.core.storage import (
    EmptyUpload,
    StorageUnavailable,
    StoredUpload,
    UploadTooLarge,
    remove_job,
    shielded,
)
from atproto_video.core.tokens import TokenCipher, cipher_for

log = logging.getLogger(__name__)


def upload_answer(status: JobStatus, **extra: str) -> dict[str, object]:
    """Production answers with the bare job status; lexicon clients read ``jobStatus``."""
    answer = UploadVideoOutput.model_validate({**status, **extra, "jobStatus": status})
    return answer.model_dump(mode="json", by_alias=True, exclude_none=True)


class _KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# Serialises "find duplicate, else create" per (DID, content hash) within this process, so two
# concurrent identical uploads make one job. Across API replicas the partial unique index
# uq_video_job_live_upload makes the second insert fail, answered as a duplicate.
_dedup_locks = _KeyedLocks()


async def handle_upload(request: Request, ctx: AppContext, params: UploadVideoParams) -> Response:
    """uploadVideo, counted by result (and accepted bytes) for the metrics. The body streams
    from ``request`` (never read whole); the token is checked here, after the parameters."""
    try:
        response, result, size = await _upload(request, ctx, params)
    except XrpcError as exc:
        metrics.UPLOADS.labels(result=metrics.upload_result(exc.name, type(exc).name)).inc()
        raise
    except ClientDisconnect:
        metrics.UPLOADS.labels(result="ClientDisconnect").inc()
        raise
    except Exception as exc:
        metrics.UPLOADS.labels(result=from_unexpected(exc).name).inc()
        raise
    metrics.UPLOADS.labels(result=result).inc()
    metrics.UPLOAD_BYTES.inc(size)
    return response


async def _upload(
    request: Request, ctx: AppContext, params: UploadVideoParams
) -> tuple[Response, str, int]:
    """The answer, the ``result`` label (accepted or already_exists) and the new job's bytes."""
    caller = await ctx.verifier.verify(
        request.headers.get("authorization"), NSID_UPLOAD_VIDEO, allow_pds_audience=True
    )
    if params.did is not None and params.did != caller.did:
        raise AuthRequired("the did parameter does not match the token issuer", name="BadJwtIss")
    delivery = await delivery_for(ctx, caller)

    max_bytes = ctx.cfg.service.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidRequest("invalid Content-Length")
        if int(length) > max_bytes:
            raise PayloadTooLarge(f"request entity too large: at most {max_bytes} bytes")
        if int(length) == 0:
            raise InvalidRequest("the request body is empty: send the video file")
        if not await asyncio.to_thread(ctx.storage.room_for, int(length)):
            log.warning("storage full: upload refused before reading it",
                        extra={"did": caller.did, "bytes": int(length)})
            raise storage_full()

    job_id = new_job_id()
    # Held before a byte is stored: the declared size, or what is left as a ceiling.
    declared = int(length) if length is not None else None
    ceiling = await reserve_upload(ctx, caller.did, job_id, declared, kind=SINGLE)
    try:
        return await _store_and_commit(request, ctx, caller, job_id, ceiling, delivery,
                                       params.name)
    finally:
        # Converted when the job was committed; released on every other way out.
        await shielded(release_reservation(ctx, job_id, caller.did))


#: Writes waiting for the database to come back; held so the tasks are not collected.
_pending_writes: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None], name: str) -> None:
    task = asyncio.create_task(work, name=name)
    _pending_writes.add(task)
    task.add_done_callback(_pending_writes.discard)


async def drain_background(timeout_s: float) -> int:
    """At shutdown: give the writes still waiting for the database ``timeout_s`` to land,
    then cancel them. Returns how many were cancelled (their rows are the startup sweep's)."""
    if not _pending_writes:
        return 0
    _, pending = await asyncio.wait(set(_pending_writes), timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        log.warning("shutting down with %d database writes undone; the next start sweeps "
                    "them", len(pending))
    return len(pending)


def write_when_back(fn: Callable[[], object], *, what: str, extra: dict[str, str]) -> None:
    """Retry a small write (a release, a session transition) in the background until the
    database is back; the caller's answer does not wait for the outage to end."""
    log.warning("database unavailable while %s; retrying in the background", what, extra=extra)

    async def write() -> None:
        await retry_while_unavailable(fn, what=what, extra=extra)

    _in_background(write(), f"db-write-{extra.get('job_id', '')}")


async def release_reservation(ctx: AppContext, reservation_id: str, did: str) -> None:
    """Give a reservation back now, or, with the database down, as soon as it is back (if the
    process dies first, the reservation expires and the upload sweep releases it)."""
    try:
        await asyncio.to_thread(ctx.ledger.release, reservation_id)
    except Exception as exc:
        if not db_unavailable(exc):
            raise
        write_when_back(lambda: ctx.ledger.release(reservation_id),
                        what="releasing an upload reservation",
                        extra={"job_id": reservation_id, "did": did})


async def reserve_upload(
    ctx: AppContext, did: str, job_id: str, declared: int | None, *, kind: str
) -> int:
    """Reserve one video and the upload's bytes (``declared``, else the remaining bytes up to
    the per-file cap); returns the bytes held. Raises the XRPC quota errors."""
    quota = ctx.quota
    max_bytes = ctx.cfg.service.max_upload_bytes
    if declared is None:
        videos, left = await asyncio.to_thread(
            ctx.ledger.remaining, did, quota, utcnow().date())
        if videos <= 0:
            raise _quota_error(QUOTA_VIDEOS_EXCEEDED)
        declared = min(max_bytes, left)
        if declared <= 0:
            raise _quota_error(QUOTA_BYTES_EXCEEDED)
    ttl = ctx.cfg.service.upload_session_ttl_s
    try:
        await asyncio.to_thread(
            ctx.ledger.reserve, job_id, did, declared, quota, kind=kind,
            expires_at=utcnow() + dt.timedelta(seconds=ttl))
    except QuotaExceeded as exc:
        raise _quota_error(exc.message) from None
    except TooManyOpenUploads:
        raise RateLimitExceeded(
            f"too many uploads in progress: at most {quota.open_uploads} at once",
            name="TooManyOpenUploads") from None
    return declared


async def _store_and_commit(
    request: Request,
    ctx: AppContext,
    caller: Caller,
    job_id: str,
    ceiling: int,
    delivery: Delivery,
    name: str | None,
) -> tuple[Response, str, int]:
    extra = {"did": caller.did, "job_id": job_id}
    max_bytes = ctx.cfg.service.max_upload_bytes
    mime = (request.headers.get("content-type") or "application/octet-stream").split(";")[0].strip()
    try:
        stored = await ctx.storage.receive(job_id, request.stream(), min(max_bytes, ceiling))
    except UploadTooLarge:
        if ceiling < max_bytes:  # beyond what was left of the quota, not beyond the cap
            raise _quota_error(QUOTA_BYTES_EXCEEDED) from None
        raise PayloadTooLarge(f"request entity too large: at most {max_bytes} bytes") from None
    except EmptyUpload:
        raise InvalidRequest("the request body is empty: send the video file") from None
    except StorageUnavailable:
        log.warning("storage unavailable during an upload", extra=extra)
        raise NotEnoughResources("video storage is unavailable; try again shortly",
                                 headers={"retry-after": "5"}) from None
    except OSError as exc:
        if not disk_or_database_full(exc):
            raise
        # receive() removed what it had written; the caller releases the reservation.
        log.warning("storage full during an upload", extra=extra)
        raise storage_full() from None

    job, duplicate = await commit_job(
        ctx, caller, job_id, stored, mime=mime, name=name,
        delivery=delivery)
    if duplicate:
        return JSON(upload_answer(job.status(), error=ALREADY_EXISTS,
                                  message=ALREADY_EXISTS_MESSAGE)), ALREADY_EXISTS, 0
    log.info("upload accepted", extra={**extra, "bytes": stored.size, "mode": caller.mode})
    await ctx.executor.submit(job)
    return JSON(upload_answer(job.status())), "accepted", stored.size


@dataclass(frozen=True)
class Delivery:
    """Where the processed MP4 goes in Bluesky mode (the user's PDS) and how the token is
    kept; both None in seed mode."""

    pds_url: str | None = None
    cipher: TokenCipher | None = None


async def delivery_for(ctx: AppContext, caller: Caller) -> Delivery:
    """Check, before anything is stored, that a Bluesky-mode caller's PDS may be used."""
    if caller.mode != "pds":
        return Delivery()
    extra = {"did": caller.did}
    pds_url = caller.document.pds_endpoint
    assert pds_url is not None  # the verifier checked the audience against it
    try:
        await check_endpoint(pds_url, allow_private=ctx.cfg.service.allow_private_endpoints)
    except UnsafeEndpoint as exc:
        log.info("refused PDS endpoint", extra={**extra, "reason": str(exc)})
        raise InvalidRequest(
            f"the PDS in your DID document cannot be used for video uploads: {exc}"
        ) from None
    try:
        cipher = cipher_for(ctx.cfg)
    except ConfigError as exc:
        log.error("cannot keep upload tokens: %s", exc, extra=extra)
        raise NotEnoughResources("uploads for Bluesky are not configured") from None
    return Delivery(pds_url, cipher)


async def commit_job(
    ctx: AppContext,
    caller: Caller,
    job_id: str,
    stored: StoredUpload,
    *,
    mime: str,
    name: str | None,
    delivery: Delivery,
) -> tuple[Job, bool]:
    """Create the job for stored bytes (converting the reservation ``job_id``), or find the
    DID's live job for the same bytes: (that job, True), the stored copy removed. The token
    kept for delivery is the caller's. A refusal removes what was stored."""
    cipher = delivery.cipher
    new = NewJob(
        id=job_id,
        did=caller.did,
        source_size=stored.size,
        content_hash=stored.sha256_hex,
        mime_type=mime[:255],
        upload_name=(name or "")[:255] or None,
        executor=ctx.cfg.service.executor,
        pds_url=delivery.pds_url,
        upload_token=cipher.encrypt(caller.token, job_id=job_id) if cipher else None,
        token_expires_at=dt.datetime.fromtimestamp(caller.exp, dt.UTC) if cipher else None,
    )
    async with _dedup_locks.hold((caller.did, stored.sha256_hex)):
        try:
            duplicate = await asyncio.to_thread(
                ctx.store.find_duplicate, caller.did, stored.sha256_hex)
        except BaseException:  # the database went away after the bytes were stored
            await remove_job(ctx.storage, job_id)
            raise
        if duplicate is not None:
            await remove_job(ctx.storage, job_id)
            log.info("duplicate upload", extra={"did": caller.did, "job_id": duplicate.id})
            return duplicate, True
        try:
            job = await asyncio.to_thread(ctx.store.create, new, ctx.quota, reservation=job_id)
        except DuplicateUpload:
            # Another replica created the job between our check and insert.
            await remove_job(ctx.storage, job_id)
            duplicate = await asyncio.to_thread(
                ctx.store.find_duplicate, caller.did, stored.sha256_hex
            )
            if duplicate is None:  # it failed in between: rare; let the client retry
                raise NotEnoughResources("a concurrent upload of this video failed") from None
            return duplicate, True
        except QuotaExceeded as exc:
            await remove_job(ctx.storage, job_id)
            raise _quota_error(exc.message) from None
        except Exception as exc:
            if not db_unavailable(exc):
                await remove_job(ctx.storage, job_id)
                raise
            _settle_when_back(ctx, job_id, caller.did)
            raise
        except BaseException:
            await remove_job(ctx.storage, job_id)
            raise
    return job, False


def _settle_when_back(ctx: AppContext, job_id: str, did: str) -> None:
    """The insert failed with the database unreachable, but it may have committed before the
    connection dropped (a lost acknowledgement): once the database answers, run the job if
    its row exists, else remove its bytes. Until then the bytes stay."""
    extra = {"job_id": job_id, "did": did}

    async def settle() -> None:
        job = await retry_while_unavailable(lambda: ctx.store.get(job_id),
                                            what="checking an interrupted upload", extra=extra)
        if job is None:
            await remove_job(ctx.storage, job_id)
        else:
            log.info("upload committed despite the outage; running it", extra=extra)
            await ctx.executor.submit(job)

    _in_background(settle(), f"db-settle-{job_id}")


def _quota_error(message: str) -> RateLimitExceeded:
    # social-app matches the `error` string itself, so it carries the sentence (SPEC section 1).
    return RateLimitExceeded(message, name=message)
