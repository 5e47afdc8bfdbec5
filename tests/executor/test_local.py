"""The embedded executor in process: real ffmpeg, a real database, the local storage backend."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from atproto_video.core.config import VideoConfig
from atproto_video.core.details import Outcome, RenditionStatus
from atproto_video.core.jobs import JobStore, NewJob, new_job_id
from atproto_video.core.lexicon import JobState
from atproto_video.core.storage import Storage, open_storage
from atproto_video.executor.local import LocalExecutor, kill_orphans
from tests.support.blocking import no_blocking_rmtree
from tests.support.media import make_clip
from tests.support.storage import put_upload


@pytest.fixture
def world(engine: Engine, tmp_path: Path) -> Iterator[tuple[VideoConfig, JobStore, Storage]]:
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                                "VIDEO_DATA_DIR": str(tmp_path / "data")})
    storage = open_storage(cfg)
    storage.prepare()
    yield cfg, JobStore(engine, single_writer=True), storage
    storage.close()


def add_job(store: JobStore, storage: Storage, data: bytes) -> str:
    job_id = new_job_id()
    put_upload(storage, job_id, data)
    store.create(NewJob(id=job_id, did="did:plc:abc", source_size=len(data),
                        content_hash=job_id), None)
    return job_id


async def run_until_terminal(executor: LocalExecutor, store: JobStore, ids: list[str]) -> None:
    await executor.start()
    for job_id in ids:
        job = await asyncio.to_thread(store.get, job_id)
        assert job is not None
        await executor.submit(job)
    try:
        for _ in range(1200):  # bounded: 2 minutes
            jobs = [await asyncio.to_thread(store.get, i) for i in ids]
            if all(j is not None and j.state.terminal for j in jobs):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # the delivery task cleans up right after the last write
    finally:
        await executor.stop()


def test_jobs_finish_with_cluster_shaped_details_and_nothing_blocks_the_loop(
    world: tuple[VideoConfig, JobStore, Storage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg, store, storage = world
    clip = make_clip(tmp_path / "clip.mp4", seconds=1, size="854x480").read_bytes()
    good = add_job(store, storage, clip)
    bad = add_job(store, storage, b"not a video\n" * 100)
    with no_blocking_rmtree(monkeypatch) as removed:
        asyncio.run(run_until_terminal(LocalExecutor(cfg, store, storage), store, [good, bad]))
    assert removed, "workspaces were cleared, in threads"

    done = store.get(good)
    assert done is not None and done.state is JobState.COMPLETED and done.blob
    # The same details shape the operator writes: per-rendition records, not a list of names.
    assert done.details.renditions == {"480p": RenditionStatus(100, Outcome.SUCCEEDED)}
    assert done.details.strategy == "single" and done.details.source is not None
    assert (done.details.source.width, done.details.source.height) == (854, 480)
    assert storage.has_output(good, "video.mp4") and storage.has_output(good, "playlist.m3u8")
    assert not storage.has_source(good)

    failed = store.get(bad)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.failure_code == "validation_failure"
    assert not storage.has_source(bad) and not storage.has_output(bad, "playlist.m3u8")


def test_kill_orphans_stops_only_the_jobs_own_encoders(tmp_path: Path) -> None:
    """After a SIGKILL, ffmpeg (in its own session) outlives the service: find it by job id."""
    fake = tmp_path / "ffmpeg-orphan"
    os.symlink(sys.executable, fake)
    mine, other = new_job_id(), new_job_id()
    sleep = "import time; time.sleep(120)"
    procs = [subprocess.Popen([str(fake), "-c", sleep, f"/x/jobs/{job}/source"],
                              start_new_session=True) for job in (mine, other)]
    try:
        assert kill_orphans(mine) == 1
        assert procs[0].wait(timeout=10) == -9
        assert procs[1].poll() is None, "another job's encoder keeps running"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
