"""The multipart upload protocol against the service as a real process, with each storage
backend, driven by a client written to the Bluesky app's algorithm (tests/support/multipart.py).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.didserver import DidServer
from tests.support.identity import Identity
from tests.support.media import make_clip
from tests.support.multipart import (
    ABORT,
    FINISH,
    PART,
    START,
    UPLOAD_STATUS,
    MultipartClient,
)
from tests.support.s3 import S3Server
from tests.support.service import ServiceProcess
from tests.support.waiting import wait_for
from tests.support.xrpc import LIMITS, SERVICE_DID, user, wait_for_job

MiB = 1 << 20
BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]


def _start(request: pytest.FixtureRequest, data_dir: Path, dids: DidServer,
           **env: str) -> ServiceProcess:
    extra: dict[str, str] = {}
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        extra = server.env(server.new_bucket(), prefix="video")
    svc = ServiceProcess(data_dir, {"VIDEO_DID_PLC_URL": dids.url,
                                    "VIDEO_UPLOAD_SWEEP_INTERVAL_S": "0.5", **env, **extra})
    svc.s3 = request.getfixturevalue("s3_server") if extra else None  # type: ignore[attr-defined]
    return svc.start()


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            dids: DidServer) -> Iterator[ServiceProcess]:
    svc = _start(request, tmp_path_factory.mktemp("mp"), dids,
                 VIDEO_PROCESSING_CONCURRENCY="2", VIDEO_MAX_UPLOAD_BYTES=str(64 * MiB))
    yield svc
    svc.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def short(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          dids: DidServer) -> Iterator[ServiceProcess]:
    """Sessions expire after 10 s; three open uploads per DID; 4 videos a day."""
    svc = _start(request, tmp_path_factory.mktemp("mp-short"), dids,
                 VIDEO_UPLOAD_SESSION_TTL_S="10", VIDEO_MAX_OPEN_UPLOADS="3",
                 VIDEO_DAILY_VIDEO_LIMIT="4")
    yield svc
    svc.stop()


def stored(svc: ServiceProcess, job_id: str) -> bool:
    """Whether anything of ``job_id`` is in storage: files, objects or S3 multipart uploads."""
    s3: S3Server | None = svc.s3  # type: ignore[attr-defined]
    if s3 is not None:
        bucket = svc.env["VIDEO_S3_BUCKET"]
        keys = s3.keys(bucket) + [u["Key"] for u in s3.multipart_uploads(bucket)]
        return any(k.split("/")[2] == job_id for k in keys)
    return (svc.data_dir / "storage" / "jobs" / job_id).exists()


def client(svc: ServiceProcess, who: Identity, **kw: Any) -> MultipartClient:
    return MultipartClient(svc.url, who.did, lambda nsid: who.token(SERVICE_DID, nsid), **kw)


def fake_video(size: int) -> bytes:
    """Random bytes behind an MP4 signature: accepted at finish, failed later by the probe."""
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    return head + os.urandom(size - len(head))


def db(svc: ServiceProcess, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
        return conn.execute(sql, args).fetchall()


def limits(svc: ServiceProcess, who: Identity) -> dict[str, Any]:
    resp = httpx.get(f"{svc.url}/xrpc/{LIMITS}",
                     headers={"authorization": f"Bearer {who.token(SERVICE_DID, LIMITS)}"})
    body: dict[str, Any] = resp.json()
    return body


def err(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json()["error"]


@pytest.fixture(scope="module")
def big_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 2 s clip padded to 20 MiB with an MP4 ``free`` box: three parts, a valid file."""
    clip = make_clip(tmp_path_factory.mktemp("mp-media") / "clip.mp4", seconds=2,
                     size="640x360").read_bytes()
    pad = 20 * MiB - len(clip)
    return clip + struct.pack(">I", pad) + b"free" + b"\x00" * (pad - 8)


