"""Event-driven reconciliation: watch events wake a VideoJob, steps patch only what changed.

The real reconciler, database, storage and ffprobe; the API server is the in-memory double of
test_reconcile plus a status subresource and events. The safety resync and the progress poll
are set to an hour, so anything that happens here happened because of an event.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from atproto_video.core.jobs import JobStore
from atproto_video.core.lexicon import JobState
from atproto_video.operator.driver import (
    BLANK_JOB,
    VideoJobDriver,
    job_signature,
    next_wake,
)
from atproto_video.operator.reconcile import STUCK_CHECK_S, VideoJobReconciler
from atproto_video.operator.templates import LABEL_JOB_ID
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.plan import plan_job
from tests.operator.test_reconcile import (
    FakeKube,
    World,
    add_job,
    body_for,
    make_world,
    write_mp4,
    write_progress,
)
from tests.support.media import make_clip

HOUR = 3600.0


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    cfg, store, storage = make_world(engine, tmp_path)
    yield cfg, store, storage
    storage.close()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("m") / "c.mp4", seconds=1, size="854x480").read_bytes()


class FakeStatusKube(FakeKube):
    """FakeKube plus VideoJob status patches (merge semantics, a new resourceVersion each)
    and events."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, dict[str, Any]] = {}
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.rv = 100

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        body = copy.deepcopy(body)
        body["metadata"].update(resourceVersion=str(self.rv), namespace="video")
        self.stored[body["metadata"]["name"]] = body
        return copy.deepcopy(body)

    def patch_videojob_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.patches.append(status)
        if name not in self.stored:
            return None
        self.rv += 1
        body = self.stored[name]
        body["status"] = {**(body.get("status") or {}), **copy.deepcopy(status)}
        body["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(body)

    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason))


