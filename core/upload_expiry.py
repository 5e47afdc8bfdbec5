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


class UploadSweeper:
    def __init__(self, sessions: SessionStore, ledger: QuotaLedger, jobs: JobStore,
                 storage: Storage) -> None:
        self.sessions = sessions
        self.ledger = ledger
        self.jobs = jobs
        self.storage = storage

    def once(self, now: dt.datetime | None = None) -> SweepResult:
        """One pass (blocking)."""
        now = now or dt.datetime.now(dt.UTC)
        expired = interrupted = released = 0
        for session in self.sessions.due(now, now - STALE_FINISH):
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
            if self.sessions.transition(session.id, [SessionState.FINISHING],
                                        SessionState.FAILED, release_quota=True,
                                        failure_reason="finishing the upload was interrupted"):
                self.storage.abort_parts(session.id, session.storage_ref or "")
                interrupted += 1
                log.warning("interrupted finish failed", extra=extra)
        for held in self.ledger.expired(SINGLE, now):
            if self.ledger.release(held.id) is not None:
                released += 1
                if self.jobs.get(held.id) is None:
                    self.storage.remove(held.id)
                log.info("stale upload reservation released",
                         extra={"job_id": held.id, "did": held.did})
        forgotten = self.sessions.forget_before(now - RETENTION)
        return SweepResult(expired, interrupted, released, forgotten)

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Sweep every ``interval_s`` until ``stop``; a failed pass is retried next time."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.once)
            except Exception as exc:
                log.warning("could not sweep uploads: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
