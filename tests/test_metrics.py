"""core/metrics.py: the listener, the job counts read from a real database, the label rules."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from atproto_video.core import metrics
from atproto_video.core.db import make_engine
from atproto_video.core.jobs import JobStore, NewJob, new_job_id
from atproto_video.core.lexicon import FailureCode, JobState
from atproto_video.core.metrics import REGISTRY, MetricsServer
from tests.support.metrics import scrape
from tests.support.waiting import free_port


def value(name: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1", free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_the_listener_serves_the_registry_and_frees_its_port(server: MetricsServer) -> None:
    url = f"http://127.0.0.1:{server.port}/metrics"
    samples = scrape(url)
    assert samples[("atproto_video_uploads_total", frozenset({("result", "accepted")}))] >= 0
    assert ("process_cpu_seconds_total", frozenset()) in samples
    assert not [n for n, _ in samples if n.endswith("_created")]

    # The port is really held while it runs...
    with pytest.raises(OSError):
        MetricsServer("127.0.0.1", server.port).start()
    # ...and free after stop: a new listener (a restarted service) takes it at once.
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
    again = MetricsServer("127.0.0.1", server.port)
    again.start()
    try:
        assert scrape(url)
    finally:
        again.stop()


def test_several_services_in_one_process_share_one_registry(server: MetricsServer) -> None:
    """Two listeners (two services in one test process) serve the same metrics: no metric is
    registered twice, so there is no 'Duplicated timeseries' at start."""
    other = MetricsServer("127.0.0.1", free_port())
    other.start()
    try:
        metrics.UPLOADS.labels(result="PayloadTooLarge").inc()
        key = ("atproto_video_uploads_total", frozenset({("result", "PayloadTooLarge")}))
        first = scrape(f"http://127.0.0.1:{server.port}/metrics")[key]
        assert first >= 1
        assert scrape(f"http://127.0.0.1:{other.port}/metrics")[key] == first
    finally:
        other.stop()


def test_port_zero_means_no_listener() -> None:
    off = MetricsServer("127.0.0.1", 0)
    assert not off.enabled
    off.start()
    off.stop()
    assert off._server is None


def _job(store: JobStore) -> str:
    job_id = new_job_id()
    store.create(NewJob(id=job_id, did="did:plc:metrics", source_size=10,
                        content_hash=job_id), None)
    return job_id


def test_jobs_by_state_and_queue_depth_come_from_the_database(
    engine: Engine, server: MetricsServer
) -> None:
    store = JobStore(engine)
    waiting = [_job(store), _job(store)]
    encoding, completed, failed = _job(store), _job(store), _job(store)
    store.advance(encoding, JobState.ENCODING, 10)
    finished_ok = value("atproto_video_jobs_finished_total", outcome="completed")
    finished_bad = value("atproto_video_jobs_finished_total", outcome="validation_failure")
    assert store.complete(completed, blob={"size": 1}, cid="bafy", output_size=1)
    assert store.fail(failed, FailureCode.VALIDATION, "not a video")
    assert not store.fail(failed, FailureCode.VALIDATION, "again")  # terminal: counted once

    metrics.watch_jobs(engine)
    try:
        samples = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        metrics.unwatch_jobs(engine)
    jobs = {dict(labels)["state"]: v for (name, labels), v in samples.items()
            if name == "atproto_video_jobs"}
    # Every unfinished state is present (zeros included); finished ones are counters.
    assert jobs == {"created": len(waiting), "encoding": 1, "encoded": 0, "scanning": 0,
                    "scanned": 0, "uploading": 0, "uploaded": 0}
    assert samples[("atproto_video_queue_depth", frozenset())] == len(waiting)
    assert value("atproto_video_jobs_finished_total", outcome="completed") == finished_ok + 1
    assert value("atproto_video_jobs_finished_total",
                 outcome="validation_failure") == finished_bad + 1

    # Not watched (any more): no job gauges at all, rather than stale ones.
    samples = scrape(f"http://127.0.0.1:{server.port}/metrics")
    assert not [n for n, _ in samples if n in ("atproto_video_jobs", "atproto_video_queue_depth")]


def test_a_database_failure_does_not_break_the_scrape(
    tmp_path: Path, server: MetricsServer
) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'video.sqlite3'}")
    errors = value("atproto_video_job_count_errors_total")
    metrics.watch_jobs(broken)
    try:
        samples = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        metrics.unwatch_jobs(broken)
        broken.dispose()
    assert ("atproto_video_uploads_total", frozenset({("result", "accepted")})) in samples
    assert not [n for n, _ in samples if n == "atproto_video_jobs"]
    assert samples[("atproto_video_job_count_errors_total", frozenset())] == errors + 1


def test_unwatch_by_an_older_service_keeps_the_newer_ones_engine(tmp_path: Path) -> None:
    old = make_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    new = make_engine(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    metrics.watch_jobs(old)
    metrics.watch_jobs(new)
    metrics.unwatch_jobs(old)
    assert metrics._JOB_COUNTS._engine is new
    metrics.unwatch_jobs(new)
    assert metrics._JOB_COUNTS._engine is None
    old.dispose()
    new.dispose()


def test_labels_stay_bounded() -> None:
    assert metrics.upload_result("BadJwtSignature", "AuthRequired") == "BadJwtSignature"
    # Quota errors name themselves with a sentence (SPEC section 1): the class name instead.
    sentence = "User has exceeded daily upload bytes limit"
    assert metrics.upload_result(sentence, "RateLimitExceeded") == "RateLimitExceeded"
    assert metrics.state_label(JobState.UPLOADING) == "uploading"
    for name in ("1080p", "720p", "480p", "mp4", "thumbnail", "all"):
        assert metrics.rendition_label(name) == name
    assert metrics.rendition_label("did:plc:someone") == "other"
    before = value("atproto_video_encode_seconds_count", rendition="other")
    metrics.observe_encode("a-job-id", 3.0)
    assert value("atproto_video_encode_seconds_count", rendition="other") == before + 1


def test_kube_error_codes() -> None:
    before = value("atproto_video_kube_api_errors_total", operation="list_jobs", code="network")
    metrics.kube_error("list_jobs", None)
    metrics.kube_error("list_jobs", 0)
    assert value("atproto_video_kube_api_errors_total", operation="list_jobs",
                 code="network") == before + 2


def test_every_metric_is_named_with_the_prefix() -> None:
    ours = [m.name for m in REGISTRY.collect() if not m.name.startswith(("process_", "python_"))]
    assert ours and all(n.startswith(metrics.PREFIX) for n in ours), ours


def test_the_listener_binds_the_host_it_is_given() -> None:
    # The listener binds exactly the host it is given: loopback here, never every address.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        srv = MetricsServer("127.0.0.1", s.getsockname()[1])
    srv.start()
    try:
        assert srv._server is not None
        assert srv._server.server_address[0] == "127.0.0.1"
    finally:
        srv.stop()