class JobIndex(Mapping[str, list[dict[str, Any]]]):
    """The worker Jobs by VideoJob name, as kopf's index hands them to the driver."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    def _groups(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for job in self.kube.jobs.values():
            out.setdefault(job["metadata"]["labels"][LABEL_JOB_ID], []).append(job)
        return out

    def __getitem__(self, key: str) -> list[dict[str, Any]]:
        return self._groups()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._groups())

    def __len__(self) -> int:
        return len(self._groups())


async def until(cond: Callable[[], bool], what: str, rounds: int = 4000) -> None:
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never: {what}")


def target_job(kube: FakeKube, target: str) -> dict[str, Any]:
    return next(j for j in kube.jobs.values()
                if j["metadata"]["labels"]["video.atproto.dev/target"] == target)


def test_job_events_drive_a_videojob_to_completed_without_the_timer(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeStatusKube()
    job_id = add_job(store, storage, clip)
    reconciler = VideoJobReconciler(cfg, store, storage, kube)
    driver = VideoJobDriver(reconciler, kube, poll_s=HOUR, resync_s=HOUR)
    driver.jobs = JobIndex(kube)
    name = job_id

    async def main() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(driver.run(stop))
        try:
            # ADDED: one step creates one Job per target and writes one status patch.
            await driver.videojob_event("ADDED", kube.add(body_for(job_id, storage)))
            await until(lambda: len(kube.jobs) == 3 and bool(kube.patches), "the first step")
            await until(lambda: driver.queue.due(name) is not None, "the next wake scheduled")
            assert len(kube.jobs) == 3 and kube.creates == 3
            assert len(kube.patches) == 1
            # Waiting for pods: only the stuck-pod check is scheduled, not a poll.
            due = driver.queue.due(name)
            assert due is not None and due <= STUCK_CHECK_S
            steps = driver.queue.steps

            # The echo of our own patch wakes nothing; a Job update that changes nothing
            # that matters (the controller's bookkeeping) wakes nothing either.
            await driver.videojob_event("MODIFIED", copy.deepcopy(kube.stored[name]))
            for job in list(kube.jobs.values()):
                job["status"] = {"active": 1, "startTime": "2026-01-01T00:00:00Z"}
                assert job_signature(job) == BLANK_JOB
                driver.job_event("MODIFIED", job)
            await asyncio.sleep(0.05)
            assert driver.queue.steps == steps

            # Pods ready: woken by the Job events; progress from the files.
            for target in ("480p", "mp4", "thumbnail"):
                write_progress(cfg, storage, job_id, target, 30)
                job = target_job(kube, target)
                job["status"] = {"active": 1, "ready": 1}
                driver.job_event("MODIFIED", job)
            await until(lambda: {r.get("outcome") for r in kube.stored[name]["status"]
                                 .get("renditions", {}).values()} == {"Running"},
                        "renditions running")
            assert kube.stored[name]["status"]["state"] == JobState.ENCODING.value
            # Running workers: their progress files are polled (at poll_s, an hour here).
            due = driver.queue.due(name)
            assert due is not None and due > HOUR / 2

            # One target completes: the event alone brings it to 100 in the CR and Postgres.
            kube.finish("480p")
            driver.job_event("MODIFIED", target_job(kube, "480p"))
            await until(lambda: kube.stored[name]["status"]["renditions"]["480p"]
                        ["progress"] == 100, "480p at 100 in the VideoJob status")
            row = store.get(job_id)
            assert row is not None
            assert row.details.renditions["480p"].progress == 100

            # The rest complete; the job is delivered, and nothing is scheduled after it.
            write_mp4(cfg, storage, job_id)
            for target in ("mp4", "thumbnail"):
                kube.finish(target)
                driver.job_event("MODIFIED", target_job(kube, target))
            await until(lambda: kube.stored[name]["status"].get("state")
                        == JobState.COMPLETED.value, "COMPLETED")
            await until(lambda: not driver.queue.running(name), "the last step ended")
            assert driver.queue.due(name) is None
            await until(lambda: len(kube.events) >= 2, "the events posted")
        finally:
            stop.set()
            await runner

    asyncio.run(main())
    row = store.get(job_id)
    assert row is not None and row.state is JobState.COMPLETED
    assert kube.creates == 3, "a worker Job was created twice"
    assert [r for _, r in kube.events] == ["Encoding", "Completed"]
    # Every patch changed something: no no-op status writes.
    assert all(p for p in kube.patches)


def test_deleting_a_videojob_stops_its_steps(world: World, clip: bytes) -> None:
    cfg, store, storage = world
    kube = FakeStatusKube()
    job_id = add_job(store, storage, clip)
    driver = VideoJobDriver(VideoJobReconciler(cfg, store, storage, kube), kube,
                            poll_s=HOUR, resync_s=HOUR)
    driver.jobs = JobIndex(kube)

    async def main() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(driver.run(stop))
        try:
            await driver.videojob_event("ADDED", kube.add(body_for(job_id, storage)))
            await until(lambda: bool(kube.patches), "the first step")
            deleting = copy.deepcopy(kube.stored[job_id])
            deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            deleting["metadata"]["resourceVersion"] = str(kube.rv + 1)
            await driver.videojob_event("MODIFIED", deleting)
            await driver.forget(job_id)
            steps = driver.queue.steps
            kube.finish("480p")
            driver.job_event("MODIFIED", target_job(kube, "480p"))
            await asyncio.sleep(0.05)
            assert driver.queue.steps == steps and driver.queue.due(job_id) is None
        finally:
            stop.set()
            await runner

    asyncio.run(main())


def test_next_wake_follows_what_the_videojob_waits_for() -> None:
    def status(state: str, *outcomes: str) -> dict[str, Any]:
        return {"state": state,
                "renditions": {str(i): {"outcome": o} for i, o in enumerate(outcomes)}}

    wake = lambda s: next_wake(s, poll_s=1.0, resync_s=30.0)  # noqa: E731
    assert wake(status("JOB_STATE_COMPLETED", "Succeeded")) is None
    assert wake(status("JOB_STATE_FAILED")) is None
    assert wake(status("JOB_STATE_ENCODING", "Running", "Pending")) == 1.0
    assert wake(status("JOB_STATE_ENCODING", "Pending", "Succeeded")) == STUCK_CHECK_S
    assert wake(status("JOB_STATE_ENCODING", "Succeeded")) == 30.0
    assert wake(status("JOB_STATE_CREATED")) == 30.0
    assert wake(status("JOB_STATE_UPLOADING", "Succeeded")) == 1.0


class OrderedKube(FakeStatusKube):
    """FakeStatusKube recording, in order, each Job creation and status patch, and how many
    jobs the database showed ENCODING (written by a step) at each creation."""

    def __init__(self, store: JobStore) -> None:
        super().__init__()
        self.store = store
        self.calls: list[tuple[str, str, int]] = []

    def create_or_get_job(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        written = sum(1 for j in self.store.unfinished()
                      if j.state is JobState.ENCODING)
        self.calls.append(("create", body["metadata"]["name"], written))
        return super().create_or_get_job(namespace, body)

    def patch_videojob_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch", name, 0))
        return super().patch_videojob_status(namespace, name, status)


def test_a_burst_creates_every_worker_job_before_any_status_or_progress_write(
    world: World, clip: bytes
) -> None:
    cfg, store, storage = world
    kube = OrderedKube(store)
    ids = [add_job(store, storage, clip) for _ in range(6)]
    for job_id in ids:  # planned by the API, as the cluster executor does
        row = store.get(job_id)
        assert row is not None
        with storage.open_source(job_id) as src:
            plan_job(store, row, src, TranscodeLimits())
    driver = VideoJobDriver(VideoJobReconciler(cfg, store, storage, kube), kube,
                            poll_s=HOUR, resync_s=HOUR)
    driver.jobs = JobIndex(kube)

    async def main() -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(driver.run(stop))
        try:
            for job_id in ids:
                await driver.videojob_event("ADDED", kube.add(body_for(job_id, storage)))
            await until(lambda: len({n for c, n, _ in kube.calls if c == "patch"}) == len(ids),
                        "every VideoJob's first status patch")
        finally:
            stop.set()
            await runner

    asyncio.run(main())
    kinds = [c for c, _, _ in kube.calls]
    assert kinds.count("create") == 3 * len(ids) and kube.creates == 3 * len(ids)
    last_create = max(i for i, c in enumerate(kinds) if c == "create")
    first_patch = kinds.index("patch")
    assert last_create < first_patch, kube.calls
    assert all(written == 0 for c, _, written in kube.calls if c == "create"), kube.calls
    for job_id in ids:  # the rest of the step came after: the same rows as one step makes
        row = store.get(job_id)
        assert row is not None and row.state is JobState.ENCODING and row.attempts == 1
        assert {r.job for r in row.details.renditions.values()} == {
            f"vj-{job_id}-{t}" for t in ("480p", "mp4", "thumbnail")}
