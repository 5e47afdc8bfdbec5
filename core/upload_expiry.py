"""The sweep that ends abandoned uploads: sessions past ``expiresAt``, finishes whose process
died, and reservations of streaming uploads cut off by a crash.

Each is released exactly once (the session transition and the reservation release share a
transaction), so the sweep may run in every process at once: the embedded service runs it
itself, in cluster mode the operator's periodic loop does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass

from atproto_video.core.jobs import JobStore
from atproto_video.core.quota import SINGLE, QuotaLedger
from atproto_video.core.sessions import RETENTION, SessionState, SessionStore
from atproto_video.core.storage import Storage

log = logging.getLogger(__name__)

#: A finish that has not moved for this long was cut off (a finish takes seconds).
STALE_FINISH = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class SweepResult:
    expired: int = 0
    interrupted: int = 0
    released: int = 0
    forgotten: int = 0
    orphans: int = 0


class UploadSweeper:
    def __init__(self, sessions: SessionStore, ledger: QuotaLedger, jobs: JobStore,
                 storage: Storage) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.jobs = jobs
        self.storage = storage

    def once(self, now: dt.datetime | None = None, *, after_crash: bool = False) -> SweepResult:
        """One pass (blocking). ``after_crash``: every finish and streaming upload in progress
        is orphaned (see :meth:`after_crash`), not only the stale or expired ones."""
        now = now or dt.datetime.now(dt.UTC)
        later = now + dt.timedelta(days=3650)
        expired = interrupted = released = 0
        for session in self.sessions.due(now, later if after_crash else now - STALE_FINISH):
            extra = {"job_id": session.id, "did": session.did}
            if session.state is SessionState.CREATED:
                if self.sessions.transition(session.id, [SessionState.CREATED],
                                            SessionState.EXPIRED, release_quota=True):
                    self.storage.abort_parts(session.id, session.storage_ref or "")
                    expired += 1
                    log.info("upload expired", extra=extra)
                continue
            if self.jobs.get(session.id) is not None:  # the job was committed just before
                self.sessions.transition(session.id, [SessionState.FINISHING],
                                         SessionState.COMPLETED, completed_job_id=session.id)
                continue
            if after_crash:
                # Assembling is idempotent (a rename, or S3's completion that tolerates a
                # second call) and the parts are kept: the client may simply finish again.
                if self.sessions.transition(session.id, [SessionState.FINISHING],
                                            SessionState.CREATED):
                    interrupted += 1
                    log.warning("interrupted finish reopened", extra=extra)
                continue
            if self.sessions.transition(session.id, [SessionState.FINISHING],
                                        SessionState.FAILED, release_quota=True,
                                        failure_reason="finishing the upload was interrupted"):
                # abort_parts removes the assembled source too, if the finish got that far.
                self.storage.abort_parts(session.id, session.storage_ref or "")
                interrupted += 1
                log.warning("interrupted finish failed", extra=extra)
        for held in self.ledger.expired(SINGLE, later if after_crash else now):
            if self.ledger.release(held.id) is not None:
                released += 1
                if self.jobs.get(held.id) is None:
                    self.storage.remove(held.id)
                log.info("stale upload reservation released",
                         extra={"job_id": held.id, "did": held.did})
        forgotten = self.sessions.forget_before(now - RETENTION)
        return SweepResult(expired, interrupted, released, forgotten)

    def after_crash(self) -> SweepResult:
        """At the start of the only process that uploads (embedded mode): what was in flight
        when the previous process died (SIGKILL, power loss) is orphaned now, so it is ended
        at once instead of when it expires: streaming uploads' reservations and partial
        files or objects, finishes cut off half-way. Open multipart sessions keep their parts
        (the client may go on). Never run while another process may be uploading."""
        result = self.once(after_crash=True)
        orphans = 0
        for job_id in self.storage.job_ids():
            if self.jobs.get(job_id) is not None:
                continue  # a job's files: the executor resumes or cleans it
            session = self.sessions.get(job_id)
            if session is not None and session.state is SessionState.CREATED:
                continue
            self.storage.remove(job_id)
            orphans += 1
            log.warning("removed an orphaned upload", extra={"job_id": job_id})
        return SweepResult(result.expired, result.interrupted, result.released,
                           result.forgotten, orphans)

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Sweep every ``interval_s`` until ``stop``; a failed pass is retried next time."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.once)
            except Exception as exc:
                log.warning("could not sweep uploads: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
