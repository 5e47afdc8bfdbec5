"""The embedded executor: runs the transcoder in this process, a few jobs at a time.

Jobs are taken from the database, not only from memory, so a restart resumes whatever was in
progress (or fails it cleanly after too many interrupted attempts): no job stays in progress.
A database outage is waited out: encoders keep running (progress is best effort), each state
change is retried with bounded backoff and written once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from atproto_video.core import metrics
from atproto_video.core.config import VideoConfig
from atproto_video.core.dbfaults import (
    backoff_delays,
    db_unavailable,
    disk_or_database_full,
    retry_while_unavailable,
)
from atproto_video.core.delivery import deliver
from atproto_video.core.details import JobDetails, Outcome, RenditionStatus
from atproto_video.core.jobs import Job, JobStore
from atproto_video.core.ladder import Variant
from atproto_video.core.lexicon import STATE_ORDER, FailureCode, JobState
from atproto_video.core.storage import Storage, StorageUnavailable, Workspace, local_output
from atproto_video.transcoder import encoding
from atproto_video.transcoder.errors import OutOfSpace, TranscodeError
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import TranscodeResult, transcode
from atproto_video.transcoder.plan import summary

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_ATTEMPTS = 3
_PROGRESS_INTERVAL_S = 0.25


class Interrupted(BaseException):
    """Raised inside the transcoder's progress callback to stop ffmpeg at shutdown.

    A BaseException so that no ``except Exception`` in between swallows it; the transcoder's
    process runner kills the ffmpeg process group on the way out.
    """


class ProgressReporter:
    """Turns the transcoder's fraction callbacks into throttled, monotonic DB updates."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        state: JobState,
        cancel: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.state = state
        self.cancel = cancel
        self._last_pct = -1
        self._last_at = 0.0
        self._lock = threading.Lock()
        self._db_down = False

    def __call__(self, fraction: float) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted
        pct = max(0, min(99, int(fraction * 100)))
        now = time.monotonic()
        with self._lock:
            if pct <= self._last_pct or now - self._last_at < _PROGRESS_INTERVAL_S:
                return
            self._last_pct, self._last_at = pct, now
        try:
            self.store.advance(self.job_id, self.state, pct)
        except Exception as exc:
            # Progress is best effort: an encode must not die because the database did.
            if not db_unavailable(exc):
                raise
            if not self._db_down:
                log.warning("database unavailable; progress not recorded",
                            extra={"job_id": self.job_id})
            self._db_down = True
        else:
            self._db_down = False


