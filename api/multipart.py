"""The multipart upload protocol: startUpload, uploadPart, finishUpload, getUploadStatus,
abortUpload (lexicons app.bsky.video.*; the Bluesky app uses it for files from 16 MiB).

startUpload reserves one video and the exact declared size (core/quota.py) before any part is
stored; parts are idempotent and their lengths exact; finishUpload joins them (a rename
locally, CompleteMultipartUpload on S3), takes the content hash kept while the parts arrived
(core/parthash.py) and commits the job exactly as uploadVideo does, deduplication included.
The token given to finishUpload is the one kept for delivery to the PDS (Bluesky mode).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re

from starlette.requests import Request

from atproto_video.api.auth import Caller
from atproto_video.api.context import AppContext
from atproto_video.api.errors import STORAGE_FULL_MESSAGE, XrpcError, storage_full
from atproto_video.api.models import (
    AbortUploadInput,
    AbortUploadOutput,
    FinishUploadInput,
    FinishUploadOutput,
    GetUploadStatusOutput,
    GetUploadStatusParams,
    JobStatusDef,
    StartUploadInput,
    StartUploadOutput,
    UploadPartOutput,
    UploadPartParams,
)
from atproto_video.api.upload import (
    Delivery,
    commit_job,
    delivery_for,
    release_reservation,
    write_when_back,
)
from atproto_video.core.dbfaults import db_unavailable, disk_or_database_full
from atproto_video.core.jobs import Job, new_job_id, utcnow
from atproto_video.core.lexicon import (
    NSID_GET_UPLOAD_STATUS,
    NSID_UPLOAD_PART,
    QUOTA_VIDEOS_EXCEEDED,
)
from atproto_video.core.quota import MULTIPART, QuotaExceeded, TooManyOpenUploads
from atproto_video.core.sessions import (
    PART_SIZE,
    SessionState,
    UploadSession,
    expected_part_size,
    part_count,
)
from atproto_video.core.storage import StorageUnavailable, StoredUpload, remove_job, shielded
from atproto_video.transcoder.formats import demuxer_for_magic

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: Declared types worth starting an upload for; the content decides in the end.
_MIME = re.compile(r"^(video/[A-Za-z0-9.+-]+|image/gif|application/octet-stream)$")
#: Declared aspect ratios beyond this are refused early (BadAspectRatio).
_MAX_ASPECT = 16
_SNIFF_BYTES = 1024


def _error(name: str, message: str, status: int = 400) -> XrpcError:
    return XrpcError(message, name=name, status=status)


def _overloaded(message: str = "video storage is unavailable; try again shortly") -> XrpcError:
    return XrpcError(message, name="ServiceOverloaded", status=503,
                     headers={"retry-after": "5"})


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _caller(request: Request, ctx: AppContext, nsid: str) -> Caller:
    """The uploadVideo token kinds: seed mode (lxm = this method) or the app's PDS token."""
    return await ctx.verifier.verify(
        request.headers.get("authorization"), nsid, allow_pds_audience=True)


async def _session(ctx: AppContext, caller: Caller, job_id: str) -> UploadSession:
    """The caller's session, settled: one past ``expiresAt`` is expired on the way."""
    if len(job_id) > 256 or not _JOB_ID.match(job_id):
        raise _error("UploadNotFound", "upload not found", 404)
    session = await asyncio.to_thread(ctx.sessions.get, job_id)
    if session is None or session.did != caller.did:
        raise _error("UploadNotFound", "upload not found", 404)
    if session.expired_at(utcnow()):
        await expire_session(ctx, session)
        session = await asyncio.to_thread(ctx.sessions.get, job_id)
        assert session is not None
    return session


async def expire_session(ctx: AppContext, session: UploadSession) -> None:
    if await asyncio.to_thread(ctx.sessions.transition, session.id, [SessionState.CREATED],
                               SessionState.EXPIRED, release_quota=True):
        log.info("upload expired", extra={"job_id": session.id, "did": session.did})
        ctx.hashes.drop(session.id)
        await shielded(asyncio.to_thread(ctx.storage.abort_parts, session.id,
                                         session.storage_ref or ""))


