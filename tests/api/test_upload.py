"""uploadVideo in process: refused uploads leave nothing, removed off the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from atproto_video.api.service import VideoService
from atproto_video.core.config import VideoConfig
from tests.support.blocking import no_blocking_rmtree
from tests.support.didserver import DidServer
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
