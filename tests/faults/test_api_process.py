"""The embedded service SIGKILLed: in the middle of a streaming upload (nothing may be left:
no reservation, no file, no object, no quota held), and with multipart sessions open or cut
off mid-finish (parts already sent survive; the client finishes after the restart).

Jobs in progress when the process is SIGKILLed resume and complete:
tests/api/test_service.py::test_restart_resumes_jobs.
"""

from __future__ import annotations

import socket
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
from tests.support.s3 import S3Server
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for
from tests.support.xrpc import SERVICE_DID, UPLOAD, user, wait_for_job

pytestmark = pytest.mark.timeout(600)

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]
START = "app.bsky.video.startUpload"
PART = "app.bsky.video.uploadPart"
FINISH = "app.bsky.video.finishUpload"
UPLOAD_STATUS = "app.bsky.video.getUploadStatus"
LIMITS = "app.bsky.video.getUploadLimits"
PART_SIZE = 8 << 20


@pytest.fixture(params=BACKENDS)
def svc(request: pytest.FixtureRequest, tmp_path: Path,
        dids: DidServer) -> Iterator[ServiceProcess]:
    env: dict[str, str] = {}
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        env = server.env(server.new_bucket(), prefix="video/")
        request.node.s3 = server
    service = ServiceProcess(tmp_path / "svc", {"VIDEO_DID_PLC_URL": dids.url, **env}).start()
    service.s3 = getattr(request.node, "s3", None)  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        service.stop()


