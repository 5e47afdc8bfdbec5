"""The reconcile step against an in-memory API server double and a real database.

The double keeps Jobs and Pods as plain dicts the way the API server returns them; the
database, the storage and ffprobe are real. The cluster tests cover the same paths for real;
these pin down the rules quickly: create-or-get (no duplicates across restarts), progress
from files, naming failures, the deadline, and the database-to-VideoJob reconciler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from sqlalchemy import Engine

from atproto_video.core.config import VideoConfig
from atproto_video.core.jobs import JobStore, NewJob, new_job_id
from atproto_video.core.kube import videojob_manifest
from atproto_video.core.lexicon import FailureCode, JobState
from atproto_video.core.metrics import REGISTRY
from atproto_video.core.storage import WORKER_MOUNT, Storage, open_storage
from atproto_video.operator.reconcile import (
    HANDOVER_GRACE,
    STUCK_CHECK_S,
    Observed,
    VideoJobCreator,
    VideoJobReconciler,
)
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.plan import plan_job
from tests.support.blocking import no_blocking_rmtree
from tests.support.media import make_clip
from tests.support.storage import put_upload


class FakeKube:
    """Only the calls the reconciler makes, with the API server's semantics (409 on create)."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.videojobs: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.lists = 0
        self.pod_lists = 0
        self.deleted: list[str] = []

    def create_or_get_job(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        name = body["metadata"]["name"]
        if name in self.jobs:
            return self.jobs[name], False
        self.creates += 1
        self.jobs[name] = json.loads(json.dumps({**body, "status": {}}))
        return self.jobs[name], True

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists += 1
        key, _, value = selector.partition("=")
        return [j for j in self.jobs.values() if j["metadata"]["labels"].get(key) == value]

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists += 1
        self.pod_lists += 1
        return list(self.pods)

    def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def create_videojob(self, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        if name in self.videojobs:
            return False
        self.videojobs[name] = body
        return True

    def list_videojobs(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.videojobs.values())

    def finish(self, target: str, condition: str = "Complete", reason: str = "") -> None:
        for job in self.jobs.values():
            if job["metadata"]["labels"]["video.atproto.dev/target"] == target:
                job["status"] = {
                    "conditions": [
                        {"type": condition, "status": "True", "reason": reason, "message": "m"}
                    ]
                }


World = tuple[VideoConfig, JobStore, Storage]


def make_world(engine: Engine, tmp_path: Path, **env: str) -> World:
    cfg = VideoConfig.from_env(
        {
            "VIDEO_SERVICE_DID": "did:web:video.test",
            "VIDEO_STORAGE_DIR": str(tmp_path / "storage"),
            "VIDEO_K8S_NAMESPACE": "video",
            **env,
        }
    )
    storage = open_storage(cfg)
    storage.prepare()
    return cfg, JobStore(engine), storage


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    cfg, store, storage = make_world(engine, tmp_path)
    yield cfg, store, storage
    storage.close()


def worker_writes(cfg: VideoConfig, storage: Storage, job_id: str, target: str,
                  path: str, data: bytes) -> None:
    """What a worker pod writes at ``path`` (a path in the pod), seen through its mount."""
    io = storage.worker_io(job_id, target)
    assert path in (io.progress_file, *(f"{io.out_dir}/{n}" for n in ("video.mp4",)))
    host = cfg.storage_dir / Path(path).relative_to(WORKER_MOUNT)
    host.parent.mkdir(parents=True, exist_ok=True)
    host.write_bytes(data)


def write_progress(cfg: VideoConfig, storage: Storage, job_id: str, target: str,
                   pct: int) -> None:
    progress = storage.worker_io(job_id, target).progress_file
    worker_writes(cfg, storage, job_id, target, progress,
                  f'{{"target": "{target}", "progress": {pct}}}'.encode())


def write_mp4(cfg: VideoConfig, storage: Storage, job_id: str) -> None:
    out = storage.worker_io(job_id, "mp4").out_dir
    worker_writes(cfg, storage, job_id, "mp4", f"{out}/video.mp4",
                  b"\0\0\0\x18ftypmp42" + b"\0" * 100)


def add_job(store: JobStore, storage: Storage, source: bytes) -> str:
    job_id = new_job_id()
    put_upload(storage, job_id, source)
    store.create(
        NewJob(
            id=job_id,
            did="did:plc:abc",
            source_size=len(source),
            content_hash=job_id,
            executor="kubernetes",
        ),
        None,
    )
    return job_id


def body_for(
    job_id: str, storage: Storage, status: dict[str, Any] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    vj = videojob_manifest(job_id, "did:plc:abc", source or storage.source_ref(job_id), "video")
    vj["metadata"].update(uid="uid-1", generation=1)
    vj["status"] = status or {}
    return vj


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("m") / "c.mp4", seconds=1, size="854x480").read_bytes()


def test_one_job_per_target_and_no_duplicates_after_a_restart(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    status = asyncio.run(
        VideoJobReconciler(cfg, store, storage, kube).step(body_for(job_id, storage))
    )
    assert sorted(kube.jobs) == sorted(f"vj-{job_id}-{t}" for t in ("480p", "mp4", "thumbnail"))
    assert status["plan"]["renditions"] == ["480p"]
    assert store.get(job_id).state is JobState.ENCODING  # type: ignore[union-attr]

    # A new operator process (fresh reconciler, stale CR status) adopts the same Jobs.
    write_progress(cfg, storage, job_id, "480p", 40)
    fresh = VideoJobReconciler(cfg, store, storage, kube)
    status = asyncio.run(fresh.step(body_for(job_id, storage)))
    assert kube.creates == 3
    assert status["renditions"]["480p"]["progress"] == 40
    db_progress = store.get(job_id).progress  # type: ignore[union-attr]
    assert 0 < db_progress < 100

    # A retried pod restarts its progress file at 0: nothing goes backwards.
    write_progress(cfg, storage, job_id, "480p", 0)
    status = asyncio.run(fresh.step(body_for(job_id, storage, status)))
    assert status["renditions"]["480p"]["progress"] == 40

    for target in ("480p", "mp4", "thumbnail"):
        kube.finish(target)
    # The workers would have written these; the operator writes the master and delivers.
    write_mp4(cfg, storage, job_id)
    status = asyncio.run(fresh.step(body_for(job_id, storage, status)))
    job = store.get(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.blob
    assert status["state"] == "JOB_STATE_COMPLETED"
    assert {k: v["progress"] for k, v in status["renditions"].items()} == {
        "480p": 100,
        "mp4": 100,
        "thumbnail": 100,
    }
    with storage.open_output(job_id, "playlist.m3u8") as master:
        assert "480p/video.m3u8" in master.read_text()
    assert not storage.has_source(job_id)
    assert job.details.renditions["480p"].progress == 100
    assert job.details.strategy == "kubernetes" and job.details.plan is not None


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reconcile_latency_and_encode_seconds_per_rendition(world: World, clip: bytes) -> None:
    """Every pass is timed; a worker Job's run (startTime to completionTime, as the API server
    records it) is observed once, under its rendition, when the operator sees it succeed."""
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    rec = VideoJobReconciler(cfg, store, storage, kube)
    targets = {"480p": 42, "mp4": 30, "thumbnail": 2}
    passes = _sample("atproto_video_reconcile_seconds_count", result="ok")
    counts = {t: _sample("atproto_video_encode_seconds_count", rendition=t) for t in targets}
    sums = {t: _sample("atproto_video_encode_seconds_sum", rendition=t) for t in targets}

    status = asyncio.run(rec.step(body_for(job_id, storage)))
    for target, seconds in targets.items():
        kube.finish(target)
        name = f"vj-{job_id}-{target}"
        kube.jobs[name]["status"].update(startTime="2026-01-01T00:00:00Z",
                                         completionTime=f"2026-01-01T00:00:{seconds:02d}Z")
    write_mp4(cfg, storage, job_id)
    status = asyncio.run(rec.step(body_for(job_id, storage, status)))
    assert status["state"] == "JOB_STATE_COMPLETED"
    asyncio.run(rec.step(body_for(job_id, storage, status)))  # terminal: nothing observed again

    assert _sample("atproto_video_reconcile_seconds_count", result="ok") == passes + 3
    for target, seconds in targets.items():
        assert _sample("atproto_video_encode_seconds_count", rendition=target) == (
            counts[target] + 1), target
        assert _sample("atproto_video_encode_seconds_sum", rendition=target) == (
            sums[target] + seconds), target

    # A pass that fails (the API server refuses to create Jobs) is timed as an error.
    class Refusing(FakeKube):
        def create_or_get_job(
            self, namespace: str, body: dict[str, Any]
        ) -> tuple[dict[str, Any], bool]:
            raise ApiException(status=403, reason="forbidden")

    errors = _sample("atproto_video_reconcile_seconds_count", result="error")
    other = add_job(store, storage, clip)
    with pytest.raises(ApiException):
        asyncio.run(VideoJobReconciler(cfg, store, storage, Refusing()).step(
            body_for(other, storage)))
    assert _sample("atproto_video_reconcile_seconds_count", result="error") == errors + 1


def test_a_planned_job_gets_its_jobs_without_probing_or_listing(
    world: World, clip: bytes
) -> None:
    """The API recorded the plan and the watches supply the Jobs: the first step only creates."""
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    job = store.get(job_id)
    assert job is not None
    with storage.open_source(job_id) as source:
        plan_job(store, job, source, TranscodeLimits.from_settings(cfg.transcode))
    # Any ffprobe call would now fail the job as an encoding failure.
    no_probe = dataclasses.replace(
        cfg, transcode=dataclasses.replace(cfg.transcode, ffprobe_path="/nonexistent/ffprobe"))
    rec = VideoJobReconciler(no_probe, store, storage, kube)
    status = asyncio.run(rec.step(body_for(job_id, storage), Observed([], [])))
    assert kube.lists == 0
    assert kube.creates == 3
    assert status["state"] == "JOB_STATE_ENCODING"
    assert set(status["renditions"]) == {"480p", "mp4", "thumbnail"}
    # The next tick sees the Jobs through the watch (Observed) and creates nothing more.
    observed = Observed(list(kube.jobs.values()), [])
    status = asyncio.run(rec.step(body_for(job_id, storage, status), observed))
    assert (kube.creates, kube.lists) == (3, 0)
    assert {r["outcome"] for r in status["renditions"].values()} == {"Pending"}


def test_pods_are_read_only_for_a_job_slow_to_start(
    world: World, clip: bytes
) -> None:
    """No pod watch: a Job not ready after STUCK_CHECK_S has its pods read, at most once per
    interval, and a pod that can never start fails the job with its reason."""
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    now = dt.datetime.now(dt.UTC)
    clock = [now]
    rec = VideoJobReconciler(cfg, store, storage, kube, clock=lambda: clock[0])
    status = asyncio.run(rec.step(body_for(job_id, storage)))
    created = (now - dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for job in kube.jobs.values():
        job["metadata"]["creationTimestamp"] = created
    kube.pod_lists = 0
    status = asyncio.run(rec.step(body_for(job_id, storage, status),
                                  Observed(list(kube.jobs.values()))))
    assert kube.pod_lists == 0, "young Jobs: no pod reads"
    kube.pods = [{
        "metadata": {"labels": {"video.atproto.dev/target": "480p"}, "creationTimestamp": created},
        "status": {"phase": "Pending", "containerStatuses": [{
            "name": "transcode", "state": {"waiting": {"reason": "ContainerCreating"}}}]},
    }]
    clock[0] = now + dt.timedelta(seconds=STUCK_CHECK_S)
    status = asyncio.run(rec.step(body_for(job_id, storage, status),
                                  Observed(list(kube.jobs.values()))))
    assert kube.pod_lists == 1, "one read for the whole VideoJob"
    clock[0] += dt.timedelta(seconds=1)
    status = asyncio.run(rec.step(body_for(job_id, storage, status),
                                  Observed(list(kube.jobs.values()))))
    assert kube.pod_lists == 1, "not again within the interval"
    kube.pods[0]["status"]["containerStatuses"][0]["state"]["waiting"] = {
        "reason": "ErrImageNeverPull", "message": "image is not present"}
    clock[0] += dt.timedelta(seconds=STUCK_CHECK_S)
    status = asyncio.run(rec.step(body_for(job_id, storage, status),
                                  Observed(list(kube.jobs.values()))))
    assert kube.pod_lists == 2
    assert status["state"] == "JOB_STATE_FAILED"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "ErrImageNeverPull"


def test_failed_job_names_the_reason_and_stops_the_rest(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    rec = VideoJobReconciler(cfg, store, storage, kube)
    status = asyncio.run(rec.step(body_for(job_id, storage)))
    write_mp4(cfg, storage, job_id)  # a partial output of the failed attempt
    kube.finish("mp4", "Failed", "BackoffLimitExceeded")
    kube.pods = [
        {
            "metadata": {
                "labels": {"video.atproto.dev/target": "mp4"},
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "status": {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "transcode",
                        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                    }
                ],
            },
        }
    ]
    status = asyncio.run(rec.step(body_for(job_id, storage, status)))
    job = store.get(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert job.failure_code == "encoding_failure" and "out of memory" in (job.error or "")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "OOMKilled")
    assert sorted(kube.deleted) == sorted(f"vj-{job_id}-{t}" for t in ("480p", "thumbnail"))
    assert not storage.has_output(job_id, "video.mp4")


def test_non_video_is_rejected_without_workers(
    world: World,
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, b"not a video\n" * 100)
    status = asyncio.run(
        VideoJobReconciler(cfg, store, storage, kube).step(body_for(job_id, storage))
    )
    assert kube.jobs == {}
    assert status["state"] == "JOB_STATE_FAILED"
    assert status["failureCode"] == "validation_failure"


def test_deadline_fails_a_job_that_never_finishes(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=cfg.kube.timeout_s + 1)
    rec = VideoJobReconciler(cfg, store, storage, kube, clock=lambda: later)
    status = asyncio.run(rec.step(body_for(job_id, storage)))
    assert status["state"] == "JOB_STATE_FAILED"
    assert status["failureCode"] == "generic_failure"
    assert "did not finish" in status["error"]


def test_creator_makes_missing_videojobs_once(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    assert VideoJobCreator(cfg, store, storage, kube).once() == [], "the API's own hand-over"
    assert kube.videojobs == {}
    later = dt.datetime.now(dt.UTC) + HANDOVER_GRACE + dt.timedelta(seconds=1)
    creator = VideoJobCreator(cfg, store, storage, kube, clock=lambda: later)
    assert creator.once() == [job_id]
    assert creator.once() == []
    vj = kube.videojobs[job_id]
    assert vj["spec"]["source"] == f"jobs/{job_id}/source"
    store.fail(job_id, FailureCode.GENERIC, "x")
    kube.videojobs.clear()
    assert creator.once() == [], "terminal jobs need no VideoJob"


@pytest.mark.parametrize("source", ["/etc/passwd", "../../../etc/passwd", "jobs/{other}/source"])
def test_a_source_outside_the_job_is_refused(world: World, clip: bytes, source: str) -> None:
    """Workers read the job's own upload; a VideoJob naming any other file fails, unfollowed."""
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    other = add_job(store, storage, clip)
    body = body_for(job_id, storage, source=source.format(other=other))
    status = asyncio.run(VideoJobReconciler(cfg, store, storage, kube).step(body))
    assert kube.jobs == {}, "no worker was given the path"
    assert (status["state"], status["failureCode"]) == ("JOB_STATE_FAILED", "generic_failure")
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidSource"
    assert storage.has_source(other), "the other job's upload is untouched"


async def refuse_everything(mp4: Path) -> str | None:
    return f"refused {mp4.name} by policy"


def test_the_scan_hook_runs_in_cluster_mode(engine: Engine, tmp_path: Path, clip: bytes) -> None:
    cfg, store, storage = make_world(
        engine, tmp_path, VIDEO_SCAN_HOOK="tests.operator.test_reconcile:refuse_everything")
    kube = FakeKube()
    job_id = add_job(store, storage, clip)
    rec = VideoJobReconciler(cfg, store, storage, kube)
    status = asyncio.run(rec.step(body_for(job_id, storage)))
    for target in ("480p", "mp4", "thumbnail"):
        kube.finish(target)
    write_mp4(cfg, storage, job_id)
    status = asyncio.run(rec.step(body_for(job_id, storage, status)))
    job = store.get(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert (job.failure_code, job.error) == ("validation_failure", "refused video.mp4 by policy")
    assert status["state"] == "JOB_STATE_FAILED"


def test_deleting_a_videojob_removes_its_files_off_the_event_loop(
    world: World, clip: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, store, storage = world
    job_id = add_job(store, storage, clip)
    write_mp4(cfg, storage, job_id)
    rec = VideoJobReconciler(cfg, store, storage, FakeKube())
    with no_blocking_rmtree(monkeypatch) as calls:
        asyncio.run(rec.delete(body_for(job_id, storage)))
    assert calls, "the files were removed (with rmtree, in a thread)"
    assert not storage.has_source(job_id) and not storage.has_output(job_id, "video.mp4")
    job = store.get(job_id)
    assert job is not None and job.state is JobState.FAILED and "cancelled" in (job.error or "")


def test_deleting_the_videojob_of_a_completed_job_keeps_its_outputs(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    job_id = add_job(store, storage, clip)
    write_mp4(cfg, storage, job_id)
    store.advance(job_id, JobState.ENCODED, 100)
    assert store.complete(job_id, blob={"$type": "blob"}, cid="bafkreiabc", output_size=3)
    rec = VideoJobReconciler(cfg, store, storage, FakeKube())
    asyncio.run(rec.delete(body_for(job_id, storage)))
    assert storage.has_output(job_id, "video.mp4"), "a published video must stay playable"
    assert not storage.has_source(job_id)
    job = store.get(job_id)
    assert job is not None and job.state is JobState.COMPLETED


def test_a_job_seen_at_success_criteria_met_is_still_timed() -> None:
    """Woken by the SuccessCriteriaMet event, before Complete and completionTime exist."""
    from atproto_video.core import metrics
    from atproto_video.operator.reconcile import _observe_encode
    from atproto_video.transcoder.contract import Target

    def count() -> float:
        return metrics.ENCODE_SECONDS.labels(rendition="480p")._sum.get()  # type: ignore[attr-defined]

    before = count()
    _observe_encode(Target("480p", "480p", 1.0), {"status": {
        "startTime": "2026-12-01T07:00:00Z", "succeeded": 1,
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True",
                        "lastTransitionTime": "2026-12-01T07:00:07Z"}]}})
    assert count() - before == 7.0
