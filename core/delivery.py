"""After encoding: blob ref, scan, (Bluesky mode) upload to the user's PDS, then COMPLETED.

Both the in-process executor and the operator call :func:`deliver` once the outputs exist, so
the states after ENCODED are the same whichever way the encoding ran:
ENCODED -> SCANNING -> SCANNED -> [UPLOADING -> UPLOADED] -> COMPLETED, or FAILED.

A job uploaded with a Bluesky-mode token (``pds_url`` set) ends with the blob ref the user's
PDS returned from uploadBlob, after checking it names the same CID as the MP4 we made; a
seed-mode job ends with the locally computed ref.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from atproto_video.core import metrics, servicetoken
from atproto_video.core.blob import blob_cid, blob_for_file
from atproto_video.core.config import ConfigError, VideoConfig
from atproto_video.core.jobs import Job, JobStore
from atproto_video.core.lexicon import FailureCode, JobState
from atproto_video.core.pds import PdsUploadError, RetryPolicy, upload_blob
from atproto_video.core.tokens import TokenDecryptError, cipher_for

log = logging.getLogger(__name__)

# A scan step gets the MP4 and returns None to pass or a reason to refuse.
Scanner = Callable[[Path], Awaitable[str | None]]
_PROGRESS_INTERVAL_S = 0.25


async def pass_scan(_path: Path) -> str | None:
    """The default scanner: lets everything through (the states still appear)."""
    return None


def load_scanner(spec: str) -> Scanner:
    """``VIDEO_SCAN_HOOK=package.module:callable``: an async callable (Path) -> reason | None."""
    if not spec:
        return pass_scan
    module, _, name = spec.partition(":")
    try:
        hook = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"VIDEO_SCAN_HOOK: cannot load {spec!r}: {exc}") from None
    if not callable(hook):
        raise ConfigError(f"VIDEO_SCAN_HOOK: {spec!r} is not callable")
    return cast(Scanner, hook)


async def deliver(
    store: JobStore,
    job: Job,
    mp4: Path,
    *,
    cfg: VideoConfig,
    scanner: Scanner | None = None,
    retry: RetryPolicy | None = None,
) -> bool:
    """Finish an encoded job whose processed MP4 is at ``mp4``; True when it reached COMPLETED.

    ``cfg`` supplies the scan hook, the token key and the PDS upload settings: every caller
    passes its own (the operator's scan hook was once silently skipped when it did not).
    """
    extra = {"job_id": job.id, "did": job.did}
    await asyncio.to_thread(store.advance, job.id, JobState.ENCODED, 100)
    local_blob = await asyncio.to_thread(blob_for_file, mp4)
    cid = blob_cid(local_blob)
    await asyncio.to_thread(store.update_fields, job.id, cid=cid)

    await asyncio.to_thread(store.advance, job.id, JobState.SCANNING, 0)
    try:
        scan = scanner or load_scanner(cfg.pds.scan_hook)
    except ConfigError as exc:
        log.error("scan hook unusable: %s", exc, extra=extra)
        await asyncio.to_thread(store.fail, job.id, FailureCode.GENERIC, "the scan step failed")
        return False
    refused = await scan(mp4)
    if refused is not None:
        await asyncio.to_thread(store.fail, job.id, FailureCode.VALIDATION, refused)
        log.info("scan refused the video", extra={**extra, "reason": refused})
        return False
    await asyncio.to_thread(store.advance, job.id, JobState.SCANNED, 100)

    current = await asyncio.to_thread(store.get, job.id)
    if current is None or current.state.terminal:
        return False
    blob = local_blob
    if current.pds_url is not None:
        uploaded = await _upload_to_pds(store, current, mp4, cid, cfg, retry, extra)
        if uploaded is None:
            return False
        blob = uploaded
        await asyncio.to_thread(store.advance, job.id, JobState.UPLOADED, 100)

    completed = await asyncio.to_thread(
        store.complete, job.id, blob=blob, cid=cid, output_size=int(local_blob["size"])
    )
    if completed:
        log.info("job completed", extra={**extra, "cid": cid})
    return completed


async def _upload_to_pds(
    store: JobStore,
    job: Job,
    mp4: Path,
    cid: str,
    cfg: VideoConfig,
    retry: RetryPolicy | None,
    extra: dict[str, str],
) -> dict[str, Any] | None:
    """UPLOADING: the MP4 to the user's PDS; the PDS's blob, or None once the job failed."""

    async def fail(code: FailureCode, error: str) -> None:
        log.info("PDS upload failed", extra={**extra, "failure_code": code.value, "error": error})
        await asyncio.to_thread(store.fail, job.id, code, error)

    assert job.pds_url is not None
    if job.upload_token is None:
        await fail(FailureCode.PDS_UPLOAD, "the upload token is no longer available")
        return None
    try:
        token = cipher_for(cfg).decrypt(job.upload_token, job_id=job.id)
    except ConfigError as exc:
        log.error("cannot read upload tokens: %s", exc, extra=extra)
        await fail(FailureCode.PDS_UPLOAD, "the service cannot read the upload token")
        return None
    except TokenDecryptError as exc:
        await fail(FailureCode.PDS_UPLOAD, str(exc))
        return None
    if job.token_expires_at:
        deadline = job.token_expires_at.timestamp()
    else:  # rows written without token_expires_at: the token's own exp (0: already over)
        deadline = servicetoken.expiry(token) or 0.0
    policy = retry or RetryPolicy(timeout_s=cfg.pds.timeout_s, max_s=cfg.pds.retry_max_s)

    await asyncio.to_thread(store.advance, job.id, JobState.UPLOADING, 0)
    last = {"pct": 0, "at": 0.0}

    async def progress(sent: int, total: int) -> None:
        pct = min(99, sent * 100 // max(1, total))
        now = time.monotonic()
        if pct > last["pct"] and now - last["at"] >= _PROGRESS_INTERVAL_S:
            last["pct"], last["at"] = pct, now
            await asyncio.to_thread(store.advance, job.id, JobState.UPLOADING, pct)

    def retrying(reason: str, delay: float) -> None:
        metrics.PDS_UPLOAD_RETRIES.inc()
        log.warning(
            "PDS upload attempt failed; retrying",
            extra={**extra, "reason": reason, "retry_in_s": round(delay, 2)},
        )

    try:
        blob = await upload_blob(
            job.pds_url,
            token,
            mp4,
            deadline=deadline,
            allow_private=cfg.service.allow_private_endpoints,
            policy=policy,
            on_progress=progress,
            on_retry=retrying,
        )
    except PdsUploadError as exc:
        await fail(exc.failure_code, exc.message)
        return None
    got = blob_cid(blob)
    if got != cid:
        await fail(
            FailureCode.PDS_UPLOAD,
            f"the PDS stored the video as {got}, but the processed MP4 is {cid}",
        )
        return None
    await asyncio.to_thread(store.advance, job.id, JobState.UPLOADING, 100)
    log.info("uploaded to the PDS", extra={**extra, "cid": cid, "size": blob.get("size")})
    return blob
