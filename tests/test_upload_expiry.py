"""The upload sweep on both databases with real local storage: sessions past expiresAt and
interrupted finishes end once, their parts removed and their quota released; reservations of
streaming uploads cut off by a crash are released."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine

from atproto_video.core.jobs import JobStore, NewJob, new_job_id
from atproto_video.core.quota import MULTIPART, SINGLE, Quota, QuotaLedger
from atproto_video.core.sessions import (
    PART_SIZE,
    SessionState,
    SessionStore,
    UploadSession,
    part_count,
)
from atproto_video.core.storage import LocalStorage
from atproto_video.core.upload_expiry import STALE_FINISH, SweepResult, UploadSweeper

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
QUOTA = Quota(10, 10**9)


def _open(sessions: SessionStore, ledger: QuotaLedger, storage: LocalStorage,
          ttl: float) -> UploadSession:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
    s = UploadSession(id=new_job_id(), did=DID, state=SessionState.CREATED, size_bytes=100,
                      part_size=PART_SIZE, part_count=part_count(100), expires_at=expires)
    ledger.reserve(s.id, DID, 100, QUOTA, kind=MULTIPART, expires_at=expires)
    storage.start_parts(s.id, 100)
    storage.put_part(s.id, "", 1, 0, [b"x" * 100])
    sessions.create(s)
    return s


def test_the_sweep_ends_what_was_abandoned(engine: Engine, tmp_path: Path) -> None:
    sessions, ledger, jobs = SessionStore(engine), QuotaLedger(engine), JobStore(engine)
    storage = LocalStorage(tmp_path / "storage")
    storage.prepare()
    sweeper = UploadSweeper(sessions, ledger, jobs, storage)
    expired = _open(sessions, ledger, storage, ttl=-1)
    live = _open(sessions, ledger, storage, ttl=3600)
    stuck = _open(sessions, ledger, storage, ttl=3600)
    sessions.transition(stuck.id, [SessionState.CREATED], SessionState.FINISHING)
    committed = _open(sessions, ledger, storage, ttl=3600)
    sessions.transition(committed.id, [SessionState.CREATED], SessionState.FINISHING)
    jobs.create(NewJob(id=committed.id, did=DID, source_size=100, content_hash="c" * 64),
                QUOTA, reservation=committed.id)
    cut_off = new_job_id()  # a streaming upload whose process died
    ledger.reserve(cut_off, DID, 500, QUOTA, kind=SINGLE,
                   expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    (tmp_path / "storage" / "jobs" / cut_off).mkdir()

    result = sweeper.once(dt.datetime.now(dt.UTC) + STALE_FINISH + dt.timedelta(seconds=1))
    assert (result.expired, result.interrupted, result.released) == (1, 1, 1)
    state = {s.id: sessions.get(s.id).state for s in (expired, live, stuck, committed)}  # type: ignore[union-attr]
    assert state == {expired.id: SessionState.EXPIRED, live.id: SessionState.CREATED,
                     stuck.id: SessionState.FAILED, committed.id: SessionState.COMPLETED}
    assert set(storage.job_ids()) == {live.id, committed.id}
    # Held: the live session; used: the committed job. Nothing else.
    today = dt.datetime.now(dt.UTC).date()
    assert ledger.remaining(DID, QUOTA, today) == (8, 10**9 - 200)
    assert sweeper.once() == type(result)()  # nothing left to do
    storage.close()


def test_after_a_crash_what_was_in_flight_ends_at_once(engine: Engine, tmp_path: Path) -> None:
    """The embedded service's startup sweep: nothing has expired yet, but the process that
    held these is gone (it was the only one uploading)."""
    sessions, ledger, jobs = SessionStore(engine), QuotaLedger(engine), JobStore(engine)
    storage = LocalStorage(tmp_path / "storage")
    storage.prepare()
    sweeper = UploadSweeper(sessions, ledger, jobs, storage)
    live = _open(sessions, ledger, storage, ttl=3600)
    cut_finish = _open(sessions, ledger, storage, ttl=3600)
    sessions.transition(cut_finish.id, [SessionState.CREATED], SessionState.FINISHING)
    streaming = new_job_id()  # reserved an hour ago, not expired, bytes half written
    ledger.reserve(streaming, DID, 500, QUOTA, kind=SINGLE,
                   expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    (tmp_path / "storage" / "jobs" / streaming).mkdir()
    stray = new_job_id()  # bytes with no reservation, session or job at all
    (tmp_path / "storage" / "jobs" / stray).mkdir()

    assert sweeper.once() == SweepResult()  # the periodic sweep waits for expiry
    result = sweeper.after_crash()
    assert (result.released, result.interrupted, result.orphans) == (1, 1, 1)
    assert sessions.get(live.id).state is SessionState.CREATED  # type: ignore[union-attr]
    # A finish cut off is open again, its parts kept: the client finishes again.
    assert sessions.get(cut_finish.id).state is SessionState.CREATED  # type: ignore[union-attr]
    assert set(storage.job_ids()) == {live.id, cut_finish.id}
    today = dt.datetime.now(dt.UTC).date()
    assert ledger.remaining(DID, QUOTA, today) == (8, 10**9 - 200)  # two sessions hold quota
    storage.close()
