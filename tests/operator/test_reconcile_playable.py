"""Playable early in the reconcile step (in-memory API server double, real database and
storage): the master playlist lists exactly the renditions whose Jobs succeeded, while the
job stays ENCODING until every target is done."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Engine

from atproto_video.core.lexicon import JobState
from atproto_video.operator.reconcile import VideoJobReconciler
from tests.operator.test_reconcile import (
    FakeKube,
    World,
    add_job,
    body_for,
    make_world,
    write_mp4,
)
from tests.operator.test_reconcile import world as world  # the fixture
from tests.support.media import make_clip


@pytest.fixture(scope="module")
def hd_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """720p: renditions 720p and 480p."""
    return make_clip(tmp_path_factory.mktemp("m") / "hd.mp4", seconds=1,
                     size="1280x720").read_bytes()


def listed(world: World, job_id: str) -> list[str] | None:
    _, _, storage = world
    if not storage.has_output(job_id, "playlist.m3u8"):
        return None
    with storage.open_output(job_id, "playlist.m3u8") as master:
        return [li for li in master.read_text().splitlines() if li and not li.startswith("#")]


def test_master_lists_renditions_as_their_jobs_succeed(world: World, hd_clip: bytes) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, hd_clip)
    reconciler = VideoJobReconciler(cfg, store, storage, kube)

    def step(status: dict[str, Any] | None = None) -> dict[str, Any]:
        return asyncio.run(reconciler.step(body_for(job_id, storage, status)))

    status = step()
    assert listed(world, job_id) is None  # nothing complete: nothing to play

    kube.finish("480p")
    status = step(status)
    assert listed(world, job_id) == ["480p/video.m3u8"]
    assert store.get(job_id).state is JobState.ENCODING  # type: ignore[union-attr]
    assert status["state"] == "JOB_STATE_ENCODING"

    kube.finish("thumbnail")  # not a rendition: the master does not change
    status = step(status)
    assert listed(world, job_id) == ["480p/video.m3u8"]

    kube.finish("720p")
    status = step(status)
    assert listed(world, job_id) == ["720p/video.m3u8", "480p/video.m3u8"]  # best first
    assert store.get(job_id).state is JobState.ENCODING  # type: ignore[union-attr]

    kube.finish("mp4")
    write_mp4(cfg, storage, job_id)
    status = step(status)
    assert status["state"] == "JOB_STATE_COMPLETED"
    assert listed(world, job_id) == ["720p/video.m3u8", "480p/video.m3u8"]


def test_without_playable_early_the_master_waits_for_completion(
    engine: Engine, tmp_path: Any, hd_clip: bytes
) -> None:
    """VIDEO_PLAYABLE_EARLY=0 in the operator: a succeeded rendition is not listed early."""
    world = make_world(engine, tmp_path, VIDEO_PLAYABLE_EARLY="0")
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, hd_clip)
    reconciler = VideoJobReconciler(cfg, store, storage, kube)
    status = asyncio.run(reconciler.step(body_for(job_id, storage)))
    for target in ("480p", "720p", "thumbnail"):
        kube.finish(target)
        status = asyncio.run(reconciler.step(body_for(job_id, storage, status)))
        assert listed(world, job_id) is None
    kube.finish("mp4")
    write_mp4(cfg, storage, job_id)
    status = asyncio.run(reconciler.step(body_for(job_id, storage, status)))
    assert status["state"] == "JOB_STATE_COMPLETED"
    assert listed(world, job_id) == ["720p/video.m3u8", "480p/video.m3u8"]
    storage.close()