def _state_error(session: UploadSession) -> XrpcError:
    """The error for a session that is no longer taking parts or a finish."""
    match session.state:
        case SessionState.FINISHING:
            return _error("UploadNotReady", "a finish is in progress; check getUploadStatus")
        case SessionState.FAILED:
            return _error("UploadFailed", session.failure_reason or "the upload failed")
        case SessionState.ABORTED:
            return _error("UploadAborted", "the upload was aborted")
        case SessionState.EXPIRED:
            return _error("UploadExpired", "the upload expired before it was finished")
        case SessionState.COMPLETED:
            return _error("UploadAlreadyCompleted", "the upload is already completed")
    return _error("UploadNotReady", "the upload is not ready")


# -- startUpload ------------------------------------------------------------------------------


async def start_upload(
    ctx: AppContext, caller: Caller, body: StartUploadInput
) -> StartUploadOutput:
    """The body is valid per the lexicon (FastAPI checked it); the rest are this service's
    limits."""
    size, mime, name = body.sizeBytes, body.mimeType, body.name
    duration_ms, width, height = body.durationMs, body.width, body.height

    svc = ctx.cfg.service
    if not _MIME.match(mime.split(";")[0].strip().lower()):
        raise _error("UnsupportedContentType", f"{mime} is not a supported video type")
    if size > svc.max_upload_bytes:
        raise _error("VideoTooLarge", f"the video is larger than {svc.max_upload_bytes} bytes")
    max_ms = ctx.cfg.transcode.max_duration_s * 1000
    if duration_ms is not None and duration_ms > max_ms:
        raise _error("VideoTooLong", f"the video is longer than {max_ms // 1000} seconds")
    if width is not None and height is not None and (
        width <= 0 or height <= 0 or max(width, height) > _MAX_ASPECT * min(width, height)
    ):
        raise _error("BadAspectRatio", f"{width}x{height} is not a supported aspect ratio")

    job_id = new_job_id()
    extra = {"job_id": job_id, "did": caller.did}
    if not await asyncio.to_thread(ctx.storage.room_for, size):
        log.warning("storage full: upload refused at startUpload", extra={**extra, "bytes": size})
        raise storage_full()
    expires_at = utcnow() + dt.timedelta(seconds=svc.upload_session_ttl_s)
    quota = ctx.quota
    try:
        await asyncio.to_thread(ctx.ledger.reserve, job_id, caller.did, size, quota,
                                kind=MULTIPART, expires_at=expires_at)
    except QuotaExceeded as exc:
        _, left = await asyncio.to_thread(ctx.ledger.remaining, caller.did, quota,
                                          utcnow().date())
        if exc.message != QUOTA_VIDEOS_EXCEEDED and left > 0:
            raise _error("VideoTooLarge", f"the video is larger than the {left} bytes left "
                                          "of today's allowance") from None
        raise _error("DailyLimitExceeded", exc.message, 429) from None
    except TooManyOpenUploads:
        raise _error("TooManyOpenUploads", f"at most {quota.open_uploads} uploads may be open "
                                           "at once", 429) from None
    try:
        ref = await asyncio.to_thread(ctx.storage.start_parts, job_id, size)
        try:
            await asyncio.to_thread(ctx.sessions.create, UploadSession(
                id=job_id, did=caller.did, state=SessionState.CREATED, size_bytes=size,
                part_size=PART_SIZE, part_count=part_count(size), expires_at=expires_at,
                mime_type=mime[:255], upload_name=name, storage_ref=ref))
        except BaseException:
            await shielded(asyncio.to_thread(ctx.storage.abort_parts, job_id, ref))
            raise
    except BaseException as exc:
        await shielded(release_reservation(ctx, job_id, caller.did))
        if isinstance(exc, StorageUnavailable):
            log.warning("storage unavailable at startUpload", extra=extra)
            raise _overloaded() from None
        if disk_or_database_full(exc):
            log.warning("storage full at startUpload", extra=extra)
            raise storage_full() from None
        raise
    log.info("upload started", extra={**extra, "bytes": size, "mode": caller.mode})
    return StartUploadOutput(jobId=job_id, partSizeBytes=PART_SIZE,
                             partCount=part_count(size), expiresAt=_iso(expires_at))


