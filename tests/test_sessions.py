"""Upload sessions on both databases: transitions once, parts only while created, quota
released with the transition that ends an upload without a job."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from atproto_video.core.jobs import new_job_id
from atproto_video.core.quota import MULTIPART, Quota, QuotaLedger
from atproto_video.core.sessions import (
    PART_SIZE,
    SessionState,
    SessionStore,
    UploadSession,
    expected_part_size,
    part_count,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def test_part_arithmetic() -> None:
    assert part_count(1) == 1 and part_count(PART_SIZE) == 1 and part_count(PART_SIZE + 1) == 2
    assert part_count(300_000_000) == 36
    assert expected_part_size(300_000_000, PART_SIZE, 1) == PART_SIZE
    assert expected_part_size(300_000_000, PART_SIZE, 36) == 300_000_000 - 35 * PART_SIZE
    assert expected_part_size(PART_SIZE, PART_SIZE, 1) == PART_SIZE


def _session(store: SessionStore, size: int = 3 * PART_SIZE, ttl: float = 3600) -> UploadSession:
    session = UploadSession(
        id=new_job_id(), did=DID, state=SessionState.CREATED, size_bytes=size,
        part_size=PART_SIZE, part_count=part_count(size),
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl))
    store.create(session)
    return session


def test_parts_are_recorded_only_while_created(engine: Engine) -> None:
    store = SessionStore(engine)
    s = _session(store)
    assert store.record_part(s.id, 2, PART_SIZE, "a")
    assert store.record_part(s.id, 2, PART_SIZE, "b")  # re-sent: the newer tag counts
    assert store.record_part(s.id, 1, PART_SIZE, "c")
    assert store.parts(s.id) == {1: "c", 2: "b"}
    assert store.transition(s.id, [SessionState.CREATED], SessionState.FINISHING)
    assert not store.record_part(s.id, 3, PART_SIZE, "d")
    assert not store.transition(s.id, [SessionState.CREATED], SessionState.ABORTED)
    got = store.get(s.id)
    assert got is not None and got.state is SessionState.FINISHING
    expired = _session(store, ttl=-1)
    assert not store.record_part(expired.id, 1, PART_SIZE, "x")


def test_ending_without_a_job_releases_the_reservation_once(engine: Engine) -> None:
    store, ledger = SessionStore(engine), QuotaLedger(engine)
    quota = Quota(2, 10**9)
    s = _session(store)
    ledger.reserve(s.id, DID, s.size_bytes, quota, kind=MULTIPART,
                   expires_at=s.expires_at)
    today = dt.datetime.now(dt.UTC).date()
    assert ledger.remaining(DID, quota, today)[0] == 1
    assert store.transition(s.id, [SessionState.CREATED], SessionState.ABORTED,
                            release_quota=True)
    assert ledger.remaining(DID, quota, today) == (2, 10**9)
    # A second ending (the sweep racing the client) finds nothing to release.
    assert not store.transition(s.id, [SessionState.CREATED], SessionState.EXPIRED,
                                release_quota=True)
    assert ledger.remaining(DID, quota, today) == (2, 10**9)


def test_due_and_forgotten_sessions(engine: Engine) -> None:
    store = SessionStore(engine)
    now = dt.datetime.now(dt.UTC)
    old = _session(store, ttl=-5)
    fresh = _session(store)
    stuck = _session(store)
    store.transition(stuck.id, [SessionState.CREATED], SessionState.FINISHING)
    due = {s.id for s in store.due(now, now + dt.timedelta(seconds=1))}
    assert due == {old.id, stuck.id}
    assert {s.id for s in store.due(now, now - dt.timedelta(minutes=5))} == {old.id}
    store.transition(old.id, [SessionState.CREATED], SessionState.EXPIRED)
    store.record_part(fresh.id, 1, PART_SIZE, "t")
    assert store.forget_before(now - dt.timedelta(days=1)) == 0
    assert store.forget_before(now + dt.timedelta(days=1)) == 1
    assert store.get(old.id) is None and store.get(fresh.id) is not None
