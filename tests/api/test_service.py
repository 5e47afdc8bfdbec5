"""The embedded service end to end: a real process, real tokens, real HTTP, real ffmpeg."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from atproto_video.api.service import VideoService
from atproto_video.core.blob import cid_for_bytes
from atproto_video.core.config import VideoConfig
from tests.support.didserver import DidServer
from tests.support.figures import record_figure
from tests.support.identity import Identity
from tests.support.media import make_clip, play_hls
from tests.support.metrics import scrape
from tests.support.s3 import S3Server
from tests.support.service import ServiceProcess, assert_monotonic, job_count, vm_hwm_kb
from tests.support.waiting import free_port, wait_for
from tests.support.xrpc import (
    LIMITS,
    SERVICE_DID,
    STATUS,
    UPLOAD,
    upload_as,
    user,
    wait_for_job,
)

#: Every test here runs against both storage backends: a local directory and a real S3 server.
BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]


def storage_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of the backend a fixture is parametrized with (a fresh bucket for S3)."""
    if request.param == "local":
        return {}
    server: S3Server = request.getfixturevalue("s3_server")
    return server.env(server.new_bucket(), prefix="video")


def stored_jobs(svc: ServiceProcess) -> set[str]:
    """Job ids with anything in storage: objects, incomplete multipart uploads, directories."""
    if svc.env.get("VIDEO_STORAGE") == "s3":
        server = S3_SERVERS[svc.env["VIDEO_S3_ENDPOINT"]]
        bucket = svc.env["VIDEO_S3_BUCKET"]
        keys = server.keys(bucket) + [u["Key"] for u in server.multipart_uploads(bucket)]
        return {k.split("/")[2] for k in keys}
    root = svc.data_dir / "storage" / "jobs"
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


S3_SERVERS: dict[str, S3Server] = {}


@pytest.fixture(scope="module", params=BACKENDS)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dids: DidServer
) -> Iterator[ServiceProcess]:
    env = storage_env(request)
    if env:
        S3_SERVERS[env["VIDEO_S3_ENDPOINT"]] = request.getfixturevalue("s3_server")
    svc = ServiceProcess(
        tmp_path_factory.mktemp("svc"),
        {"VIDEO_DID_PLC_URL": dids.url, "VIDEO_PROCESSING_CONCURRENCY": "2", **env},
    ).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(
        tmp_path_factory.mktemp("media") / "clip.mp4", seconds=2, size="640x360"
    ).read_bytes()


def test_upload_to_completed(service: ServiceProcess, dids: DidServer, clip: bytes) -> None:
    who = user(dids)
    resp = upload_as(service, who, clip)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # Production answers with the bare job status; lexicon clients read jobStatus (SPEC 1).
    assert body["jobId"] == body["jobStatus"]["jobId"]
    assert body["did"] == who.did and body["state"] == "JOB_STATE_CREATED"
    assert len(body["jobId"]) >= 30

    status, seen = wait_for_job(service, body["jobId"], timeout=120)
    assert status["state"] == "JOB_STATE_COMPLETED", status
    assert_monotonic(seen)  # states only forward, progress never back within a state
    assert not {"JOB_STATE_UPLOADING", "JOB_STATE_UPLOADED"} & {s for s, _ in seen}  # no PDS
    assert status["progress"] == 100

    blob = status["blob"]
    assert blob["$type"] == "blob" and blob["mimeType"] == "video/mp4"
    cid = blob["ref"]["$link"]
    base = f"{service.url}/watch/{quote(who.did, safe='')}/{cid}"
    # A real HLS player plays it: playlists from the service, segments wherever they are.
    assert play_hls(f"{base}/playlist.m3u8") == 60  # 2 s at 30 fps
    mp4 = httpx.get(f"{base}/video.mp4", timeout=30, follow_redirects=True)
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    assert cid_for_bytes(mp4.content) == cid and len(mp4.content) == blob["size"]

    master = httpx.get(f"{base}/playlist.m3u8", timeout=10)
    assert master.status_code == 200
    assert master.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    variants = [line for line in master.text.splitlines() if line and not line.startswith("#")]
    assert variants == ["360p/video.m3u8"]  # never above the 640x360 source
    assert "RESOLUTION=640x360" in master.text
    variant = httpx.get(f"{base}/360p/video.m3u8", timeout=10)
    assert "#EXT-X-ENDLIST" in variant.text
    segment = next(line for line in variant.text.splitlines() if line and not line.startswith("#"))
    seg = httpx.get(f"{base}/360p/{segment}", timeout=10, follow_redirects=True)
    assert seg.status_code == 200 and len(seg.content) > 0
    thumb = httpx.get(f"{base}/thumbnail.jpg", timeout=10, follow_redirects=True)
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    for sneaky in ("..%2F..%2Fsource", "360p%2F..%2F..%2Fsource", ".hidden"):
        assert httpx.get(f"{base}/{sneaky}", timeout=10).status_code == 404
    assert httpx.get(f"{service.url}/watch/did%3Aplc%3Ax/{cid}/video.mp4").status_code == 404

    # The same bytes again: the existing job, not a new one, and no quota spent (SPEC 1).
    limits_before = httpx.get(
        f"{service.url}/xrpc/{LIMITS}",
        headers={"authorization": f"Bearer {who.token(SERVICE_DID, LIMITS)}"},
    ).json()
    stored_before = stored_jobs(service)
    again = upload_as(service, who, clip)
    assert again.status_code == 200
    assert stored_jobs(service) == stored_before, "a duplicate leaves nothing behind"
    assert again.json()["jobId"] == body["jobId"] and again.json()["error"] == "already_exists"
    limits_after = httpx.get(
        f"{service.url}/xrpc/{LIMITS}",
        headers={"authorization": f"Bearer {who.token(SERVICE_DID, LIMITS)}"},
    ).json()
    assert limits_after == limits_before
    assert limits_after["remainingDailyVideos"] == 24
    assert body["jobId"] in stored_jobs(service), "the outputs stay"
    if service.env.get("VIDEO_STORAGE") == "s3":
        assert not (service.data_dir / "scratch" / body["jobId"]).exists()


