"""app.bsky.video.uploadVideo: authenticate, check quota, stream to storage, create the job."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from atproto_video.api.context import AppContext
from atproto_video.api.errors import (
    AuthRequired,
    InvalidRequest,
    PayloadTooLarge,
    RateLimitExceeded,
)
from atproto_video.jobs import NewJob, QuotaExceeded, new_job_id
from atproto_video.lexicon import (
    ALREADY_EXISTS,
    ALREADY_EXISTS_MESSAGE,
    NSID_UPLOAD_VIDEO,
    QUOTA_BYTES_EXCEEDED,
    JobStatus,
)
from atproto_video.storage import EmptyUpload, UploadTooLarge

log = logging.getLogger(__name__)


def upload_answer(status: JobStatus, **extra: str) -> dict[str, object]:
    """Production answers with the bare job status; lexicon clients read ``jobStatus``."""
    return {**status, **extra, "jobStatus": status}


async def handle_upload(request: Request, ctx: AppContext) -> Response:
    caller = await ctx.verifier.verify(request.headers.get("authorization"), NSID_UPLOAD_VIDEO)
    did_param = request.query_params.get("did")
    if did_param is not None and did_param != caller.did:
        raise AuthRequired("the did parameter does not match the token issuer", name="BadJwtIss")
    extra = {"did": caller.did}

    max_bytes = ctx.cfg.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidRequest("invalid Content-Length")
        if int(length) > max_bytes:
            raise PayloadTooLarge(f"request entity too large: at most {max_bytes} bytes")
        if int(length) == 0:
            raise InvalidRequest("the request body is empty: send the video file")

    limits = await ctx.upload_limits(caller.did)
    if not limits["canUpload"]:
        raise _quota_error(limits.get("error") or QUOTA_BYTES_EXCEEDED)
    if length is not None and int(length) > limits.get("remainingDailyBytes", 0):
        raise _quota_error(QUOTA_BYTES_EXCEEDED)

    job_id = new_job_id()
    mime = (request.headers.get("content-type") or "application/octet-stream").split(";")[0].strip()
    try:
        stored = await ctx.storage.receive(job_id, request.stream(), max_bytes)
    except UploadTooLarge:
        raise PayloadTooLarge(f"request entity too large: at most {max_bytes} bytes") from None
    except EmptyUpload:
        raise InvalidRequest("the request body is empty: send the video file") from None

    duplicate = await asyncio.to_thread(ctx.store.find_duplicate, caller.did, stored.sha256_hex)
    if duplicate is not None:
        ctx.storage.remove(job_id)
        log.info("duplicate upload", extra={**extra, "job_id": duplicate.id})
        return JSONResponse(
            upload_answer(duplicate.status(), error=ALREADY_EXISTS, message=ALREADY_EXISTS_MESSAGE)
        )

    new = NewJob(
        id=job_id,
        did=caller.did,
        source_size=stored.size,
        content_hash=stored.sha256_hex,
        mime_type=mime[:255],
        upload_name=(request.query_params.get("name") or "")[:255] or None,
        executor=ctx.cfg.executor,
    )
    try:
        job = await asyncio.to_thread(ctx.store.create, new, ctx.quota)
    except QuotaExceeded as exc:
        ctx.storage.remove(job_id)
        raise _quota_error(exc.message) from None
    except BaseException:
        ctx.storage.remove(job_id)
        raise
    log.info("upload accepted", extra={**extra, "job_id": job.id, "bytes": stored.size})
    await ctx.executor.submit(job)
    return JSONResponse(upload_answer(job.status()))


def _quota_error(message: str) -> RateLimitExceeded:
    # social-app matches the `error` string itself, so it carries the sentence (SPEC section 1).
    return RateLimitExceeded(message, name=message)
