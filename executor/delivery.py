"""After encoding: blob ref, scan, (Bluesky mode) upload to the user's PDS, then COMPLETED.

Both the in-process executor and the operator call :func:`deliver` once the outputs exist, so
the states after ENCODED are the same whichever way the encoding ran.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from atproto_video.blob import blob_cid, blob_for_file
from atproto_video.jobs import Job, JobStore
from atproto_video.lexicon import FailureCode, JobState

log = logging.getLogger(__name__)

# A scan step gets the MP4 and returns None to pass or a reason to refuse.
Scanner = Callable[[Path], Awaitable[str | None]]


async def pass_scan(_path: Path) -> str | None:
    """The default scanner: lets everything through (the states still appear)."""
    return None


async def deliver(
    store: JobStore,
    job: Job,
    out_dir: Path,
    *,
    scanner: Scanner = pass_scan,
) -> bool:
    """Finish an encoded job; returns True when it reached COMPLETED."""
    extra = {"job_id": job.id, "did": job.did}
    mp4 = out_dir / "video.mp4"
    await asyncio.to_thread(store.advance, job.id, JobState.ENCODED, 100)
    blob = await asyncio.to_thread(blob_for_file, mp4)
    cid = blob_cid(blob)
    await asyncio.to_thread(store.update_fields, job.id, cid=cid)

    await asyncio.to_thread(store.advance, job.id, JobState.SCANNING, 0)
    refused = await scanner(mp4)
    if refused is not None:
        await asyncio.to_thread(store.fail, job.id, FailureCode.VALIDATION, refused)
        log.info("scan refused the video", extra={**extra, "reason": refused})
        return False
    await asyncio.to_thread(store.advance, job.id, JobState.SCANNED, 100)

    completed = await asyncio.to_thread(
        store.complete, job.id, blob=blob, cid=cid, output_size=int(blob["size"])
    )
    if completed:
        log.info("job completed", extra={**extra, "cid": cid})
    return completed