def test_app_algorithm_completes_with_a_failed_part_retried(
    service: ServiceProcess, dids: DidServer, big_clip: bytes
) -> None:
    who = user(dids)
    # Part 2's first attempt loses its connection half-way; the client retries it.
    up = client(service, who, fault=lambda n, attempt: "cut" if (n, attempt) == (2, 1) else None)
    answer = up.upload(big_clip)
    job_id = answer["completedJobId"]
    assert answer["jobStatus"]["jobId"] == job_id and answer["jobStatus"]["did"] == who.did
    parts = [(n, a, s) for kind, n, a, s in (e for e in up.log if e[0] == "part")]
    assert (2, 1, "_Cut") in parts and (2, 2, 200) in parts
    assert sorted(n for n, _, s in parts if s == 200) == [1, 2, 3]
    status, _ = wait_for_job(service, job_id, timeout=180)
    assert status["state"] == "JOB_STATE_COMPLETED", status
    assert status["blob"]["mimeType"] == "video/mp4"
    # The hash covers the whole file in order, as for a single-shot upload.
    assert db(service, "SELECT content_hash, source_size FROM video_job WHERE id = ?",
              job_id) == [(hashlib.sha256(big_clip).hexdigest(), len(big_clip))]
    left = limits(service, who)
    assert left["remainingDailyVideos"] == 24
    assert left["remainingDailyBytes"] == 10_000_000_000 - len(big_clip)
    wait_for(lambda: not db(service, "SELECT 1 FROM video_upload_reservation WHERE id = ?",
                            job_id), timeout=5, what="the reservation converted")
    up.close()


def test_parts_out_of_order_resent_and_finish_twice(
    service: ServiceProcess, dids: DidServer
) -> None:
    who = user(dids)
    up = client(service, who)
    data = fake_video(20 * MiB + 12345)
    session = up.start(len(data))
    job_id, size, count = session["jobId"], session["partSizeBytes"], session["partCount"]
    assert (size, count) == (8 * MiB, 3)
    assert session["expiresAt"].endswith("Z") and len(job_id) >= 30
    st = up.status(job_id)
    assert st == {"jobId": job_id, "partSizeBytes": size, "partCount": 3, "receivedParts": [],
                  "expiresAt": session["expiresAt"], "state": "created"}
    for n in (3, 1, 2, 2):  # out of order, and part 2 twice
        resp = up.put_part(job_id, n, data[(n - 1) * size:n * size])
        assert resp.status_code == 200, resp.text
    assert resp.json() == {"partNumber": 2, "sizeBytes": size}
    assert up.status(job_id)["receivedParts"] == [1, 2, 3]
    first = up.finish(job_id)
    assert first.status_code == 200, first.text
    assert first.json()["completedJobId"] == job_id
    again = up.finish(job_id)  # idempotent
    assert again.status_code == 200 and again.json()["completedJobId"] == job_id
    assert err(up.put_part(job_id, 1, data[:size])) == (400, "UploadAlreadyCompleted")
    st = up.status(job_id)
    assert st["state"] == "completed" and st["completedJobId"] == job_id
    assert st["jobStatus"]["jobId"] == job_id
    assert up.abort(job_id).json() == {"state": "completed", "completedJobId": job_id}
    assert db(service, "SELECT content_hash FROM video_job WHERE id = ?", job_id) == [
        (hashlib.sha256(data).hexdigest(),)]
    status, _ = wait_for_job(service, job_id, timeout=120)
    assert status["failureCode"] == "validation_failure"  # random bytes: the probe says no
    up.close()


