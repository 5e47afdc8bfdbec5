"""The embedded service with its storage volume full (a 64 MiB tmpfs mounted by the test).

A job encoding when the volume fills fails with ``encoding_failure`` and a message naming the
full storage, its files removed; uploads get a retryable 503 ``NotEnoughResources`` saying the
storage is full (refused before reading when the declared size cannot fit, or when a write is
refused), leaving no file and no reservation; once space is back the next upload is accepted
and completes, without a restart. Twice: with only the storage root on the volume, and with
the whole data directory there (the default layout), where the SQLite file cannot grow either.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.didserver import DidServer
from tests.support.figures import record_figure
from tests.support.identity import Identity
from tests.support.media import make_clip
from tests.support.service import ServiceProcess
from tests.support.tmpfs import fill, small_tmpfs
from tests.support.waiting import wait_for
from tests.support.xrpc import SERVICE_DID, UPLOAD, upload_as, user, wait_for_job

pytestmark = pytest.mark.timeout(600)

VOLUME_MIB = 64
#: Left free for the upload checks: less than one 1 MiB write buffer, so a write is refused.
LEFT_FREE = 256 << 10
START, PART, UPLOAD_STATUS, LIMITS = (
    "app.bsky.video.startUpload", "app.bsky.video.uploadPart",
    "app.bsky.video.getUploadStatus", "app.bsky.video.getUploadLimits")


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "volume", VOLUME_MIB) as path:
        yield path


@pytest.fixture
def svc(tmp_path: Path, volume: Path, dids: DidServer) -> Iterator[ServiceProcess]:
    service = ServiceProcess(tmp_path / "svc", {
        "VIDEO_DID_PLC_URL": dids.url, "VIDEO_STORAGE_DIR": str(volume),
        "VIDEO_PROCESSING_CONCURRENCY": "1"}).start()
    try:
        yield service
    finally:
        service.stop()


def files_of(volume: Path, job_id: str) -> list[Path]:
    return [p for p in (volume / "jobs" / job_id).rglob("*") if p.is_file()]


def job_dirs(volume: Path) -> set[str]:
    root = volume / "jobs"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def reservations(svc: ServiceProcess) -> int:
    # closing(): a connection left to the garbage collector would keep the volume busy.
    with contextlib.closing(sqlite3.connect(svc.data_dir / "video.sqlite3")) as conn:
        return int(conn.execute("SELECT count(*) FROM video_upload_reservation").fetchone()[0])


def call(svc: ServiceProcess, who: Identity, nsid: str, *, json: Any = None,
         params: dict[str, Any] | None = None, content: bytes | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {who.token(SERVICE_DID, nsid)}"}
    if content is not None:
        headers["content-type"] = "application/octet-stream"
    method = "GET" if nsid in (UPLOAD_STATUS, LIMITS) else "POST"
    return httpx.request(method, f"{svc.url}/xrpc/{nsid}", json=json, params=params,
                         content=content, headers=headers, timeout=60)


def assert_storage_full(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["error"] == "NotEnoughResources", body
    assert "storage is full" in body["message"], body
    assert int(resp.headers["retry-after"]) > 0


def test_storage_full(svc: ServiceProcess, volume: Path, dids: DidServer,
                      tmp_path: Path) -> None:
    who = user(dids)
    long_clip = make_clip(tmp_path / "long.mp4", seconds=20, size="1280x720").read_bytes()
    short_clip = make_clip(tmp_path / "short.mp4", seconds=2).read_bytes()

    # A job encoding when the volume fills: it fails with a reason, and its files go.
    resp = upload_as(svc, who, long_clip)
    assert resp.status_code == 200, resp.text
    encoding_id = resp.json()["jobId"]
    wait_for_job(svc, encoding_id,
                 lambda st: st["state"] == "JOB_STATE_ENCODING" and st.get("progress", 0) > 0,
                 timeout=120)
    fill(volume, "filler-1")
    failed, _ = wait_for_job(svc, encoding_id, timeout=180)
    assert failed["state"] == "JOB_STATE_FAILED", failed
    assert failed["failureCode"] == "encoding_failure", failed
    assert "ran out of storage space" in failed["error"], failed
    wait_for(lambda: not files_of(volume, encoding_id), timeout=30,
             what="the failed job's files removed")
    held = call(svc, who, LIMITS).json()

    # A multipart session opened while there was room, and the volume filled again.
    part = secrets.token_bytes(3 << 20)
    resp = call(svc, who, START, json={"sizeBytes": len(part), "mimeType": "video/mp4"})
    assert resp.status_code == 200, resp.text
    session_id = resp.json()["jobId"]
    fill(volume, "filler-2", leave=LEFT_FREE)

    # Declared sizes that cannot fit are refused before a byte is read.
    assert_storage_full(upload_as(svc, who, part))
    assert_storage_full(call(svc, who, START, json={"sizeBytes": len(part),
                                                    "mimeType": "video/mp4"}))
    # A body of unknown length (chunked) runs into the full volume while being written.
    resp = httpx.post(f"{svc.url}/xrpc/{UPLOAD}", params={"did": who.did},
                      content=iter([part[i:i + (64 << 10)]
                                    for i in range(0, len(part), 64 << 10)]),
                      headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                               "content-type": "video/mp4"}, timeout=60)
    assert_storage_full(resp)
    # A part that does not fit ends its session: failed with the reason, its file removed.
    resp = call(svc, who, PART, params={"jobId": session_id, "partNumber": 1}, content=part)
    assert_storage_full(resp)
    status = call(svc, who, UPLOAD_STATUS, params={"jobId": session_id}).json()
    assert status["state"] == "failed" and "storage is full" in status["failureReason"], status

    assert job_dirs(volume) <= {encoding_id}, job_dirs(volume)
    assert not files_of(volume, encoding_id)
    assert reservations(svc) == 0
    assert call(svc, who, LIMITS).json() == held  # every reservation was released

    # Space back: the next upload is accepted and completes, no restart.
    for filler in ("filler-1", "filler-2"):
        (volume / filler).unlink()
    freed = time.monotonic()
    resp = upload_as(svc, who, short_clip)
    accepted = time.monotonic()
    assert resp.status_code == 200, resp.text
    done, _ = wait_for_job(svc, resp.json()["jobId"], timeout=180)
    completed = time.monotonic()
    assert done["state"] == "JOB_STATE_COMPLETED", done
    record_figure("storage_full", "space_back_to_upload_accepted", accepted - freed)
    record_figure("storage_full", "space_back_to_job_completed", completed - freed)


def test_storage_full_with_the_database_on_it(tmp_path: Path, dids: DidServer) -> None:
    """The default layout: VIDEO_DATA_DIR on the full volume, the SQLite file included. A
    database write refused for want of space is waited for like a database outage."""
    who = user(dids)
    long_clip = make_clip(tmp_path / "long.mp4", seconds=20, size="1280x720").read_bytes()
    short_clip = make_clip(tmp_path / "short.mp4", seconds=2).read_bytes()
    with small_tmpfs(tmp_path / "volume", VOLUME_MIB) as volume:
        svc = ServiceProcess(volume / "data", {"VIDEO_DID_PLC_URL": dids.url,
                                               "VIDEO_PROCESSING_CONCURRENCY": "1"})
        svc.log_path = tmp_path / "service.log"  # not on the volume: the log must survive
        svc.start()
        try:
            resp = upload_as(svc, who, long_clip)
            assert resp.status_code == 200, resp.text
            encoding_id = resp.json()["jobId"]
            wait_for_job(svc, encoding_id, lambda st: st["state"] == "JOB_STATE_ENCODING"
                         and st.get("progress", 0) > 0, timeout=120)
            fill(volume, "filler-1")
            # Not stuck in ENCODING: its files go first, which lets the database write.
            failed, _ = wait_for_job(svc, encoding_id, timeout=180)
            assert failed["state"] == "JOB_STATE_FAILED", failed
            assert failed["failureCode"] == "encoding_failure", failed
            assert "ran out of storage space" in failed["error"], failed
            storage = volume / "data" / "storage"
            assert not files_of(storage, encoding_id)

            fill(volume, "filler-2")  # full again, to the last byte
            assert_storage_full(upload_as(svc, who, short_clip))
            resp = httpx.post(f"{svc.url}/xrpc/{UPLOAD}", params={"did": who.did},
                              content=iter([short_clip]),
                              headers={"authorization":
                                       f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                                       "content-type": "video/mp4"}, timeout=60)
            assert_storage_full(resp)
            assert job_dirs(storage) <= {encoding_id}, job_dirs(storage)

            for filler in ("filler-1", "filler-2"):
                (volume / filler).unlink()
            freed = time.monotonic()
            resp = upload_as(svc, who, short_clip)
            accepted = time.monotonic()
            assert resp.status_code == 200, resp.text
            done, _ = wait_for_job(svc, resp.json()["jobId"], timeout=180)
            completed = time.monotonic()
            assert done["state"] == "JOB_STATE_COMPLETED", done
            record_figure("storage_full_db", "space_back_to_upload_accepted", accepted - freed)
            record_figure("storage_full_db", "space_back_to_job_completed", completed - freed)
            wait_for(lambda: reservations(svc) == 0, timeout=30, what="reservations released")
        finally:
            svc.stop()
