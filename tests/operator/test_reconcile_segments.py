"""Segmented jobs in the reconcile step (in-memory API server double, real database and
storage): each rendition is joined and listed in the master playlist as soon as its own
segments succeeded, and the MP4 is a remux Job created only after the top rendition's join."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from atproto_video.core.lexicon import JobState
from atproto_video.core.storage import Storage
from atproto_video.operator.reconcile import VideoJobReconciler
from tests.operator.test_reconcile import (
    FakeKube,
    World,
    add_job,
    body_for,
    make_world,
    write_mp4,
)
from tests.operator.test_reconcile_playable import listed
from tests.support.media import make_clip

SEGMENTS = 2  # 20 s at 8 s segments (the tail under one HLS segment merged)


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[World]:
    cfg, store, storage = make_world(engine, tmp_path, VIDEO_SEGMENT_SECONDS="8",
                                     VIDEO_SEGMENT_MIN_SOURCE_S="10")
    yield cfg, store, storage
    storage.close()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """20 s of 720p (renditions 720p and 480p), at a low rate to make it quickly."""
    return make_clip(tmp_path_factory.mktemp("m") / "long.mp4", seconds=20, size="1280x720",
                     rate=5).read_bytes()


def write_parts(storage: Storage, job_id: str, rendition: str, count: int = SEGMENTS) -> None:
    """The partial playlists segment workers leave (two HLS segments each)."""
    for index in range(count):
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:4"]
        for n in (2 * index, 2 * index + 1):
            lines += ["#EXTINF:4.000000,", f"seg_{n:03d}.ts"]
        storage.write_output(job_id, f"{rendition}/part_{index:03d}.m3u8",
                             "\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n")


def targets_of(kube: FakeKube) -> dict[str, list[str]]:
    return {j["metadata"]["labels"]["video.atproto.dev/target"]:
            j["spec"]["template"]["spec"]["containers"][0]["args"] for j in kube.jobs.values()}


def test_renditions_join_early_and_the_mp4_is_a_remux_after_the_top_join(
    world: World, long_clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, long_clip)
    reconciler = VideoJobReconciler(cfg, store, storage, kube)

    def step(status: dict[str, Any] | None = None,
             rec: VideoJobReconciler = reconciler) -> dict[str, Any]:
        return asyncio.run(rec.step(body_for(job_id, storage, status)))

    status = step()
    assert set(targets_of(kube)) == {"720ps0", "720ps1", "480ps0", "480ps1", "thumbnail"}

    write_parts(storage, job_id, "480p")
    kube.finish("480ps0")
    kube.finish("480ps1")
    status = step(status)
    assert listed(world, job_id) == ["480p/video.m3u8"]  # joined and playable at once
    assert storage.has_output(job_id, "480p/video.m3u8")
    assert "mp4" not in targets_of(kube)  # not the top rendition
    assert status["state"] == "JOB_STATE_ENCODING"

    write_parts(storage, job_id, "720p")
    kube.finish("720ps0")
    status = step(status)
    assert "mp4" not in targets_of(kube)  # one segment still encoding
    assert listed(world, job_id) == ["480p/video.m3u8"]

    kube.finish("720ps1")
    status = step(status)
    # Joined, listed and its remux started, all in the same step.
    assert listed(world, job_id) == ["720p/video.m3u8", "480p/video.m3u8"]
    args = targets_of(kube)["mp4"]
    assert args[args.index("--target") + 1] == "mp4"
    assert args[args.index("--from-rendition") + 1] == "720p"
    assert status["renditions"]["mp4"]["outcome"] != "SUCCEEDED"
    assert store.get(job_id).state is JobState.ENCODING  # type: ignore[union-attr]

    # A restarted operator joins again (same playlists) and duplicates no Job.
    creates = kube.creates
    status = step(status, VideoJobReconciler(cfg, store, storage, kube))
    assert kube.creates == creates
    assert listed(world, job_id) == ["720p/video.m3u8", "480p/video.m3u8"]

    kube.finish("mp4")
    kube.finish("thumbnail")
    write_mp4(cfg, storage, job_id)
    status = step(status)
    assert status["state"] == "JOB_STATE_COMPLETED"


def test_a_segment_playlist_missing_at_the_join_fails_the_job(
    world: World, long_clip: bytes
) -> None:
    cfg, store, storage = world
    kube = FakeKube()
    job_id = add_job(store, storage, long_clip)
    reconciler = VideoJobReconciler(cfg, store, storage, kube)
    status = asyncio.run(reconciler.step(body_for(job_id, storage)))
    write_parts(storage, job_id, "480p", count=1)  # segment 1's playlist never arrived
    kube.finish("480ps0")
    kube.finish("480ps1")
    status = asyncio.run(reconciler.step(body_for(job_id, storage, status)))
    assert status["state"] == "JOB_STATE_FAILED"
    assert store.get(job_id).state is JobState.FAILED  # type: ignore[union-attr]
    assert "mp4" not in targets_of(kube)
