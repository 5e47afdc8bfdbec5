"""Quota reservations on both databases: held before bytes are stored, never overshooting."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine

from atproto_video.core.jobs import JobStore, NewJob, new_job_id
from atproto_video.core.lexicon import QUOTA_BYTES_EXCEEDED, QUOTA_VIDEOS_EXCEEDED
from atproto_video.core.quota import (
    MULTIPART,
    SINGLE,
    Quota,
    QuotaExceeded,
    QuotaLedger,
    TooManyOpenUploads,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def later(seconds: float = 3600) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def test_reservations_count_against_the_quota_until_released(engine: Engine) -> None:
    ledger, store = QuotaLedger(engine), JobStore(engine)
    quota = Quota(daily_videos=3, daily_bytes=1000)
    ledger.reserve("a" * 40, DID, 600, quota, kind=SINGLE, expires_at=later())
    assert store.limits(DID, quota) == {
        "canUpload": True, "remainingDailyVideos": 2, "remainingDailyBytes": 400}
    with pytest.raises(QuotaExceeded) as err:
        ledger.reserve("b" * 40, DID, 500, quota, kind=SINGLE, expires_at=later())
    assert err.value.message == QUOTA_BYTES_EXCEEDED
    released = ledger.release("a" * 40)
    assert released is not None and released.bytes == 600
    assert ledger.release("a" * 40) is None  # once only
    assert store.limits(DID, quota)["remainingDailyBytes"] == 1000
    assert ledger.remaining(DID, quota, dt.datetime.now(dt.UTC).date()) == (3, 1000)


def test_committing_converts_the_reservation(engine: Engine) -> None:
    ledger, store = QuotaLedger(engine), JobStore(engine)
    quota = Quota(daily_videos=2, daily_bytes=1000)
    job_id = new_job_id()
    # A ceiling of 900 (no Content-Length), 300 actually stored: 600 come back.
    ledger.reserve(job_id, DID, 900, quota, kind=SINGLE, expires_at=later())
    store.create(NewJob(id=job_id, did=DID, source_size=300, content_hash="h" * 64), quota,
                 reservation=job_id)
    assert ledger.release(job_id) is None
    assert store.limits(DID, quota) == {
        "canUpload": True, "remainingDailyVideos": 1, "remainingDailyBytes": 700}
    other = new_job_id()
    ledger.reserve(other, DID, 10, quota, kind=MULTIPART, expires_at=later())
    with pytest.raises(QuotaExceeded) as err:
        ledger.reserve(new_job_id(), DID, 10, quota, kind=SINGLE, expires_at=later())
    assert err.value.message == QUOTA_VIDEOS_EXCEEDED
    # An unreserved commit sees the reservation too.
    with pytest.raises(QuotaExceeded):
        store.create(NewJob(id=new_job_id(), did=DID, source_size=1, content_hash="i" * 64),
                     quota)


def test_open_uploads_are_capped(engine: Engine) -> None:
    ledger = QuotaLedger(engine)
    quota = Quota(daily_videos=100, daily_bytes=10**9, open_uploads=2)
    ids = [new_job_id() for _ in range(3)]
    ledger.reserve(ids[0], DID, 1, quota, kind=SINGLE, expires_at=later())
    ledger.reserve(ids[1], DID, 1, quota, kind=MULTIPART, expires_at=later())
    with pytest.raises(TooManyOpenUploads):
        ledger.reserve(ids[2], DID, 1, quota, kind=SINGLE, expires_at=later())
    # Nothing was held by the refused one.
    assert QuotaLedger(engine).remaining(DID, quota, dt.datetime.now(dt.UTC).date()) == (
        98, 10**9 - 2)
    ledger.release(ids[0])
    ledger.reserve(ids[2], DID, 1, quota, kind=SINGLE, expires_at=later())
    ledger.reserve(new_job_id(), "did:plc:someoneelse", 1, quota, kind=SINGLE,
                   expires_at=later())


def test_expired_reservations_are_listed(engine: Engine) -> None:
    ledger = QuotaLedger(engine)
    quota = Quota(10, 10**6)
    ledger.reserve("old" + "0" * 37, DID, 5, quota, kind=SINGLE, expires_at=later(-10))
    ledger.reserve("new" + "0" * 37, DID, 5, quota, kind=SINGLE, expires_at=later())
    ledger.reserve("mp" + "0" * 38, DID, 5, quota, kind=MULTIPART, expires_at=later(-10))
    assert [r.id for r in ledger.expired(SINGLE)] == ["old" + "0" * 37]
    assert [r.id for r in ledger.expired(MULTIPART)] == ["mp" + "0" * 38]


def test_concurrent_reservations_never_overshoot(engine: Engine) -> None:
    """50 uploads of one DID at once: what is held never exceeds the quota."""
    ledger, store = QuotaLedger(engine), JobStore(engine)
    quota = Quota(daily_videos=25, daily_bytes=10 * 400, open_uploads=50)
    held: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(50)

    def upload() -> None:
        rid = new_job_id()
        barrier.wait()
        try:
            ledger.reserve(rid, DID, 400, quota, kind=SINGLE, expires_at=later())
            held.append(rid)
        except QuotaExceeded as exc:
            refused.append(exc.message)

    threads = [threading.Thread(target=upload) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(held) == 10 and refused == [QUOTA_BYTES_EXCEEDED] * 40
    assert store.limits(DID, quota)["remainingDailyBytes"] == 0
    for rid in held:
        ledger.release(rid)
    assert store.limits(DID, quota)["remainingDailyBytes"] == 4000