def stored(svc: ServiceProcess) -> set[str]:
    """Job ids with anything in storage: objects, open multipart uploads, directories."""
    server: S3Server | None = svc.s3  # type: ignore[attr-defined]
    if server is not None:
        bucket = svc.env["VIDEO_S3_BUCKET"]
        keys = server.keys(bucket) + [u["Key"] for u in server.multipart_uploads(bucket)]
        return {k.split("/")[2] for k in keys}
    root = svc.data_dir / "storage" / "jobs"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def db_rows(svc: ServiceProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
        return conn.execute(sql, args).fetchall()


def limits(svc: ServiceProcess, who: Identity) -> dict[str, Any]:
    resp = httpx.get(f"{svc.url}/xrpc/{LIMITS}", timeout=10,
                     headers={"authorization": f"Bearer {who.token(SERVICE_DID, LIMITS)}"})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def restart_after_kill(svc: ServiceProcess, test: str) -> None:
    svc.kill()
    t0 = time.monotonic()
    svc.start()
    record_figure(test, "restart_to_healthy", time.monotonic() - t0)


def call(svc: ServiceProcess, who: Identity, nsid: str, *, json: Any = None,
         params: dict[str, Any] | None = None, content: bytes | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {who.token(SERVICE_DID, nsid)}"}
    if content is not None:
        headers["content-type"] = "application/octet-stream"
    method = "GET" if nsid == UPLOAD_STATUS else "POST"
    return httpx.request(method, f"{svc.url}/xrpc/{nsid}", json=json, params=params,
                         content=content, headers=headers, timeout=60)


def test_sigkill_mid_upload_leaves_nothing(svc: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    full = limits(svc, who)
    total, sent = 40_000_000, 20_000_000  # on S3, at least two parts are already stored
    sock = socket.create_connection(("127.0.0.1", svc.port))
    try:
        sock.sendall(
            (f"POST /xrpc/{UPLOAD}?did={who.did} HTTP/1.1\r\nHost: x\r\n"
             f"Authorization: Bearer {who.token(SERVICE_DID, UPLOAD)}\r\n"
             f"Content-Type: video/mp4\r\nContent-Length: {total}\r\n\r\n").encode())
        chunk = b"\x00" * (1 << 20)
        for _ in range(sent // len(chunk)):
            sock.sendall(chunk)
        wait_for(lambda: stored(svc), timeout=30, what="the upload partly stored")
        wait_for(lambda: db_rows(svc, "SELECT id FROM video_upload_reservation"), timeout=10,
                 what="the reservation held")
        restart_after_kill(svc, f"sigkill_mid_upload_{svc.env.get('VIDEO_STORAGE', 'local')}")
    finally:
        sock.close()
    # Ended at startup, not when the reservation would expire (2 h).
    assert stored(svc) == set()
    assert db_rows(svc, "SELECT id FROM video_upload_reservation") == []
    assert db_rows(svc, "SELECT count(*) FROM video_job") == [(0,)]
    assert limits(svc, who) == full
    assert db_rows(svc, "SELECT open FROM video_open_uploads WHERE did = ?", who.did) == [(0,)]


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real video of more than one 8 MiB part (nearly lossless, so large)."""
    data = make_clip(tmp_path_factory.mktemp("media") / "big.mp4", seconds=6, size="1280x720",
                     video=("-c:v", "libx264", "-preset", "ultrafast", "-qp", "4",
                            "-pix_fmt", "yuv420p")).read_bytes()
    assert len(data) > PART_SIZE
    return data


def parts_of(data: bytes) -> list[bytes]:
    return [data[i:i + PART_SIZE] for i in range(0, len(data), PART_SIZE)]


def start(svc: ServiceProcess, who: Identity, data: bytes) -> str:
    resp = call(svc, who, START, json={"sizeBytes": len(data), "mimeType": "video/mp4"})
    assert resp.status_code == 200, resp.text
    job_id: str = resp.json()["jobId"]
    return job_id


def send_part(svc: ServiceProcess, who: Identity, job_id: str, number: int,
              part: bytes) -> None:
    resp = call(svc, who, PART, params={"jobId": job_id, "partNumber": number}, content=part)
    assert resp.status_code == 200, resp.text


def test_multipart_sessions_survive_sigkill(
    svc: ServiceProcess, dids: DidServer, big_clip: bytes
) -> None:
    who = user(dids)
    parts = parts_of(big_clip)
    open_id = start(svc, who, big_clip)
    send_part(svc, who, open_id, 1, parts[0])
    # A second session whose finish is cut off: its row says finishing when the process
    # dies (the finish itself takes milliseconds here, too short to hit with a kill).
    cut_id = start(svc, who, big_clip[::-1])
    for number, part in enumerate(parts_of(big_clip[::-1]), 1):
        send_part(svc, who, cut_id, number, part)
    svc.kill()
    with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
        conn.execute("UPDATE video_upload_session SET state = 'finishing' WHERE id = ?",
                     (cut_id,))
    restart_after_kill(svc, f"sigkill_multipart_{svc.env.get('VIDEO_STORAGE', 'local')}")

    # The open session: part 1 is still there, the client sends the rest and finishes.
    status = call(svc, who, UPLOAD_STATUS, params={"jobId": open_id}).json()
    assert status["state"] == "created" and status["receivedParts"] == [1], status
    for number, part in enumerate(parts[1:], 2):
        send_part(svc, who, open_id, number, part)
    resp = call(svc, who, FINISH, json={"jobId": open_id})
    assert resp.status_code == 200, resp.text
    job, _ = wait_for_job(svc, resp.json()["completedJobId"], timeout=240)
    assert job["state"] == "JOB_STATE_COMPLETED", job

    # The finish cut off is open again with its parts, not stuck in "finishing".
    status = call(svc, who, UPLOAD_STATUS, params={"jobId": cut_id}).json()
    assert status["state"] == "created", status
    assert status["receivedParts"] == list(range(1, len(parts) + 1)), status
    resp = call(svc, who, FINISH, json={"jobId": cut_id})
    # Reversed bytes are no container: the finish ends the session, failed with a reason.
    assert resp.status_code == 400 and resp.json()["error"] == "UnsupportedContentType", resp.text
    status = call(svc, who, UPLOAD_STATUS, params={"jobId": cut_id}).json()
    assert status["state"] == "failed" and status["failureReason"], status
    assert stored(svc) == {open_id}  # only the completed job's outputs
    assert db_rows(svc, "SELECT id FROM video_upload_reservation") == []