# -- uploadPart -------------------------------------------------------------------------------


#: Parts are kept as blocks of about this size: one 8 MiB join cost page faults per part.
_BLOCK = 1 << 20
#: Up to this many body chunks make a block as they came (no copy: the HTTP protocol hands
#: them over uncopied, up to 1 MiB each); more, smaller ones are joined.
_KEEP = 8


async def _read_exact(request: Request, expected: int) -> list[bytes] | None:
    """The body as blocks of about 1 MiB or less if it is exactly ``expected`` bytes long,
    else None."""
    blocks: list[bytes] = []
    pending: list[bytes] = []
    pending_len = filled = 0
    async for chunk in request.stream():
        filled += len(chunk)
        if filled > expected:
            return None
        if not chunk:
            continue
        pending.append(chunk)
        pending_len += len(chunk)
        if pending_len >= _BLOCK:
            if len(pending) <= _KEEP:
                blocks += pending
            else:
                blocks.append(b"".join(pending))
            pending = []
            pending_len = 0
    if pending:
        blocks.append(b"".join(pending))
    return blocks if filled == expected else None


async def upload_part(
    request: Request, ctx: AppContext, params: UploadPartParams
) -> UploadPartOutput:
    """The part streams from ``request`` (FastAPI never reads it): at most one part in memory."""
    caller = await _caller(request, ctx, NSID_UPLOAD_PART)
    job_id, number = params.jobId, params.partNumber
    session = await _session(ctx, caller, job_id)
    if session.state is not SessionState.CREATED:
        raise _state_error(session)
    if number > session.part_count:
        raise _error("InvalidPartNumber",
                     f"part {number} is outside 1..{session.part_count} for this upload")
    expected = expected_part_size(session.size_bytes, session.part_size, number)
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) != expected:
        raise _error("PartSizeMismatch",
                     f"part {number} must be exactly {expected} bytes (Content-Length)")
    body = await _read_exact(request, expected)
    if body is None:
        raise _error("PartSizeMismatch", f"part {number} must be exactly {expected} bytes")
    offset = (number - 1) * session.part_size
    try:
        tag = await asyncio.to_thread(ctx.storage.put_part, job_id, session.storage_ref or "",
                                      number, offset, body)
    except StorageUnavailable:
        raise _overloaded() from None
    except Exception as exc:
        if disk_or_database_full(exc):
            await _end_for_space(ctx, session)
            raise storage_full(f"{STORAGE_FULL_MESSAGE}: this upload was ended, start it "
                               "again") from None
        # Aborted, expired or finished while the part was on its way: say which.
        now = await asyncio.to_thread(ctx.sessions.get, job_id)
        if now is not None and now.state is not SessionState.CREATED:
            raise _state_error(now) from None
        raise
    if not await asyncio.to_thread(ctx.sessions.record_part, job_id, number, expected, tag):
        session = await _session(ctx, caller, job_id)
        raise _state_error(session)
    ctx.hashes.submit(job_id, number, body, tag)
    return UploadPartOutput(partNumber=number, sizeBytes=expected)


async def _end_for_space(ctx: AppContext, session: UploadSession) -> None:
    """A part did not fit: end the session (failed, quota released, parts removed) rather
    than hold a half-written file on a full volume until the session expires."""
    extra = {"job_id": session.id, "did": session.did}
    if await asyncio.to_thread(ctx.sessions.transition, session.id, [SessionState.CREATED],
                               SessionState.FAILED, release_quota=True,
                               failure_reason=STORAGE_FULL_MESSAGE):
        ctx.hashes.drop(session.id)
        await shielded(asyncio.to_thread(ctx.storage.abort_parts, session.id,
                                         session.storage_ref or ""))
        log.warning("storage full: upload ended at uploadPart", extra=extra)


# -- finishUpload -----------------------------------------------------------------------------


async def _job_status(ctx: AppContext, job_id: str) -> JobStatusDef:
    return JobStatusDef.model_validate(await ctx.job_status(job_id))