def test_get_upload_limits(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids, alg="ES256", key_form="legacy")
    resp = httpx.get(
        f"{service.url}/xrpc/{LIMITS}",
        headers={"authorization": f"Bearer {who.token(SERVICE_DID, LIMITS)}"},
    )
    assert resp.status_code == 200
    assert resp.json() == {
        "canUpload": True,
        "remainingDailyVideos": 25,
        "remainingDailyBytes": 10_000_000_000,
    }
    wrong = httpx.get(
        f"{service.url}/xrpc/{LIMITS}",
        headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}"},
    )
    assert (wrong.status_code, wrong.json()["error"]) == (401, "BadJwtLexiconMethod")


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("no token", "AuthMissing"),
        ("wrong aud", "BadJwtAudience"),
        ("wrong lxm", "BadJwtLexiconMethod"),
        ("expired", "JwtExpired"),
        ("bad signature", "BadJwtSignature"),
        ("did param mismatch", "BadJwtIss"),
    ],
)
def test_auth_failures(
    service: ServiceProcess, dids: DidServer, clip: bytes, case: str, error: str
) -> None:
    who = user(dids)
    stranger = Identity(who.did)  # same DID, different key
    tokens = {
        "wrong aud": who.token("did:web:other.example", UPLOAD),
        "wrong lxm": who.token(SERVICE_DID, STATUS),
        "expired": who.token(SERVICE_DID, UPLOAD, exp=time.time() - 1),
        "bad signature": stranger.token(SERVICE_DID, UPLOAD),
        "did param mismatch": user(dids).token(SERVICE_DID, UPLOAD),
    }
    headers = {"content-type": "video/mp4"}
    if case != "no token":
        headers["authorization"] = f"Bearer {tokens[case]}"
    resp = httpx.post(
        f"{service.url}/xrpc/{UPLOAD}", params={"did": who.did}, content=clip, headers=headers
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == error and resp.json()["message"]
    assert job_count(service, who.did) == 0


def test_empty_body(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    resp = upload_as(service, who, b"")
    assert (resp.status_code, resp.json()["error"]) == (400, "InvalidRequest")
    assert job_count(service, who.did) == 0


def test_non_video_body_fails_validation(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    resp = upload_as(service, who, b"this is not a video\n" * 100, ctype="text/plain")
    assert resp.status_code == 200
    status, _ = wait_for_job(service, resp.json()["jobId"], timeout=120)
    assert status["state"] == "JOB_STATE_FAILED"
    assert status["failureCode"] == "validation_failure" and status["error"]
    assert "blob" not in status


def test_unknown_job_and_methods(service: ServiceProcess) -> None:
    resp = httpx.get(f"{service.url}/xrpc/{STATUS}", params={"jobId": "0" * 40})
    assert resp.status_code == 404 and resp.json()["error"] == "NotFound"
    resp = httpx.get(f"{service.url}/xrpc/{STATUS}")
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"
    resp = httpx.get(f"{service.url}/xrpc/app.bsky.video.doesNotExist")
    assert resp.status_code == 501 and resp.json()["error"] == "MethodNotImplemented"
    resp = httpx.get(f"{service.url}/xrpc/{UPLOAD}")
    assert resp.status_code == 400 and resp.json()["error"] == "InvalidRequest"
    health = httpx.get(f"{service.url}/xrpc/_health")
    assert health.status_code == 200 and "version" in health.json()


def test_cors_and_did_document(service: ServiceProcess) -> None:
    pre = httpx.options(
        f"{service.url}/xrpc/{UPLOAD}",
        headers={
            "origin": "https://bsky.app",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] in ("*", "https://bsky.app")
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    doc = httpx.get(f"{service.url}/.well-known/did.json").json()
    assert doc["id"] == SERVICE_DID
    assert doc["service"][0]["type"] == "BskyVideoService"


def test_cut_off_upload_leaves_nothing(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    before = stored_jobs(service)
    token = who.token(SERVICE_DID, UPLOAD)
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(
            (
                f"POST /xrpc/{UPLOAD}?did={who.did} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: video/mp4\r\n"
                f"Content-Length: 10000000\r\n\r\n"
            ).encode()
            + b"\x00" * 3_000_000
        )
        time.sleep(0.5)
    wait_for(lambda: stored_jobs(service) == before, timeout=10,
             what="no object, no multipart upload, no directory left")
    assert job_count(service, who.did) == 0


def test_large_upload_streams_in_bounded_memory(service: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    total = 300_000_000
    chunk = os.urandom(1 << 20)
    hwm_before = vm_hwm_kb(service.pid)

    def body() -> Iterator[bytes]:
        sent = 0
        while sent < total:
            part = chunk[: min(len(chunk), total - sent)]
            sent += len(part)
            yield part

    resp = httpx.post(
        f"{service.url}/xrpc/{UPLOAD}",
        params={"did": who.did},
        content=body(),
        headers={
            "authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
            "content-type": "video/mp4",
            "content-length": str(total),
        },
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    growth_mb = (vm_hwm_kb(service.pid) - hwm_before) / 1024
    assert growth_mb < 64, f"peak RSS grew {growth_mb:.1f} MiB during a 300 MB upload"
    status, _ = wait_for_job(service, resp.json()["jobId"], timeout=120)
    assert status["failureCode"] == "validation_failure"  # random bytes are not a video


@pytest.fixture(scope="module", params=BACKENDS)
def small(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dids: DidServer
) -> Iterator[ServiceProcess]:
    env = storage_env(request)
    if env:
        S3_SERVERS[env["VIDEO_S3_ENDPOINT"]] = request.getfixturevalue("s3_server")
    svc = ServiceProcess(
        tmp_path_factory.mktemp("small"),
        {
            "VIDEO_DID_PLC_URL": dids.url,
            "VIDEO_MAX_UPLOAD_BYTES": "1000000",
            "VIDEO_DAILY_VIDEO_LIMIT": "2",
            "VIDEO_DAILY_BYTE_LIMIT": "1500000",
            **env,
        },
    ).start()
    yield svc
    svc.stop()


def test_too_large(small: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    resp = upload_as(small, who, b"\x00" * 1_000_001)
    assert (resp.status_code, resp.json()["error"]) == (413, "PayloadTooLarge")

    def chunked() -> Iterator[bytes]:  # no Content-Length: caught while streaming
        for _ in range(20):
            yield b"\x00" * 100_000

    resp = httpx.post(
        f"{small.url}/xrpc/{UPLOAD}",
        content=chunked(),
        headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}"},
    )
    assert (resp.status_code, resp.json()["error"]) == (413, "PayloadTooLarge")
    assert job_count(small, who.did) == 0 and stored_jobs(small) == set()


def test_over_quota(small: ServiceProcess, dids: DidServer) -> None:
    who = user(dids)
    for i in range(2):
        assert upload_as(small, who, b"clip %d" % i + b"\x00" * 1000).status_code == 200
    stored_before = stored_jobs(small)
    resp = upload_as(small, who, b"clip 3" + b"\x00" * 1000)
    assert resp.status_code == 429
    assert resp.json()["error"] == "User has exceeded daily upload videos limit"
    bytes_user = user(dids)
    accepted = upload_as(small, bytes_user, b"a" * 900_000)
    assert accepted.status_code == 200
    resp = upload_as(small, bytes_user, b"b" * 700_000)
    assert resp.status_code == 429
    assert stored_jobs(small) - stored_before <= {accepted.json()["jobId"]}
    assert resp.json()["error"] == "User has exceeded daily upload bytes limit"
    assert job_count(small, bytes_user.did) == 1

    def chunked() -> Iterator[bytes]:  # no Content-Length: 600 000 bytes left as the ceiling
        for _ in range(7):
            yield b"c" * 100_000

    stored_before = stored_jobs(small)
    resp = httpx.post(
        f"{small.url}/xrpc/{UPLOAD}", params={"did": bytes_user.did}, content=chunked(),
        headers={"authorization": f"Bearer {bytes_user.token(SERVICE_DID, UPLOAD)}"})
    assert resp.status_code == 429
    assert resp.json()["error"] == "User has exceeded daily upload bytes limit"
    assert stored_jobs(small) == stored_before and job_count(small, bytes_user.did) == 1


def _ffmpeg_on(path: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(path).encode() in cmdline:
                pids.append(int(proc.name))
    return pids


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def _wait_ffmpeg(source: Path, timeout: float = 60) -> list[int]:
    """ENCODING is recorded just before ffmpeg starts: wait for the process itself."""

    def encoders() -> list[int]:  # the encoder, not the probe
        return [pid for pid in _ffmpeg_on(source) if _argv0(pid).rsplit("/", 1)[-1] == "ffmpeg"]

    return wait_for(encoders, timeout=timeout, interval=0.05, what=f"an ffmpeg on {source}")


def test_restart_resumes_jobs(tmp_path: Path, dids: DidServer) -> None:
    clip = make_clip(tmp_path / "long.mp4", seconds=12, size="1280x720").read_bytes()
    svc = ServiceProcess(tmp_path / "svc", {"VIDEO_DID_PLC_URL": dids.url}).start()
    who = user(dids)
    try:
        job_id = upload_as(svc, who, clip).json()["jobId"]
        source = svc.data_dir / "storage" / "jobs" / job_id / "source"
        wait_for_job(svc, job_id, ("JOB_STATE_ENCODING",), timeout=60, interval=0.05)
        _wait_ffmpeg(source)
        # Graceful stop: ffmpeg is stopped with the service, the job stays to be resumed.
        t0 = time.monotonic()
        assert svc.stop() == 0
        assert time.monotonic() - t0 < 20
        assert _ffmpeg_on(source) == []
        svc.start()
        wait_for_job(svc, job_id, ("JOB_STATE_ENCODING",), timeout=60, interval=0.05)
        _wait_ffmpeg(source)
        svc.kill()  # SIGKILL in the middle of encoding: ffmpeg survives it (own session)...
        orphans = _ffmpeg_on(source)
        assert orphans
        t0 = time.monotonic()
        svc.start()  # healthy only after the executor resumed jobs and killed their orphans
        record_figure("sigkill_while_encoding", "restart_to_healthy", time.monotonic() - t0)
        time.sleep(0.2)
        assert not set(orphans) & set(_ffmpeg_on(source))
        status, _ = wait_for_job(svc, job_id, timeout=240)
        assert status["state"] == "JOB_STATE_COMPLETED", status
        record_figure("sigkill_while_encoding", "restart_to_completed", time.monotonic() - t0)
        with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
            attempts = conn.execute("SELECT attempts FROM video_job WHERE id = ?", (job_id,))
            assert attempts.fetchone()[0] == 3  # two interrupted attempts, then the last one
        assert not source.exists()  # the upload is removed once the job is done
    finally:
        svc.stop()


def test_metrics_of_the_embedded_service(tmp_path: Path, dids: DidServer) -> None:
    """One process, one metrics port: uploads by result and bytes (API), encode seconds per
    rendition (in-process executor), jobs by state (database); the port goes with the process."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=2, size="854x480").read_bytes()
    metrics_port = free_port()
    svc = ServiceProcess(tmp_path / "svc", {
        "VIDEO_DID_PLC_URL": dids.url, "VIDEO_METRICS_PORT": str(metrics_port),
        "VIDEO_MAX_UPLOAD_BYTES": "5000000",
        # One ffmpeg per target, so every rendition gets its own encode time.
        "VIDEO_ENCODING_STRATEGY": "per_rendition",
    }).start()
    url = f"http://127.0.0.1:{metrics_port}/metrics"

    def result(name: str) -> frozenset[tuple[str, str]]:
        return frozenset({("result", name)})

    try:
        # Served from the start, on its own port (not on the XRPC listener).
        first = scrape(url)
        assert first[("atproto_video_uploads_total", result("accepted"))] == 0
        assert first[("atproto_video_queue_depth", frozenset())] == 0
        assert httpx.get(f"{svc.url}/metrics").status_code == 404

        who = user(dids)
        resp = upload_as(svc, who, clip)
        assert resp.status_code == 200, resp.text
        status, _ = wait_for_job(svc, resp.json()["jobId"], timeout=120)
        assert status["state"] == "JOB_STATE_COMPLETED", status
        assert upload_as(svc, who, clip).json()["error"] == "already_exists"
        # Refused: no token, a token signed by another key, a body over the limit.
        assert httpx.post(f"{svc.url}/xrpc/{UPLOAD}", content=clip).status_code == 401
        stranger = Identity(who.did).token(SERVICE_DID, UPLOAD)
        assert upload_as(svc, who, clip, token=stranger).status_code == 401
        assert upload_as(svc, who, b"\0" * 5_000_001).status_code == 413

        samples = scrape(url)
        uploads = {dict(labels)["result"]: v for (name, labels), v in samples.items()
                   if name == "atproto_video_uploads_total"}
        assert uploads == {"accepted": 1, "already_exists": 1, "AuthMissing": 1,
                           "BadJwtSignature": 1, "PayloadTooLarge": 1}
        assert samples[("atproto_video_upload_bytes_total", frozenset())] == len(clip)
        # 854x480: the 480p rung, the MP4 and the thumbnail, each encoded once.
        encodes = {dict(labels)["rendition"]: v for (name, labels), v in samples.items()
                   if name == "atproto_video_encode_seconds_count"}
        assert encodes == {"480p": 1, "mp4": 1, "thumbnail": 1}
        for rendition in encodes:
            took = samples[("atproto_video_encode_seconds_sum",
                            frozenset({("rendition", rendition)}))]
            assert 0 < took < 120, rendition
        jobs = {dict(labels)["state"]: v for (name, labels), v in samples.items()
                if name == "atproto_video_jobs"}
        assert set(jobs) >= {"created", "encoding", "uploading"} and not any(jobs.values())
        assert samples[("atproto_video_queue_depth", frozenset())] == 0
        finished = {dict(labels)["outcome"]: v for (name, labels), v in samples.items()
                    if name == "atproto_video_jobs_finished_total"}
        assert finished == {"completed": 1}
    finally:
        assert svc.stop() == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)


def test_in_process_services_restart_on_the_same_metrics_port(
    tmp_path: Path, dids: DidServer
) -> None:
    """Two services, one after the other, in one process on one metrics port: stop() frees
    the port, and the second registers nothing twice (no 'Duplicated timeseries')."""
    metrics_port = free_port()

    async def serve_once(n: int) -> float:
        cfg = VideoConfig.from_env({
            "VIDEO_SERVICE_DID": SERVICE_DID, "VIDEO_DATA_DIR": str(tmp_path / "data"),
            "VIDEO_DID_PLC_URL": dids.url, "VIDEO_PORT": str(free_port()),
            "VIDEO_METRICS_PORT": str(metrics_port),
        })
        service = VideoService.create(cfg)
        serving = asyncio.create_task(service.start())
        try:
            async with httpx.AsyncClient() as client:
                for _ in range(200):
                    try:
                        resp = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"service {n}: no metrics listener")
            assert resp.status_code == 200
            queue = [s.value for f in text_string_to_metric_families(resp.text)
                     for s in f.samples if s.name == "atproto_video_queue_depth"]
            return queue[0]
        finally:
            await service.stop()
            await serving

    assert asyncio.run(serve_once(1)) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    assert asyncio.run(serve_once(2)) == 0
