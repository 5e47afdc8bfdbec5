from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import Engine

from atproto_video.core.details import JobDetails, Plan, RenditionStatus
from atproto_video.core.jobs import (
    DuplicateUpload,
    JobStore,
    NewJob,
    Quota,
    QuotaExceeded,
    new_job_id,
)
from atproto_video.core.lexicon import (
    QUOTA_BYTES_EXCEEDED,
    QUOTA_VIDEOS_EXCEEDED,
    FailureCode,
    JobState,
)

DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


def new(did: str = DID, size: int = 100, content: str | None = None) -> NewJob:
    return NewJob(id=new_job_id(), did=did, source_size=size, content_hash=content or new_job_id())


def test_job_ids_are_unguessable() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 40 for i in ids)  # 160 random bits


def test_create_and_status(engine: Engine) -> None:
    store = JobStore(engine)
    job = store.create(new(), Quota(5, 10_000))
    assert job.state is JobState.CREATED
    assert store.status(job.id) == {
        "jobId": job.id,
        "did": DID,
        "state": "JOB_STATE_CREATED",
        "progress": 0,
    }
    assert store.status("nope") is None


def test_quota_counts_videos_and_bytes(engine: Engine) -> None:
    store = JobStore(engine)
    quota = Quota(daily_videos=2, daily_bytes=1000)
    store.create(new(size=600), quota)
    assert store.limits(DID, quota) == {
        "canUpload": True,
        "remainingDailyVideos": 1,
        "remainingDailyBytes": 400,
    }
    with pytest.raises(QuotaExceeded) as err:
        store.create(new(size=500), quota)
    assert err.value.message == QUOTA_BYTES_EXCEEDED
    store.create(new(size=400), quota)
    with pytest.raises(QuotaExceeded) as err:
        store.create(new(size=1), quota)
    assert err.value.message == QUOTA_VIDEOS_EXCEEDED
    limits = store.limits(DID, quota)
    assert limits["canUpload"] is False and limits["error"] == QUOTA_VIDEOS_EXCEEDED
    # Other DIDs and other days are unaffected.
    assert store.limits("did:plc:other", quota)["remainingDailyVideos"] == 2
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    assert store.limits(DID, quota, day=tomorrow)["remainingDailyVideos"] == 2