async def _completed(ctx: AppContext, session: UploadSession) -> FinishUploadOutput:
    job_id = session.completed_job_id or session.id
    return FinishUploadOutput(completedJobId=job_id, jobStatus=await _job_status(ctx, job_id))


async def finish_upload(
    ctx: AppContext, caller: Caller, body: FinishUploadInput
) -> FinishUploadOutput:
    job_id = body.jobId
    session = await _session(ctx, caller, job_id)
    if session.state is SessionState.COMPLETED:
        return await _completed(ctx, session)
    if session.state is not SessionState.CREATED:
        raise _state_error(session)
    parts = await asyncio.to_thread(ctx.sessions.parts, job_id)
    missing = [n for n in range(1, session.part_count + 1) if n not in parts]
    if missing:
        shown = ", ".join(map(str, missing[:100])) + (", ..." if len(missing) > 100 else "")
        raise _error("MissingParts", f"missing parts: {shown}")
    delivery = await delivery_for(ctx, caller)  # refusals leave the session open
    if not await asyncio.to_thread(ctx.sessions.transition, job_id, [SessionState.CREATED],
                                   SessionState.FINISHING):
        session = await _session(ctx, caller, job_id)
        if session.state is SessionState.COMPLETED:
            return await _completed(ctx, session)
        raise _state_error(session)
    extra = {"job_id": job_id, "did": caller.did}
    try:
        job, duplicate = await _assemble_and_commit(ctx, caller, session, parts, delivery)
    except StorageUnavailable:
        # Nothing is lost: back to created, the client retries the finish.
        await asyncio.to_thread(ctx.sessions.transition, job_id, [SessionState.FINISHING],
                                SessionState.CREATED)
        log.warning("storage unavailable at finishUpload", extra=extra)
        raise _overloaded() from None
    except asyncio.CancelledError:
        # Stopped mid-finish (shutdown): nothing is wrong with the upload.
        await shielded(_interrupted(ctx, session))
        raise
    except BaseException as exc:
        reason = exc.message if isinstance(exc, XrpcError) else "the upload could not be finished"
        if disk_or_database_full(exc):
            reason = STORAGE_FULL_MESSAGE
        # Stored bytes go first: with the database down the transition below fails too; it
        # is then written (and the quota released) as soon as the database is back. An
        # outage may have hidden a committed job (lost acknowledgement): commit_job keeps
        # the bytes until it knows, and the session follows what the database says.
        outage = isinstance(exc, Exception) and db_unavailable(exc)
        ctx.hashes.drop(job_id)
        if not outage:
            await remove_job(ctx.storage, job_id)

        def failed() -> None:
            if outage and ctx.store.get(job_id) is not None:
                ctx.sessions.transition(job_id, [SessionState.FINISHING],
                                        SessionState.COMPLETED, completed_job_id=job_id)
                return
            ctx.sessions.transition(job_id, [SessionState.FINISHING], SessionState.FAILED,
                                    release_quota=True, failure_reason=reason[:1024])

        try:
            await shielded(asyncio.to_thread(failed))
        except Exception as unwritten:
            if not db_unavailable(unwritten):
                raise
            write_when_back(failed, what="failing an upload session", extra=extra)
        if isinstance(exc, Exception) and db_unavailable(exc):
            log.warning("finishUpload failed: the database is unavailable", extra=extra)
        elif not isinstance(exc, XrpcError):
            log.exception("finishUpload failed", extra=extra)
        raise
    ctx.hashes.drop(job_id)
    if duplicate:
        await release_reservation(ctx, job_id, caller.did)  # no quota spent on a duplicate
        log.info("duplicate upload", extra={**extra, "completed_job_id": job.id})
    else:
        log.info("upload accepted", extra={**extra, "bytes": session.size_bytes,
                                           "mode": caller.mode, "protocol": "multipart"})
        await ctx.executor.submit(job)  # committed: it runs whatever happens to the session

    def completed() -> None:
        ctx.sessions.transition(job_id, [SessionState.FINISHING], SessionState.COMPLETED,
                                completed_job_id=job.id)

    try:
        await asyncio.to_thread(completed)
    except Exception as exc:
        if not db_unavailable(exc):
            raise
        write_when_back(completed, what="completing an upload session", extra=extra)
        raise  # 503: a retried finish answers completed once the session is written
    return FinishUploadOutput(completedJobId=job.id, jobStatus=await _job_status(ctx, job.id))