class LocalExecutor:
    def __init__(self, cfg: VideoConfig, store: JobStore, storage: Storage) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self.limits = TranscodeLimits.from_settings(cfg.transcode)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._deliveries: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        for job in await asyncio.to_thread(self.store.unfinished, "local"):
            await self._resume(job)
        for i in range(self.cfg.service.processing_concurrency):
            self._workers.append(asyncio.create_task(self._worker(), name=f"video-worker-{i}"))

    async def stop(self) -> None:
        """Stop taking work; interrupted jobs stay in the database and resume at next start."""
        self._stopping = True
        tasks = [*self._workers, *self._deliveries]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()

    async def submit(self, job: Job) -> None:
        self._enqueue(job.id)

    async def idle(self) -> None:
        """Wait until the queue is drained (used by tests and benchmarks)."""
        await self._queue.join()

    def _enqueue(self, job_id: str) -> None:
        if job_id not in self._queued:
            self._queued.add(job_id)
            self._queue.put_nowait(job_id)

    async def _db(self, fn: Callable[..., T], *args: Any, job: Job | None = None,
                  what: str = "updating a job", **kwargs: Any) -> T:
        """A job store call that waits out a database outage (cancelled at shutdown)."""
        extra = {"job_id": job.id, "did": job.did} if job is not None else {}
        return await retry_while_unavailable(lambda: fn(*args, **kwargs), what=what,
                                             extra=extra)

    async def _resume(self, job: Job) -> None:
        extra = {"job_id": job.id, "did": job.did}
        if job.attempts >= MAX_ATTEMPTS:
            log.warning("job interrupted too many times; failing it", extra=extra)
            await self._db(
                self.store.fail,
                job.id,
                FailureCode.GENERIC,
                f"processing was interrupted {job.attempts} times",
                job=job,
            )
            await asyncio.to_thread(self._clean_up, job.id, completed=False)
            return
        killed = await asyncio.to_thread(kill_orphans, job.id)
        log.info("resuming job after restart", extra={**extra, "orphans_killed": killed})
        self._enqueue(job.id)

    async def _worker(self) -> None:
        while not self._stopping:
            job_id = await self._queue.get()
            try:
                await self._process(job_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code, message = FailureCode.GENERIC, "internal error while processing"
                if disk_or_database_full(exc):  # a write outside the transcoder: same reason
                    code, message = FailureCode.ENCODING, OutOfSpace.MESSAGE
                    log.warning("job failed: storage full", extra={"job_id": job_id})
                else:
                    log.exception("unexpected executor error", extra={"job_id": job_id})
                try:
                    if code is FailureCode.ENCODING:
                        await asyncio.to_thread(self._clean_up, job_id, completed=False)
                        await asyncio.to_thread(self.storage.remove_scratch, job_id)
                    await self._db(self.store.fail, job_id, code, message)
                except Exception:  # the worker must outlive any one job
                    log.exception("could not fail the job", extra={"job_id": job_id})
            finally:
                self._queued.discard(job_id)
                self._queue.task_done()

    async def _process(self, job_id: str) -> None:
        job = await self._db(self.store.get, job_id, what="reading a job")
        if job is None or job.state.terminal:
            return
        extra = {"job_id": job.id, "did": job.did}
        attempt = await self._db(self.store.start_attempt, job.id, job=job)
        log.info("processing job", extra={**extra, "attempt": attempt})
        encoded = STATE_ORDER.index(job.state) >= STATE_ORDER.index(JobState.ENCODED)
        if encoded and await asyncio.to_thread(self.storage.has_output, job.id, encoding.MP4):
            # Interrupted after encoding (e.g. while uploading to the PDS): outputs are whole.
            self._start_delivery(job, time.monotonic())
            return
        if not await asyncio.to_thread(self.storage.has_source, job.id):
            await self._db(
                self.store.fail, job.id, FailureCode.GENERIC, "the uploaded file is missing",
                job=job,
            )
            return
        try:
            workspace = await asyncio.to_thread(self.storage.stage, job.id)
        except StorageUnavailable as exc:
            await self._storage_failed(job, exc)
            return
        except OSError as exc:
            if not disk_or_database_full(exc):
                raise
            await self._transcode_failed(job, OutOfSpace(), None)
            return
        await self._db(self.store.advance, job.id, JobState.ENCODING, 0, job=job)
        started = time.monotonic()
        try:
            result = await _run_cancellable(self._transcode, job, workspace)
        except TranscodeError as exc:
            await self._transcode_failed(job, exc, workspace)
            return
        for rendition, seconds in result.target_seconds.items():
            metrics.observe_encode(rendition, seconds)
        try:
            await asyncio.to_thread(self.storage.publish, workspace)
        except StorageUnavailable as exc:
            await self._storage_failed(job, exc)
            return
        await self._db(self.store.update_details, job.id,
                       lambda details: _with_result(details, result), job=job)
        self._start_delivery(job, started)

    async def _transcode_failed(
        self, job: Job, exc: TranscodeError, workspace: Workspace | None
    ) -> None:
        """A terminal failure with its lexicon code; the outputs and the source go (on a full
        volume that is what gives the space back). A database on the full volume is waited
        for like one that is down."""
        log.info(
            "job failed",
            extra={"job_id": job.id, "did": job.did, "failure_code": exc.failure_code,
                   "error": exc.message},
        )
        # Files first: when the database shares the full volume, this is what lets it write.
        if workspace is not None:
            await asyncio.to_thread(self.storage.discard, workspace)
        else:
            await asyncio.to_thread(self.storage.remove_outputs, job.id)
        await asyncio.to_thread(self.storage.remove_scratch, job.id)
        await asyncio.to_thread(self.storage.remove_source, job.id)
        await self._db(
            self.store.fail, job.id, FailureCode(exc.failure_code), exc.message, job=job
        )

    async def _storage_failed(self, job: Job, exc: StorageUnavailable) -> None:
        """The store stayed down for the whole retry budget: end the job, tidy what we can."""
        log.warning("job failed: %s", exc, extra={"job_id": job.id, "did": job.did})
        await self._db(self.store.fail, job.id, FailureCode.GENERIC,
                       "video storage was unavailable; please upload again", job=job)
        with contextlib.suppress(StorageUnavailable):
            await asyncio.to_thread(self._clean_up, job.id, completed=False)
            await asyncio.to_thread(self.storage.remove_scratch, job.id)

    def _start_delivery(self, job: Job, started: float) -> None:
        """Scan and (Bluesky mode) PDS upload run beside the encoders, not in their slots:
        an upload may wait out a PDS outage for as long as the user's token lives."""
        task = asyncio.create_task(self._deliver(job, started), name=f"deliver-{job.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, job: Job, started: float) -> None:
        extra = {"job_id": job.id, "did": job.did}
        delays = backoff_delays()
        while True:
            try:
                async with local_output(self.storage, job.id, encoding.MP4) as mp4:
                    completed = await deliver(self.store, job, mp4, cfg=self.cfg)
                break
            except asyncio.CancelledError:
                raise  # shutting down: the job resumes (from its outputs) at the next start
            except Exception as exc:
                if not db_unavailable(exc):
                    log.exception("unexpected delivery error", extra=extra)
                    await self._db(self.store.fail, job.id, FailureCode.GENERIC,
                                   "internal error while delivering", job=job)
                    completed = False
                    break
                # Wait for the database, then deliver again from the job's recorded state
                # (each step is idempotent; the blob is computed from the same MP4).
                log.warning("database unavailable while delivering; waiting", extra=extra)
                await asyncio.sleep(delays())
                current = await self._db(self.store.get, job.id, job=job, what="delivering")
                if current is None:
                    return
                if current.state.terminal:  # the last write landed before the connection died
                    completed = current.state is JobState.COMPLETED
                    break
                job = current
        await asyncio.to_thread(self._clean_up, job.id, completed=completed)
        log.info(
            "job finished",
            extra={
                **extra,
                "completed": completed,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    def _clean_up(self, job_id: str, *, completed: bool) -> None:
        """A finished job keeps its outputs only if it completed; the source always goes."""
        self.storage.remove_source(job_id)
        if not completed:
            self.storage.remove_outputs(job_id)

    def _transcode(
        self, job: Job, workspace: Workspace, cancel: threading.Event
    ) -> TranscodeResult:
        return transcode(
            workspace.source,
            workspace.out_dir,
            self.limits,
            strategy=self.cfg.transcode.strategy,
            early=self.cfg.transcode.playable_early,
            on_progress=ProgressReporter(self.store, job.id, JobState.ENCODING, cancel),
            on_rendition=lambda variant: self._publish_early(job, workspace, variant),
        )

    def _publish_early(self, job: Job, workspace: Workspace, variant: Variant) -> None:
        """A rendition done before the others is published with a master playlist listing the
        complete ones: playable while the job is still ENCODING. Best effort: the whole
        layout is published at the end anyway, so a store outage here only delays playback."""
        try:
            self.storage.publish_rendition(workspace, variant.name)
        except StorageUnavailable as exc:
            log.warning("could not publish %s early: %s", variant.name, exc,
                        extra={"job_id": job.id, "did": job.did})
            return
        log.info("playable: %s published", variant.name,
                 extra={"job_id": job.id, "did": job.did})


def _with_result(details: JobDetails, result: TranscodeResult) -> JobDetails:
    """The same details shape the operator records, from an in-process transcode."""
    done = RenditionStatus(progress=100, outcome=Outcome.SUCCEEDED)
    return replace(
        details,
        source=summary(result.source),
        strategy=result.strategy,
        renditions={v.name: done for v in result.variants},
        encode_seconds=round(result.elapsed_s, 3),
    )


def kill_orphans(job_id: str) -> int:
    """Kill ffmpeg processes a crashed predecessor left working on job ``job_id``.

    ffmpeg runs in its own session (so a timeout can kill its whole group), which means it
    outlives a SIGKILLed service; a resumed attempt must not race it for the output dir.
    Its arguments name the job's workspace, whose paths contain the (160-bit random) job id.
    """
    needle = job_id.encode()
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].rsplit(b"/", 1)[-1].startswith(b"ff")
            and any(needle in arg for arg in argv)
        ):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(proc.name), signal.SIGKILL)
                killed += 1
    return killed


async def _run_cancellable(
    fn: Callable[[Job, Workspace, threading.Event], T], job: Job, workspace: Workspace
) -> T:
    """Run a blocking transcode in a thread; cancelling the task stops ffmpeg via the event."""
    cancel = threading.Event()
    task = asyncio.ensure_future(asyncio.to_thread(fn, job, workspace, cancel))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception, Interrupted):
            await task
        raise