def test_concurrent_uploads_never_overshoot_the_quota(engine: Engine) -> None:
    store = JobStore(engine)
    quota = Quota(daily_videos=5, daily_bytes=10**9)
    accepted: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(16)

    def upload() -> None:
        barrier.wait()
        try:
            accepted.append(store.create(new(), quota).id)
        except QuotaExceeded as exc:
            refused.append(exc.message)

    threads = [threading.Thread(target=upload) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 5
    assert refused == [QUOTA_VIDEOS_EXCEEDED] * 11
    assert store.limits(DID, quota)["remainingDailyVideos"] == 0


def test_progress_is_monotonic_within_a_state(engine: Engine) -> None:
    store = JobStore(engine)
    job = store.create(new(), None)
    assert store.advance(job.id, JobState.ENCODING, 10)
    assert store.advance(job.id, JobState.ENCODING, 40)
    assert not store.advance(job.id, JobState.ENCODING, 30)
    assert store.status(job.id)["progress"] == 40  # type: ignore[index]
    assert store.advance(job.id, JobState.ENCODED, 0)
    assert not store.advance(job.id, JobState.ENCODING, 90)  # states never go back
    assert store.status(job.id)["state"] == "JOB_STATE_ENCODED"  # type: ignore[index]


def test_terminal_states_are_final(engine: Engine) -> None:
    store = JobStore(engine)
    job = store.create(new(), None)
    blob = {"$type": "blob", "ref": {"$link": "bafkreiabc"}, "mimeType": "video/mp4", "size": 3}
    assert store.complete(job.id, blob=blob, cid="bafkreiabc", output_size=3)
    assert not store.fail(job.id, FailureCode.ENCODING, "late failure")
    assert not store.advance(job.id, JobState.ENCODING, 50)
    status = store.status(job.id)
    assert status is not None
    assert status["state"] == "JOB_STATE_COMPLETED" and status["blob"] == blob
    assert "failureCode" not in status

    other = store.create(new(), None)
    assert store.fail(other.id, FailureCode.VALIDATION, "not a video")
    failed = store.status(other.id)
    assert failed is not None
    assert failed["failureCode"] == "validation_failure" and failed["error"] == "not a video"
    assert [j.id for j in store.unfinished()] == []


def test_duplicates_are_found_per_did_and_ignore_failed_jobs(engine: Engine) -> None:
    store = JobStore(engine)
    first = store.create(new(content="abc"), None)
    assert store.find_duplicate(DID, "abc") == store.get(first.id)
    assert store.find_duplicate("did:plc:someoneelse", "abc") is None
    store.fail(first.id, FailureCode.ENCODING, "boom")
    assert store.find_duplicate(DID, "abc") is None


def test_status_cache_follows_writes(engine: Engine) -> None:
    writer = JobStore(engine, single_writer=True)
    job = writer.create(new(), None)
    assert writer.cached_status(job.id) is not None
    writer.advance(job.id, JobState.ENCODING, 42)
    cached = writer.cached_status(job.id)
    assert cached is not None and (cached["state"], cached["progress"]) == (
        "JOB_STATE_ENCODING",
        42,
    )
    writer.fail(job.id, FailureCode.ENCODING, "x")
    assert writer.cached_status(job.id)["failureCode"] == "encoding_failure"  # type: ignore[index]


def test_reader_only_caches_terminal_statuses(engine: Engine) -> None:
    # Cluster mode: the API reads while the operator (another process) writes.
    reader = JobStore(engine)
    operator = JobStore(engine)
    job = operator.create(new(), None)
    assert reader.status(job.id)["state"] == "JOB_STATE_CREATED"  # type: ignore[index]
    operator.advance(job.id, JobState.ENCODING, 10)
    assert reader.status(job.id)["progress"] == 10  # type: ignore[index]
    assert reader.cached_status(job.id) is None
    operator.fail(job.id, FailureCode.ENCODING, "x")
    assert reader.status(job.id)["state"] == "JOB_STATE_FAILED"  # type: ignore[index]
    assert reader.cached_status(job.id) is not None


def test_database_refuses_a_second_live_job_for_the_same_bytes(engine: Engine) -> None:
    # What two API replicas racing on the same upload would do: both insert.
    store = JobStore(engine)
    quota = Quota(daily_videos=10, daily_bytes=10**9)
    first = store.create(new(content="same"), quota)
    with pytest.raises(DuplicateUpload):
        store.create(new(content="same"), quota)
    assert store.limits(DID, quota)["remainingDailyVideos"] == 9  # the refused one spent nothing
    store.create(new(did="did:plc:other", content="same"), quota)  # other DIDs never share
    store.fail(first.id, FailureCode.ENCODING, "boom")
    store.create(new(content="same"), quota)  # a failed job does not block a retry


def test_details_updates_from_many_writers_lose_nothing(engine: Engine) -> None:
    """Each writer reads, changes and writes the details; none may overwrite another's."""
    store = JobStore(engine)
    job = store.create(new(), None)
    writers, rounds = 4, 15

    def write(n: int) -> None:
        for i in range(rounds):
            name = f"w{n}-{i}"
            rec = RenditionStatus(progress=i)
            store.update_details(job.id, lambda d, name=name, rec=rec: replace(
                d, renditions={**d.renditions, name: rec}))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = store.get(job.id)
    assert stored is not None and len(stored.details.renditions) == writers * rounds


def test_details_are_typed_and_frozen_once_terminal(engine: Engine) -> None:
    store = JobStore(engine)
    job = store.create(new(), None)
    plan = Plan(1280, 720, "30", True, ("720p", "480p"))
    assert store.update_details(job.id, lambda d: replace(d, plan=plan)) is not None
    stored = store.get(job.id)
    assert stored is not None and stored.details.plan == plan
    assert [v.name for v in stored.details.plan.variants()] == ["720p", "480p"]
    with pytest.raises(ValueError):
        store.update_fields(job.id, details={"plan": None})
    store.fail(job.id, FailureCode.GENERIC, "stop")
    assert store.update_details(job.id, lambda d: replace(d, strategy="x")) is None
    final = store.get(job.id)
    assert final is not None and final.details.strategy is None


def test_one_step_write_leaves_the_rows_the_separate_writes_leave(engine: Engine) -> None:
    """record_progress (one transaction) against start_attempt + advance + update_details."""
    store = JobStore(engine)
    one, many = store.create(new(), None), store.create(new(), None)
    plan = Plan(1280, 720, "30", True, ("720p", "480p"))
    steps = [(True, 0, {"720p": RenditionStatus(job="a")}),
             (False, 35, {"720p": RenditionStatus(job="a", progress=70)}),
             (False, 20, {"480p": RenditionStatus(job="b", progress=40)}),  # lower: kept 35
             (False, 35, {})]

    def change(rends: dict[str, RenditionStatus]) -> Callable[[JobDetails], JobDetails]:
        return lambda d: replace(d, plan=plan, renditions={**d.renditions, **rends})

    for attempt, pct, rends in steps:
        row = store.record_progress(one.id, pct, change(rends) if rends else None,
                                    attempt=attempt)
        if attempt:
            store.start_attempt(many.id)
        store.advance(many.id, JobState.ENCODING, pct)
        if rends:
            store.update_details(many.id, change(rends))
        assert row is not None and row == store.get(one.id)
    a, b = store.get(one.id), store.get(many.id)
    assert a is not None and b is not None
    assert (a.state, a.progress, a.attempts, a.details) == (
        b.state, b.progress, b.attempts, b.details)
    assert (a.state, a.progress, a.attempts) == (JobState.ENCODING, 35, 1)
    assert a.details.renditions["720p"].progress == 70 and a.details.plan == plan
    # Later states and terminal jobs are not moved back, their details not changed.
    store.advance(one.id, JobState.ENCODED, 0)
    row = store.record_progress(one.id, 99, change({"x": RenditionStatus()}))
    assert row is not None and (row.state, row.progress) == (JobState.ENCODED, 0)
    store.fail(one.id, FailureCode.GENERIC, "stop")
    row = store.record_progress(one.id, 99, change({"y": RenditionStatus()}), attempt=True)
    assert row is not None and row.state is JobState.FAILED and row.attempts == 1
    assert "y" not in row.details.renditions
    assert store.record_progress(new_job_id(), 10) is None
