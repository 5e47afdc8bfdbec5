"""``/watch/``: playback in proxy mode (the service streams objects with Range support) and
with a CDN base URL (redirects), against a real S3 server and a real HLS player."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from atproto_video.api.playback import RangeNotSatisfiable, byte_range
from atproto_video.core.blob import cid_for_bytes
from tests.support.didserver import DidServer
from tests.support.media import make_clip, play_hls
from tests.support.s3 import S3Server
from tests.support.service import ServiceProcess
from tests.support.xrpc import upload_as, user, wait_for_job


def test_byte_ranges() -> None:
    assert byte_range(None, 10) is None
    assert byte_range("bytes=2-5", 10) == (2, 5)
    assert byte_range("bytes=2-", 10) == (2, 9)
    assert byte_range("bytes=-3", 10) == (7, 9)
    assert byte_range("bytes=-30", 10) == (0, 9)
    assert byte_range("bytes=5-100", 10) == (5, 9)
    assert byte_range("bytes=0-1,4-5", 10) is None  # several ranges: the whole object
    assert byte_range("items=0-1", 10) is None
    for unsatisfiable in ("bytes=10-", "bytes=5-2", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(unsatisfiable, 10)


@pytest.fixture(scope="module")
def completed(
    tmp_path_factory: pytest.TempPathFactory, dids: DidServer, s3_server: S3Server
) -> Iterator[tuple[ServiceProcess, str, dict[str, object]]]:
    """A proxy-mode service with one completed job: (service, /watch base URL, blob)."""
    bucket = s3_server.new_bucket()
    svc = ServiceProcess(tmp_path_factory.mktemp("proxy"), {
        "VIDEO_DID_PLC_URL": dids.url, **s3_server.env(bucket), "VIDEO_PLAYBACK": "proxy",
    }).start()
    clip = make_clip(tmp_path_factory.mktemp("media") / "c.mp4", seconds=2,
                     size="640x360").read_bytes()
    who = user(dids)
    job_id = upload_as(svc, who, clip).json()["jobId"]
    status, _ = wait_for_job(svc, job_id, timeout=120)
    assert status["state"] == "JOB_STATE_COMPLETED", status
    blob = status["blob"]
    yield svc, f"{svc.url}/watch/{quote(who.did, safe='')}/{blob['ref']['$link']}", blob
    svc.stop()


@pytest.mark.s3
def test_proxy_mode_serves_every_byte_itself(
    completed: tuple[ServiceProcess, str, dict[str, object]],
) -> None:
    _svc, base, blob = completed
    assert play_hls(f"{base}/playlist.m3u8") == 60
    whole = httpx.get(f"{base}/video.mp4", timeout=30)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-type"] == "video/mp4"
    assert len(whole.content) == blob["size"]
    assert cid_for_bytes(whole.content) == blob["ref"]["$link"]  # type: ignore[index]
    part = httpx.get(f"{base}/video.mp4", headers={"range": "bytes=100-199"}, timeout=30)
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    tail = httpx.get(f"{base}/video.mp4", headers={"range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    beyond = httpx.get(f"{base}/video.mp4", headers={"range": f"bytes={10**9}-"}, timeout=30)
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(whole.content)}"
    head = httpx.head(f"{base}/video.mp4", timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(whole.content))
    thumb = httpx.get(f"{base}/thumbnail.jpg", timeout=30)
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert httpx.get(f"{base}/360p/nope.ts", timeout=30).status_code == 404


@pytest.mark.s3
def test_a_cdn_base_url_gets_redirects_and_playlists_stay_here(
    tmp_path: Path, dids: DidServer, s3_server: S3Server,
    completed: tuple[ServiceProcess, str, dict[str, object]],
) -> None:
    svc, base, _blob = completed
    cdn = ServiceProcess(tmp_path / "cdn", {
        **{k: v for k, v in svc.env.items() if k.startswith(("VIDEO_", "AWS_"))},
        "VIDEO_DATA_DIR": str(svc.data_dir), "VIDEO_PLAYBACK": "redirect",
        "VIDEO_PLAYBACK_BASE_URL": "https://cdn.example/videos",
    })
    svc.stop()  # the same data dir and bucket, restarted with the CDN setting
    cdn.start()
    try:
        cdn_base = base.replace(svc.url, cdn.url)
        mp4 = httpx.get(f"{cdn_base}/video.mp4", timeout=30)  # not followed: never off-machine
        assert mp4.status_code == 307
        bucket_prefix = svc.env["VIDEO_S3_PREFIX"]
        assert mp4.headers["location"].startswith(f"https://cdn.example/videos/{bucket_prefix}jobs/")
        assert mp4.headers["location"].endswith("/out/video.mp4")
        playlist = httpx.get(f"{cdn_base}/playlist.m3u8", timeout=30)
        assert playlist.status_code == 200 and "360p/video.m3u8" in playlist.text
    finally:
        cdn.stop()
        svc.start()
