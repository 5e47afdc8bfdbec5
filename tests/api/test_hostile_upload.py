"""An HLS playlist disguised as an MP4, uploaded through the API, fails without being followed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.didserver import DidServer
from tests.support.hostile import ReaderWatcher, hls_playlist
from tests.support.service import ServiceProcess
from tests.support.xrpc import upload_as, user, wait_for_job


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, dids: DidServer) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("svc"), {"VIDEO_DID_PLC_URL": dids.url}).start()
    yield svc
    svc.stop()


@pytest.mark.parametrize("target", ["file:///etc/passwd", "http://127.0.0.1:9/seg.ts"])
def test_playlist_upload_is_a_validation_failure(
    service: ServiceProcess, dids: DidServer, target: str
) -> None:
    resp = upload_as(service, user(dids), hls_playlist(target), ctype="video/mp4")
    assert resp.status_code == 200
    status, _ = wait_for_job(service, resp.json()["jobId"], timeout=120)
    assert status["state"] == "JOB_STATE_FAILED"
    assert status["failureCode"] == "validation_failure"
    assert "root:" not in status["error"]


def test_referenced_file_is_never_opened(
    service: ServiceProcess, dids: DidServer, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.ts"
    os.mkfifo(secret)  # any open for reading would be seen by the watcher
    with ReaderWatcher(secret) as watcher:
        resp = upload_as(service, user(dids), hls_playlist(f"file://{secret}"), ctype="video/mp4")
        status, _ = wait_for_job(service, resp.json()["jobId"], timeout=120)
    assert status["state"] == "JOB_STATE_FAILED"
    assert status["failureCode"] == "validation_failure"
    assert not watcher.opened