def test_wrong_lengths_and_part_numbers(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(service, who)
    data = fake_video(9 * MiB)
    job_id = up.start(len(data))["jobId"]
    last = data[8 * MiB:]
    assert err(up.put_part(job_id, 1, data[:8 * MiB - 1])) == (400, "PartSizeMismatch")
    assert err(up.put_part(job_id, 2, data[:8 * MiB])) == (400, "PartSizeMismatch")
    assert err(up.put_part(job_id, 2, last + b"x")) == (400, "PartSizeMismatch")
    assert err(up.put_part(job_id, 3, last)) == (400, "InvalidPartNumber")
    assert err(up.put_part(job_id, 0, last)) == (400, "InvalidRequest")
    assert up.status(job_id)["receivedParts"] == []
    resp = up.finish(job_id)
    assert err(resp) == (400, "MissingParts") and "1, 2" in resp.json()["message"]
    assert up.put_part(job_id, 2, last).status_code == 200
    assert up.status(job_id)["receivedParts"] == [2]
    # Someone else's session is not found; an unknown one neither.
    other = client(service, user(dids))
    assert err(other.put_part(job_id, 1, data[:8 * MiB])) == (404, "UploadNotFound")
    assert err(other.finish(job_id)) == (404, "UploadNotFound")
    assert err(up.finish("0" * 40)) == (404, "UploadNotFound")
    assert up.abort(job_id).json() == {"state": "aborted"}
    up.close()
    other.close()


def test_missing_part_recovered_after_failed_finish(
    service: ServiceProcess, dids: DidServer
) -> None:
    who = user(dids)
    up = client(service, who, fault=lambda n, attempt: "skip" if n == 2 else None)
    data = fake_video(17 * MiB)
    answer = up.upload(data)
    assert ("finish", 400, "MissingParts") in up.log and ("status", "created") in up.log
    assert answer["completedJobId"]
    up.close()


def test_abort_releases_quota_and_removes_parts(
    service: ServiceProcess, dids: DidServer
) -> None:
    who = user(dids)
    up = client(service, who)
    data = fake_video(10 * MiB)
    job_id = up.start(len(data))["jobId"]
    assert limits(service, who)["remainingDailyVideos"] == 24  # held from the start
    assert limits(service, who)["remainingDailyBytes"] == 10_000_000_000 - len(data)
    assert up.put_part(job_id, 1, data[:8 * MiB]).status_code == 200
    assert stored(service, job_id)
    assert up.abort(job_id).json() == {"state": "aborted"}
    assert not stored(service, job_id)
    assert limits(service, who)["remainingDailyVideos"] == 25
    assert limits(service, who)["remainingDailyBytes"] == 10_000_000_000
    assert err(up.put_part(job_id, 2, data[8 * MiB:])) == (400, "UploadAborted")
    assert err(up.finish(job_id)) == (400, "UploadAborted")
    assert up.status(job_id)["state"] == "aborted"  # terminal sessions stay readable
    assert up.abort(job_id).json() == {"state": "aborted"}
    up.close()


def test_cancel_aborts(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(service, who, in_flight=1)
    # The user cancels while part 2 is about to go: no more parts, then abortUpload.
    up.fault = lambda n, attempt: up.cancelled.set() if n == 2 else None  # type: ignore[func-returns-value]
    answer = up.upload(fake_video(20 * MiB))
    assert answer["state"] == "aborted"
    assert [e[1] for e in up.log if e[0] == "part" and e[3] == 200] == [1]
    assert not stored(service, answer["jobId"])
    assert up.status(answer["jobId"])["state"] == "aborted"
    assert limits(service, who)["remainingDailyVideos"] == 25
    up.close()


def test_deduplication_on_finish(
    service: ServiceProcess, dids: DidServer, big_clip: bytes
) -> None:
    who = user(dids)
    up = client(service, who)
    data = big_clip  # a real video: its job lives on (failed jobs are not deduplicated)
    first = up.upload(data)["completedJobId"]
    session = up.start(len(data))["jobId"]
    up.send_parts(session, data, 8 * MiB, range(1, 4))
    second = up.finish(session).json()
    assert second["completedJobId"] == first != session
    assert up.status(session)["completedJobId"] == first
    assert not stored(service, session)
    assert limits(service, who)["remainingDailyVideos"] == 24  # spent once
    assert db(service, "SELECT count(*) FROM video_job WHERE did = ?", who.did) == [(1,)]
    up.close()


def test_unsupported_content_fails_the_session(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(service, who)
    data = b"definitely not a video " * 1000
    job_id = up.start(len(data))["jobId"]
    assert up.put_part(job_id, 1, data).status_code == 200
    assert err(up.finish(job_id)) == (400, "UnsupportedContentType")
    st = up.status(job_id)
    assert st["state"] == "failed" and "supported" in st["failureReason"]
    again = up.finish(job_id)
    assert err(again) == (400, "UploadFailed") and again.json()["message"] == st["failureReason"]
    assert err(up.put_part(job_id, 1, data)) == (400, "UploadFailed")
    assert up.abort(job_id).json() == {"state": "failed", "failureReason": st["failureReason"]}
    assert limits(service, who)["remainingDailyVideos"] == 25
    assert not stored(service, job_id)
    up.close()


def test_finishing_session_answers_not_ready(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(service, who)
    data = fake_video(MiB)
    job_id = up.start(len(data))["jobId"]
    assert up.put_part(job_id, 1, data).status_code == 200
    # Another replica is finishing it (as far as this one can tell from the database).
    db(service, "UPDATE video_upload_session SET state = 'finishing' WHERE id = ?", job_id)
    assert up.status(job_id)["state"] == "finishing"
    assert err(up.abort(job_id)) == (400, "UploadNotReady")
    assert err(up.finish(job_id)) == (400, "UploadNotReady")
    assert err(up.put_part(job_id, 1, data)) == (400, "UploadNotReady")
    db(service, "UPDATE video_upload_session SET state = 'created' WHERE id = ?", job_id)
    assert up.finish(job_id).status_code == 200
    up.close()


def test_start_refusals(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(service, who)

    def start(**body: Any) -> httpx.Response:
        return up.call("POST", START, json={"sizeBytes": MiB, "mimeType": "video/mp4", **body})

    assert err(start(sizeBytes=64 * MiB + 1)) == (400, "VideoTooLarge")
    assert err(start(mimeType="text/plain")) == (400, "UnsupportedContentType")
    assert err(start(durationMs=601_000)) == (400, "VideoTooLong")
    assert err(start(width=3000, height=100)) == (400, "BadAspectRatio")
    assert err(start(sizeBytes=0)) == (400, "InvalidRequest")
    assert start(mimeType="video/quicktime", durationMs=5000, width=1080,
                 height=1920).status_code == 200
    # Seed-mode tokens name the method called.
    wrong = httpx.post(f"{service.url}/xrpc/{START}",
                       json={"sizeBytes": 1, "mimeType": "video/mp4"},
                       headers={"authorization": f"Bearer {who.token(SERVICE_DID, PART)}"})
    assert err(wrong) == (401, "BadJwtLexiconMethod")
    for nsid in (FINISH, ABORT):
        resp = httpx.post(f"{service.url}/xrpc/{nsid}", json={"jobId": "x" * 40})
        assert err(resp) == (401, "AuthMissing")
    resp = httpx.get(f"{service.url}/xrpc/{UPLOAD_STATUS}", params={"jobId": "x" * 40})
    assert err(resp) == (401, "AuthMissing")
    up.close()


def test_fresh_token_after_401(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    issued: list[str] = []

    def tokens(nsid: str) -> str:
        issued.append(nsid)
        if nsid == PART and issued.count(PART) == 1:  # the first part token has expired
            return who.token(SERVICE_DID, nsid, exp=time.time() - 5)
        return who.token(SERVICE_DID, nsid)

    up = MultipartClient(service.url, who.did, tokens, in_flight=1)
    assert up.upload(fake_video(16 * MiB + 5))["completedJobId"]
    assert ("retry-401", PART) in up.log
    up.close()


def test_open_uploads_and_daily_limit(short: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(short, who)
    sessions = [up.start(MiB)["jobId"] for _ in range(3)]
    resp = up.call("POST", START, json={"sizeBytes": MiB, "mimeType": "video/mp4"})
    assert err(resp) == (429, "TooManyOpenUploads")
    assert up.abort(sessions[0]).status_code == 200
    data = fake_video(MiB)
    for job_id in sessions[1:]:
        assert up.put_part(job_id, 1, data).status_code == 200
        assert up.finish(job_id).status_code == 200
        data = fake_video(MiB)
    up.start(MiB)  # the third and fourth videos of the day, held
    up.start(MiB)
    resp = up.call("POST", START, json={"sizeBytes": MiB, "mimeType": "video/mp4"})
    assert err(resp) == (429, "DailyLimitExceeded")
    up.close()


def test_expiry_sweep(short: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    up = client(short, who)
    data = fake_video(9 * MiB)
    job_id = up.start(len(data))["jobId"]
    assert up.put_part(job_id, 1, data[:8 * MiB]).status_code == 200
    assert limits(short, who)["remainingDailyVideos"] == 3
    # The sweep, not a request, ends it: no call touches the session meanwhile.
    wait_for(lambda: db(short, "SELECT state FROM video_upload_session WHERE id = ?",
                        job_id) == [("expired",)], timeout=30, what="the session expired")
    assert not stored(short, job_id)
    assert db(short, "SELECT count(*) FROM video_upload_reservation WHERE id = ?",
              job_id) == [(0,)]
    assert limits(short, who)["remainingDailyVideos"] == 4
    st = up.status(job_id)
    assert st["state"] == "expired" and st["receivedParts"] == [1]
    assert err(up.put_part(job_id, 2, data[8 * MiB:])) == (400, "UploadExpired")
    assert err(up.finish(job_id)) == (400, "UploadExpired")
    assert up.abort(job_id).json() == {"state": "expired"}
    up.close()
