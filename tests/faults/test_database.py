"""The embedded service on Postgres while Postgres is stopped for 20 s: a job encoding, an
upload in flight and new uploads during the outage. Clients get a retryable 503, health turns
unready, and every accepted job completes once the database is back.

A dedicated Postgres server (stopping the suite's shared one would disturb other tests).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from atproto_video.core.db import video_upload_reservation
from tests.support.didserver import DidServer
from tests.support.figures import record_figure
from tests.support.media import make_clip
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for
from tests.support.xrpc import SERVICE_DID, UPLOAD, upload_as, user, wait_for_job

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(600)]

OUTAGE_S = 20.0
PART_SIZE = 8 << 20
START, PART, FINISH = ("app.bsky.video.startUpload", "app.bsky.video.uploadPart",
                       "app.bsky.video.finishUpload")


@pytest.fixture
def outage_pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


def health(svc: ServiceProcess) -> int:
    try:
        return httpx.get(f"{svc.url}/xrpc/_health", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def reservations(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(
                video_upload_reservation)).scalar_one())
    finally:
        engine.dispose()


def stored(svc: ServiceProcess) -> set[str]:
    root = svc.data_dir / "storage" / "jobs"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def xrpc(svc: ServiceProcess, who: Any, nsid: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {who.token(SERVICE_DID, nsid)}"}
    return httpx.post(f"{svc.url}/xrpc/{nsid}", headers=headers, timeout=60, **kw)


def assert_retryable_503(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "NotEnoughResources", resp.text
    assert int(resp.headers["retry-after"]) > 0


def test_postgres_stopped_while_encoding_and_uploading(
    tmp_path: Path, dids: DidServer, outage_pg: PostgresServer
) -> None:
    clip = make_clip(tmp_path / "long.mp4", seconds=12, size="1280x720").read_bytes()
    # More than one multipart part: nearly lossless, so large.
    big = make_clip(tmp_path / "big.mp4", seconds=6, size="1280x720", video=(
        "-c:v", "libx264", "-preset", "ultrafast", "-qp", "4", "-pix_fmt", "yuv420p",
    )).read_bytes()
    parts = [big[i:i + PART_SIZE] for i in range(0, len(big), PART_SIZE)]
    assert len(parts) >= 2
    after_clip = make_clip(tmp_path / "short.mp4", seconds=2, size="640x360").read_bytes()
    svc = ServiceProcess(tmp_path / "svc", {"VIDEO_DID_PLC_URL": dids.url,
                                            "VIDEO_DB_URL": outage_pg.url}).start()
    who = user(dids)
    halted = threading.Event()
    in_flight: dict[str, Any] = {}

    def slow_body() -> Iterator[bytes]:
        yield os.urandom(1 << 20)
        halted.wait(60)  # the rest arrives once the database is gone
        yield os.urandom(1 << 20)

    def upload_in_flight() -> None:
        in_flight["resp"] = httpx.post(
            f"{svc.url}/xrpc/{UPLOAD}", params={"did": who.did}, content=slow_body(),
            headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                     "content-type": "video/mp4", "content-length": str(2 << 20)},
            timeout=60)

    try:
        before = upload_as(svc, who, clip).json()["jobId"]
        wait_for_job(svc, before, ("JOB_STATE_ENCODING",), timeout=60, interval=0.05)
        session = xrpc(svc, who, START, json={"sizeBytes": len(big), "mimeType": "video/mp4"})
        assert session.status_code == 200, session.text
        session_id = session.json()["jobId"]
        first = xrpc(svc, who, PART, params={"jobId": session_id, "partNumber": 1},
                     content=parts[0])
        assert first.status_code == 200, first.text
        sender = threading.Thread(target=upload_in_flight)
        sender.start()
        wait_for(lambda: len(stored(svc)) == 3, timeout=30, what="the in-flight upload stored")

        outage_pg.halt()
        down_at = time.monotonic()
        halted.set()
        sender.join(60)
        assert_retryable_503(in_flight["resp"])  # stored, then the commit failed: refused
        assert_retryable_503(upload_as(svc, who, b"\x00" * 1000))  # the reservation failed
        for number, part in enumerate(parts[1:], 2):  # a multipart client keeps sending
            assert_retryable_503(xrpc(svc, who, PART, content=part,
                                      params={"jobId": session_id, "partNumber": number}))
        assert_retryable_503(xrpc(svc, who, FINISH, json={"jobId": session_id}))
        wait_for(lambda: health(svc) == 503, timeout=10, what="health unready")
        # Nothing of the refused uploads is left; the open session keeps its parts.
        assert stored(svc) == {before, session_id}
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert svc.proc is not None and svc.proc.poll() is None

        outage_pg.resume()
        up_at = time.monotonic()
        wait_for(lambda: health(svc) == 200, timeout=60, what="health ready again")
        record_figure("embedded_postgres_outage", "health_ready_after_db_back",
                      time.monotonic() - up_at)
        resp = upload_as(svc, who, after_clip)
        record_figure("embedded_postgres_outage", "upload_accepted_after_db_back",
                      time.monotonic() - up_at)
        assert resp.status_code == 200, resp.text
        after = resp.json()["jobId"]
        status, _ = wait_for_job(svc, before, timeout=240)
        assert status["state"] == "JOB_STATE_COMPLETED", status
        record_figure("embedded_postgres_outage", "job_encoding_during_outage_completed_after",
                      time.monotonic() - up_at)
        for number, part in enumerate(parts[1:], 2):  # the client's retries, now answered
            resent = xrpc(svc, who, PART, content=part,
                          params={"jobId": session_id, "partNumber": number})
            assert resent.status_code == 200, resent.text
        finished = xrpc(svc, who, FINISH, json={"jobId": session_id})
        assert finished.status_code == 200, finished.text
        status, _ = wait_for_job(svc, finished.json()["completedJobId"], timeout=240)
        assert status["state"] == "JOB_STATE_COMPLETED", status
        status, _ = wait_for_job(svc, after, timeout=120)
        assert status["state"] == "JOB_STATE_COMPLETED", status
        # The refused uploads gave their reservations back once the database returned.
        wait_for(lambda: reservations(outage_pg.url) == 0, timeout=30,
                 what="every reservation released")
        limits = httpx.get(f"{svc.url}/xrpc/app.bsky.video.getUploadLimits", headers={
            "authorization": f"Bearer {who.token(SERVICE_DID, 'app.bsky.video.getUploadLimits')}"
        }, timeout=10).json()
        assert limits["remainingDailyVideos"] == 25 - 3, limits
        assert "unexpected executor error" not in svc.logs()
    finally:
        halted.set()
        svc.stop()
        if not outage_pg.running:
            outage_pg.resume()
