"""The API side in cluster mode: an unreachable Kubernetes API never loses or blocks a job."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from atproto_video.core.config import VideoConfig
from atproto_video.core.jobs import Job, JobStore, NewJob, new_job_id
from atproto_video.core.lexicon import JobState
from atproto_video.core.storage import Storage, open_storage
from atproto_video.executor.kubernetes import KubernetesExecutor
from tests.support.blocking import no_blocking_rmtree
from tests.support.media import make_clip
from tests.support.storage import put_upload

DEAD_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def _api_down(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: bytes
) -> tuple[VideoConfig, JobStore, Storage, Job]:
    """Cluster mode whose Kubernetes API refuses connections, and one committed job."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(DEAD_KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                                "VIDEO_EXECUTOR": "kubernetes",
                                "VIDEO_STORAGE_DIR": str(tmp_path / "storage")})
    store = JobStore(engine)
    storage = open_storage(cfg)
    storage.prepare()
    job_id = new_job_id()
    job = store.create(NewJob(id=job_id, did="did:plc:abc", source_size=len(source),
                              content_hash="h", executor="kubernetes"), None)
    put_upload(storage, job_id, source)
    return cfg, store, storage, job


def test_submit_logs_and_returns_when_the_api_is_down(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=1, size="854x480")
    cfg, store, storage, job = _api_down(engine, tmp_path, monkeypatch, clip.read_bytes())
    job_id = job.id

    async def run() -> None:
        executor = KubernetesExecutor(cfg, store, storage)
        await executor.start()
        await executor.submit(job)
        await executor.stop()

    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    assert time.monotonic() - t0 < 30
    assert "operator will create it" in caplog.text
    kept = store.get(job_id)
    assert kept is not None and kept.state is JobState.CREATED
    # Planned before the VideoJob is attempted: the operator creates Jobs without probing.
    assert kept.details.plan is not None and kept.details.plan.renditions == ("480p",)
    assert [j.id for j in store.unfinished("kubernetes")] == [job_id]


def test_submit_fails_a_non_video_without_a_videojob(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The probe runs in the API: a non-video never reaches the cluster (no VideoJob, no pod)."""
    cfg, store, storage, job = _api_down(engine, tmp_path, monkeypatch, b"not a video at all")
    job_id = job.id

    async def run() -> None:
        executor = KubernetesExecutor(cfg, store, storage)
        await executor.submit(job)
        await executor.stop()

    with caplog.at_level(logging.WARNING), no_blocking_rmtree(monkeypatch) as removed:
        asyncio.run(run())
    assert removed, "the upload was removed, off the event loop"
    failed = store.get(job_id)
    assert failed is not None and failed.state is JobState.FAILED
    assert failed.failure_code == "validation_failure"
    assert "VideoJob" not in caplog.text  # never tried to reach the cluster
    assert not storage.has_source(job_id) and job_id not in storage.job_ids()
    assert store.unfinished("kubernetes") == []