async def _interrupted(ctx: AppContext, session: UploadSession) -> None:
    """A finish cut off: completed if its job was committed (the executor picks committed jobs
    up at its next start, the operator's reconciler creates missing VideoJobs), else open for
    another finish."""
    job = await asyncio.to_thread(ctx.store.get, session.id)
    if job is not None:
        await asyncio.to_thread(ctx.sessions.transition, session.id, [SessionState.FINISHING],
                                SessionState.COMPLETED, completed_job_id=job.id)
    else:
        await asyncio.to_thread(ctx.sessions.transition, session.id, [SessionState.FINISHING],
                                SessionState.CREATED)


async def _assemble_and_commit(
    ctx: AppContext, caller: Caller, session: UploadSession, parts: dict[int, str],
    delivery: Delivery,
) -> tuple[Job, bool]:
    job_id = session.id
    await asyncio.to_thread(ctx.storage.finish_parts, job_id, session.storage_ref or "", parts)
    head = await asyncio.to_thread(ctx.storage.source_head, job_id, _SNIFF_BYTES)
    if demuxer_for_magic(head) is None:
        raise _error("UnsupportedContentType",
                     "the uploaded file is not a supported video container")
    digest = await asyncio.to_thread(ctx.hashes.digest, job_id, parts)
    if digest is None:  # parts went elsewhere or came back: read the file in order
        digest = await asyncio.to_thread(ctx.storage.source_digest, job_id)
    stored = StoredUpload(size=session.size_bytes, sha256_hex=digest)
    return await commit_job(ctx, caller, job_id, stored, mime=session.mime_type or "",
                            name=session.upload_name, delivery=delivery)


# -- getUploadStatus and abortUpload ----------------------------------------------------------


async def get_upload_status(
    request: Request, ctx: AppContext, params: GetUploadStatusParams
) -> GetUploadStatusOutput:
    caller = await _caller(request, ctx, NSID_GET_UPLOAD_STATUS)
    session = await _session(ctx, caller, params.jobId)
    parts = await asyncio.to_thread(ctx.sessions.parts, session.id)
    out = GetUploadStatusOutput(
        jobId=session.id, partSizeBytes=session.part_size, partCount=session.part_count,
        receivedParts=sorted(parts), expiresAt=_iso(session.expires_at),
        state=session.state.value,
    )
    if session.state is SessionState.COMPLETED:
        out.completedJobId = session.completed_job_id or session.id
        out.jobStatus = await _job_status(ctx, out.completedJobId)
    if session.state is SessionState.FAILED:
        out.failureReason = session.failure_reason or "the upload failed"
    return out


def _outcome(session: UploadSession) -> AbortUploadOutput:
    out = AbortUploadOutput(state=session.state.value)
    if session.state is SessionState.COMPLETED:
        out.completedJobId = session.completed_job_id or session.id
    if session.state is SessionState.FAILED:
        out.failureReason = session.failure_reason or "the upload failed"
    return out


async def abort_upload(
    ctx: AppContext, caller: Caller, body: AbortUploadInput
) -> AbortUploadOutput:
    job_id = body.jobId
    session = await _session(ctx, caller, job_id)
    if session.state is SessionState.CREATED and await asyncio.to_thread(
        ctx.sessions.transition, job_id, [SessionState.CREATED], SessionState.ABORTED,
        release_quota=True,
    ):
        ctx.hashes.drop(job_id)
        await shielded(asyncio.to_thread(ctx.storage.abort_parts, job_id,
                                         session.storage_ref or ""))
        log.info("upload aborted", extra={"job_id": job_id, "did": caller.did})
        return AbortUploadOutput(state=SessionState.ABORTED.value)
    session = await _session(ctx, caller, job_id)
    if session.state is SessionState.FINISHING:
        raise _state_error(session)
    return _outcome(session)
