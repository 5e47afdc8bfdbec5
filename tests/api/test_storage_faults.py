"""The embedded service when its S3 store fails: the store killed during an upload, while a
job encodes or publishes (briefly, and for longer than the retry budget), wrong
credentials and a missing bucket at startup. A dedicated S3 server, so killing it disturbs
no other test."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.didserver import DidServer
from tests.support.media import make_clip
from tests.support.s3 import S3Server, running_s3
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for
from tests.support.xrpc import SERVICE_DID, UPLOAD, upload_as, user, wait_for_job

pytestmark = [pytest.mark.s3, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3(tmp_path_factory.mktemp("faulty-s3")) as server:
        yield server


@pytest.fixture
def bucket(store: S3Server) -> str:
    if store.proc is None:  # a previous test left it down
        store.start(keep_ports=True)
    return store.new_bucket()


def service(tmp: Path, dids: DidServer, store: S3Server, bucket: str,
            **extra: str) -> ServiceProcess:
    return ServiceProcess(tmp, {"VIDEO_DID_PLC_URL": dids.url,
                                **store.env(bucket), **extra}).start()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("media") / "c.mp4", seconds=10,
                     size="1280x720").read_bytes()


def test_store_down_during_an_upload_is_a_503_and_leaves_nothing(
    tmp_path: Path, dids: DidServer, store: S3Server, bucket: str,
) -> None:
    svc = service(tmp_path, dids, store, bucket, VIDEO_S3_RETRY_S="60")
    who = user(dids)
    total = 100 << 20
    sent = 0
    killed = threading.Event()

    def body() -> Iterator[bytes]:
        nonlocal sent
        block = os.urandom(1 << 20)
        while sent < total:
            if sent >= 30_000_000 and not killed.is_set():
                store.kill()  # parts already uploaded; the multipart upload is open
                killed.set()
            sent += len(block)
            yield block

    try:
        try:
            resp = httpx.post(
                f"{svc.url}/xrpc/{UPLOAD}", params={"did": who.did}, content=body(),
                headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                         "content-type": "video/mp4", "content-length": str(total)},
                timeout=120)
        except httpx.HTTPError:  # the service may answer and close before the body ends
            pytest.fail("the service should answer the upload with an XRPC error")
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"] == "NotEnoughResources"
        assert "storage" in resp.json()["message"]
        store.start(keep_ports=True)
        # The abort is retried in the background until the store is back.
        wait_for(lambda: store.multipart_uploads(bucket) == [], timeout=60, interval=0.5,
                 what="the multipart upload aborted once the store returned")
        assert store.keys(bucket) == []
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.stop()


def test_store_down_briefly_while_encoding_the_job_still_completes(
    tmp_path: Path, dids: DidServer, store: S3Server, bucket: str, clip: bytes,
) -> None:
    svc = service(tmp_path, dids, store, bucket, VIDEO_S3_RETRY_S="120")
    who = user(dids)
    try:
        job_id = upload_as(svc, who, clip).json()["jobId"]
        wait_for_job(svc, job_id, ("JOB_STATE_ENCODING",), timeout=60, interval=0.05)
        store.kill()
        # The store stays down until the job has needed it and is waiting for it (however
        # long the encode takes on a loaded machine), then comes back within the budget.
        deadline = time.monotonic() + 180
        while "retrying" not in svc.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "retrying" in svc.logs()
        time.sleep(2)
        store.start(keep_ports=True)
        status, _ = wait_for_job(svc, job_id, timeout=240)
        assert status["state"] == "JOB_STATE_COMPLETED", status
        assert f"jobs/{job_id}/out/video.mp4" in store.keys(bucket)
        assert f"jobs/{job_id}/source" not in store.keys(bucket)
        # A player asking while the store is down gets a prompt 503, not a hang or a 500.
        base = f"{svc.url}/watch/{quote(who.did, safe='')}/{status['blob']['ref']['$link']}"
        store.kill()
        for name in ("playlist.m3u8", "video.mp4"):
            resp = httpx.get(f"{base}/{name}", timeout=30)
            assert resp.status_code == 503 and resp.json()["error"] == "NotEnoughResources"
    finally:
        svc.stop()
        if store.proc is None:
            store.start(keep_ports=True)


def test_store_down_for_longer_than_the_budget_fails_the_job_with_a_code(
    tmp_path: Path, dids: DidServer, store: S3Server, bucket: str, clip: bytes,
) -> None:
    svc = service(tmp_path, dids, store, bucket, VIDEO_S3_RETRY_S="3")
    try:
        job_id = upload_as(svc, user(dids), clip).json()["jobId"]
        wait_for_job(svc, job_id, ("JOB_STATE_ENCODING",), timeout=60, interval=0.05)
        store.kill()
        status, _ = wait_for_job(svc, job_id, timeout=120)
        assert status["state"] == "JOB_STATE_FAILED", status
        assert status["failureCode"] == "generic_failure"
        assert "storage" in status["error"]
        assert not (svc.data_dir / "scratch" / job_id).exists()
    finally:
        svc.stop()
        store.start(keep_ports=True)


@pytest.mark.parametrize("fault", ["wrong-credentials", "missing-bucket", "unreachable"])
def test_startup_stops_with_one_clear_line(
    tmp_path: Path, store: S3Server, bucket: str, fault: str,
) -> None:
    env = {**os.environ, "VIDEO_SERVICE_DID": "did:web:video.test",
           "VIDEO_DATA_DIR": str(tmp_path), **store.env(bucket)}
    expected = {
        "wrong-credentials": "check the S3 credentials",
        "missing-bucket": "bucket 'no-such-bucket' does not exist",
        "unreachable": "VIDEO_S3_ENDPOINT: cannot reach",
    }[fault]
    if fault == "wrong-credentials":
        env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    elif fault == "missing-bucket":
        env["VIDEO_S3_BUCKET"] = "no-such-bucket"
    else:
        env["VIDEO_S3_ENDPOINT"] = "http://127.0.0.1:9"
    proc = subprocess.run([sys.executable, "-m", "atproto_video.cli", "serve"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("atproto-video: configuration error: "), proc.stderr
    assert expected in lines[-1]
