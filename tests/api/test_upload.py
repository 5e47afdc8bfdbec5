"""uploadVideo in process: refused uploads leave nothing, removed off the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atproto_video.api.service import VideoService
from atproto_video.core.config import VideoConfig
from tests.support.blocking import no_blocking_rmtree
from tests.support.didserver import DidServer
from tests.support.service import ServiceProcess
from tests.support.xrpc import SERVICE_DID, UPLOAD, user


def test_refused_uploads_are_removed_off_the_event_loop(
    tmp_path: Path, dids: DidServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = VideoConfig.from_env({
        "VIDEO_SERVICE_DID": SERVICE_DID, "VIDEO_DATA_DIR": str(tmp_path / "data"),
        "VIDEO_DID_PLC_URL": dids.url, "VIDEO_ALLOW_PRIVATE_ENDPOINTS": "1",
        "VIDEO_DAILY_VIDEO_LIMIT": "2",
    })
    service = VideoService.create(cfg)  # the executor is not started: jobs stay CREATED
    who = user(dids)

    async def post(body: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://video") as client:
            return await client.post(
                f"/xrpc/{UPLOAD}", params={"did": who.did}, content=body,
                headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                         "content-type": "video/mp4"})

    async def scenario() -> list[httpx.Response]:
        try:
            return [await post(body) for body in (b"first" * 100, b"first" * 100,
                                                  b"second" * 100, b"third" * 100)]
        finally:
            await service.stop()

    with no_blocking_rmtree(monkeypatch) as removed:
        first, duplicate, second, over_quota = asyncio.run(scenario())
    assert first.status_code == 200 and second.status_code == 200
    assert duplicate.json()["error"] == "already_exists"
    assert duplicate.json()["jobId"] == first.json()["jobId"]
    assert over_quota.status_code == 429
    # The duplicate was stored, then removed; the over-quota one was refused before storing.
    assert len(removed) == 1 and duplicate.json()["jobId"] not in removed[0]
    kept = sorted(service.ctx.storage.job_ids())
    assert kept == sorted([first.json()["jobId"], second.json()["jobId"]])


def _stored_bytes(root: Path) -> int:
    """Bytes in every job directory under a local storage root (sources being written)."""
    total = 0
    try:
        jobs = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for job in jobs:
        for dirpath, _dirs, files in os.walk(job.path):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(dirpath, name)).st_size
    return total


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_concurrent_uploads_never_store_more_than_the_quota(
    tmp_path: Path, dids: DidServer, declared: bool
) -> None:
    """50 uploads of 4 MiB at once from one DID with room for 3: the storage directory never
    holds more than the quota allows, and the refusals come before the bytes."""
    size, videos = 4 << 20, 3
    quota_bytes = videos * size + 1000
    svc = ServiceProcess(tmp_path / "svc", {
        "VIDEO_DID_PLC_URL": dids.url, "VIDEO_DAILY_VIDEO_LIMIT": str(videos),
        "VIDEO_DAILY_BYTE_LIMIT": str(quota_bytes), "VIDEO_MAX_OPEN_UPLOADS": "50",
        "VIDEO_PROCESSING_CONCURRENCY": "1",
    }).start()
    root = svc.data_dir / "storage" / "jobs"
    who = user(dids)
    token = who.token(SERVICE_DID, UPLOAD)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _stored_bytes(root))
            time.sleep(0.002)

    def body(i: int) -> Iterator[bytes]:
        block = i.to_bytes(4, "big") * (64 << 8)  # 64 KiB, distinct per upload
        for _ in range(size // len(block)):
            yield block
            time.sleep(0.001)  # slow enough that the uploads overlap

    barrier = threading.Barrier(50)

    def send(i: int) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}", "content-type": "video/mp4"}
        if declared:
            headers["content-length"] = str(size)
        barrier.wait()
        return httpx.post(f"{svc.url}/xrpc/{UPLOAD}", params={"did": who.did},
                          content=body(i), headers=headers, timeout=120)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(send, range(50)))
    finally:
        stop.set()
        sampler.join()
        svc.stop()
    accepted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(accepted) + len(refused) == 50, [a.text for a in answers if a not in accepted]
    assert {a.json()["error"] for a in refused} <= {
        "User has exceeded daily upload videos limit", "User has exceeded daily upload bytes limit"}
    assert 1 <= len(accepted) <= videos
    assert 0 < peak <= quota_bytes, f"{peak} bytes stored at once, quota {quota_bytes}"
    with sqlite3.connect(svc.data_dir / "video.sqlite3") as conn:
        used = conn.execute("SELECT videos, bytes, reserved_videos, reserved_bytes "
                            "FROM video_upload_limit WHERE did = ?", (who.did,)).fetchone()
        held = conn.execute("SELECT count(*) FROM video_upload_reservation").fetchone()[0]
    assert used == (len(accepted), len(accepted) * size, 0, 0) and held == 0
    if declared:
        assert len(accepted) == videos


@pytest.mark.parametrize("committed", [True, False], ids=["ack-lost", "not-committed"])
def test_an_insert_cut_off_by_the_database_keeps_the_upload_it_committed(
    tmp_path: Path, dids: DidServer, committed: bool
) -> None:
    """The connection drops during the job insert: the client gets a retryable 503; once the
    database answers, a job whose row did commit runs with its bytes, and bytes of a job that
    did not commit are removed. The drop is injected into the real store's create (a lost
    acknowledgement cannot be produced on demand with a real server)."""
    import psycopg

    cfg = VideoConfig.from_env({
        "VIDEO_SERVICE_DID": SERVICE_DID, "VIDEO_DATA_DIR": str(tmp_path / "data"),
        "VIDEO_DID_PLC_URL": dids.url, "VIDEO_ALLOW_PRIVATE_ENDPOINTS": "1",
    })
    service = VideoService.create(cfg)  # the executor is not started: submitted jobs wait
    store, executor = service.ctx.store, service.ctx.executor
    real_create, real_submit = store.create, executor.submit
    submitted: list[str] = []

    def create(*args: object, **kwargs: object) -> object:
        if committed:
            real_create(*args, **kwargs)  # type: ignore[arg-type]
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    async def submit(job: object) -> None:
        submitted.append(job.id)  # type: ignore[attr-defined]
        await real_submit(job)  # type: ignore[arg-type]

    store.create = create  # type: ignore[method-assign]
    executor.submit = submit  # type: ignore[method-assign]
    who = user(dids)

    async def scenario() -> tuple[httpx.Response, list[str]]:
        transport = httpx.ASGITransport(app=service.app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://video") as c:
                resp = await c.post(
                    f"/xrpc/{UPLOAD}", params={"did": who.did}, content=b"\x00" * 4096,
                    headers={"authorization": f"Bearer {who.token(SERVICE_DID, UPLOAD)}",
                             "content-type": "video/mp4"})
            for _ in range(200):  # the settling runs in the background once the DB answers
                kept = sorted(service.ctx.storage.job_ids())
                if (submitted if committed else not kept):
                    break
                await asyncio.sleep(0.05)
            return resp, kept
        finally:
            await service.stop()

    resp, kept = asyncio.run(scenario())
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"] == "NotEnoughResources"
    assert resp.headers["retry-after"]
    jobs = store.unfinished("local")
    if committed:
        assert [j.id for j in jobs] == submitted and kept == submitted
    else:
        assert jobs == [] and kept == [] and submitted == []


def test_shutdown_waits_briefly_for_background_writes_then_cancels_them() -> None:
    from atproto_video.api import upload

    landed: list[str] = []

    async def lands() -> None:
        await asyncio.sleep(0.05)
        landed.append("write")

    async def scenario() -> tuple[int, int, list[asyncio.Task[None]]]:
        upload._in_background(lands(), "lands")
        upload._in_background(asyncio.sleep(3600), "database never back")
        tasks = list(upload._pending_writes)
        cancelled = await upload.drain_background(timeout_s=0.5)
        return cancelled, len(upload._pending_writes), tasks

    cancelled, left, tasks = asyncio.run(scenario())
    assert landed == ["write"]
    assert cancelled == 1
    assert left == 0
    assert sum(t.cancelled() for t in tasks) == 1
