"""The S3 backend against a real S3 server (SeaweedFS on loopback): multipart uploads that
leave nothing behind on failure, staging and publishing, playback, worker files, progress
objects, clean-up, startup checks and an unreachable store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from atproto_video.core.config import ConfigError, StorageSettings
from atproto_video.core.s3 import PART_SIZE, S3Storage, WorkerFiles, client_for, parse_uri
from atproto_video.core.sessions import PART_SIZE as SESSION_PART_SIZE
from atproto_video.core.storage import (
    EmptyUpload,
    StorageUnavailable,
    UploadTooLarge,
)
from tests.support.s3 import S3Server

pytestmark = [pytest.mark.anyio, pytest.mark.s3]

JOB = "job-00000001"


def settings_for(server: S3Server, bucket: str, **extra: str) -> StorageSettings:
    return StorageSettings.from_env({**server.env(bucket), **extra})


@pytest.fixture
def storage(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> Iterator[S3Storage]:
    s = S3Storage.from_settings(settings_for(s3_server, s3_bucket, VIDEO_S3_PREFIX="video"),
                                tmp_path / "scratch")
    s.prepare()
    yield s
    s.close()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await asyncio.sleep(0)


@pytest.mark.parametrize("chunk", [64 * 1024, 999_983])  # aligned, and crossing part edges
async def test_an_upload_streams_into_one_object_under_the_prefix(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str, chunk: int
) -> None:
    data = os.urandom(PART_SIZE * 4 + 12345)  # five parts, more than the buffers
    stored = await storage.receive(JOB, _chunks(data, chunk), len(data))
    assert stored.size == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    assert s3_server.keys(s3_bucket) == [f"video/jobs/{JOB}/source"]
    body = s3_server.client().get_object(Bucket=s3_bucket, Key=f"video/jobs/{JOB}/source")
    assert body["Body"].read() == data
    assert s3_server.multipart_uploads(s3_bucket) == []
    assert storage.has_source(JOB)
    with storage.open_source(JOB) as path:
        assert path.read_bytes() == data
    assert not path.exists(), "the downloaded copy is removed after use"


@pytest.mark.parametrize("failure", ["too-large", "client-gone", "empty", "cancelled"])
async def test_a_failed_upload_leaves_no_object_and_no_multipart_upload(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str, failure: str
) -> None:
    data = b"v" * (PART_SIZE + 4096)

    async def gone() -> AsyncIterator[bytes]:
        async for chunk in _chunks(data, 256 * 1024):
            yield chunk
        raise OSError("client went away")

    if failure == "too-large":
        with pytest.raises(UploadTooLarge):
            await storage.receive(JOB, _chunks(data, 256 * 1024), len(data) - 1)
    elif failure == "client-gone":
        with pytest.raises(OSError, match="went away"):
            await storage.receive(JOB, gone(), len(data) * 2)
    elif failure == "empty":
        with pytest.raises(EmptyUpload):
            await storage.receive(JOB, _chunks(b"", 1), 10)
    else:
        task = asyncio.ensure_future(storage.receive(JOB, _endless(), 1 << 40))
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert s3_server.keys(s3_bucket) == []
    assert s3_server.multipart_uploads(s3_bucket) == []


async def _endless() -> AsyncIterator[bytes]:
    block = b"e" * (256 * 1024)
    while True:
        yield block
        await asyncio.sleep(0)


async def test_stage_publish_and_playback(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    await storage.receive(JOB, _chunks(b"source-bytes", 4), 100)
    ws = storage.stage(JOB)
    assert ws.source.read_bytes() == b"source-bytes"
    (ws.out_dir / "720p").mkdir()
    (ws.out_dir / "720p" / "video0.ts").write_bytes(b"segment" * 1000)
    (ws.out_dir / "720p" / "video.m3u8").write_text("#EXTM3U\nvideo0.ts\n")
    (ws.out_dir / "video.mp4").write_bytes(b"mp4")
    (ws.out_dir / ".partial").write_bytes(b"temporary")
    storage.publish(ws)
    assert not (tmp_path / "scratch" / JOB).exists(), "publish removes the scratch directory"
    prefix = f"video/jobs/{JOB}/out/"
    assert s3_server.keys(s3_bucket, prefix) == [
        prefix + "720p/video.m3u8", prefix + "720p/video0.ts", prefix + "video.mp4"]
    storage.write_output(JOB, "playlist.m3u8", "#EXTM3U\n720p/video.m3u8\n")
    assert storage.has_output(JOB, "playlist.m3u8")

    playlist = storage.playback(JOB, "720p/video.m3u8")
    assert playlist is not None and playlist.data == b"#EXTM3U\nvideo0.ts\n"
    assert playlist.content_type == "application/vnd.apple.mpegurl"
    segment = storage.playback(JOB, "720p/video0.ts")
    assert segment is not None and segment.url is not None
    fetched = httpx.get(segment.url)
    assert fetched.status_code == 200 and fetched.content == b"segment" * 1000
    assert storage.playback(JOB, "../source") is None
    assert storage.playback(JOB, "480p/video.m3u8") is None
    assert storage.playback(JOB, "1080p/video0.ts") is None


async def test_playback_proxy_mode_and_a_cdn_base_url(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    proxy = S3Storage.from_settings(
        settings_for(s3_server, s3_bucket, VIDEO_PLAYBACK="proxy"), tmp_path / "p")
    await proxy.receive(JOB, _chunks(b"x", 1), 10)
    proxy.write_output(JOB, "video.mp4", "0123456789")
    found = proxy.playback(JOB, "video.mp4")
    assert found is not None and found.remote is not None and found.url is None
    assert found.remote.size == 10 and found.remote.content_type == "video/mp4"
    assert b"".join(found.remote.read(2, 5)) == b"2345"
    cdn = S3Storage.from_settings(settings_for(
        s3_server, s3_bucket, VIDEO_PLAYBACK_BASE_URL="https://cdn.example/v/"), tmp_path / "c")
    found = cdn.playback(JOB, "video.mp4")
    assert found is not None and found.url == f"https://cdn.example/v/jobs/{JOB}/out/video.mp4"
    proxy.close()
    cdn.close()


async def test_remove_keeps_nothing_and_remove_scratch_keeps_outputs(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    await storage.receive(JOB, _chunks(b"abc", 1), 10)
    storage.write_output(JOB, "video.mp4", "mp4")
    files = WorkerFiles(storage.client, Path("/nonexistent"), budget_s=1)
    files.put_progress(storage.worker_io(JOB, "720p").progress_file,
                       json.dumps({"progress": 40}), final=True)
    assert storage.read_progress(JOB, "720p") == 40
    storage.remove_source(JOB)
    storage.remove_scratch(JOB)
    assert s3_server.keys(s3_bucket) == [f"video/jobs/{JOB}/out/video.mp4"]
    # A stray multipart upload of the job (a crashed API) goes with it too.
    s3_server.client().create_multipart_upload(Bucket=s3_bucket, Key=f"video/jobs/{JOB}/source")
    storage.remove(JOB)
    assert s3_server.keys(s3_bucket) == []
    assert s3_server.multipart_uploads(s3_bucket) == []


def test_progress_objects_that_are_odd_read_as_no_news(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    assert storage.read_progress(JOB, "720p") is None
    key = f"video/jobs/{JOB}/progress/720p.json"
    for body in (b"not json", b'{"progress": "x"}', b"[1]", b"x" * 5000):
        s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=body)
        assert storage.read_progress(JOB, "720p") is None
    assert storage.read_progress(JOB, "../x") is None


def test_worker_io_has_no_shared_volume_and_names_the_secret(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s = S3Storage.from_settings(
        settings_for(s3_server, s3_bucket, VIDEO_S3_CREDENTIALS_SECRET="video-s3"), tmp_path)
    io = s.worker_io(JOB, "720p")
    assert io.source == f"s3://{s3_bucket}/jobs/{JOB}/source" == s.source_ref(JOB)
    assert io.out_dir == f"s3://{s3_bucket}/jobs/{JOB}/out/"
    assert io.progress_file == f"s3://{s3_bucket}/jobs/{JOB}/progress/720p.json"
    assert [v for v in io.volumes if "emptyDir" not in v] == []
    assert io.env_from == [{"secretRef": {"name": "video-s3"}}]
    env = {e["name"]: e["value"] for e in io.env}
    assert env["VIDEO_S3_ENDPOINT"] == s3_server.endpoint and env["VIDEO_STORAGE"] == "s3"
    assert not any(k.startswith("AWS_") for k in env), "credentials only through the Secret"
    assert s.check_source_ref(JOB, io.source)
    assert not s.check_source_ref(JOB, f"s3://{s3_bucket}/jobs/other-0001/source")
    with pytest.raises(ValueError):
        s.worker_io(JOB, "../x")
    s.close()


def test_worker_files_fetch_and_publish(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3_server.client().put_object(Bucket=s3_bucket, Key=f"video/jobs/{JOB}/source", Body=b"src")
    io = storage.worker_io(JOB, "thumbnail")
    files = WorkerFiles(client_for(storage.settings), tmp_path / "pod", budget_s=1)
    assert files.fetch_source(io.source).read_bytes() == b"src"
    out = files.out_dir()
    (out / "thumbnail.jpg").write_bytes(b"jpg")
    files.publish(out, io.out_dir)
    assert storage.has_output(JOB, "thumbnail.jpg")
    with pytest.raises(FileNotFoundError):
        files.fetch_source(f"s3://{s3_bucket}/video/jobs/missing-0001/source")
    assert parse_uri("s3://b/k/x") == ("b", "k/x")
    with pytest.raises(ValueError):
        parse_uri("/storage/jobs/x")


def test_worker_files_fetch_a_rendition_and_publish_the_mp4(
    storage: S3Storage, tmp_path: Path
) -> None:
    """The MP4 remux of a segmented job: the joined rendition in, only video.mp4 out."""
    playlist = "#EXTM3U\n#EXTINF:4.0,\nseg_000.ts\n#EXTINF:4.0,\nseg_001.ts\n#EXT-X-ENDLIST\n"
    storage.write_output(JOB, "480p/video.m3u8", playlist)
    for n in (0, 1):
        storage.write_output(JOB, f"480p/seg_{n:03d}.ts", f"ts{n}")
    io = storage.worker_io(JOB, "mp4")
    files = WorkerFiles(client_for(storage.settings), tmp_path / "pod", budget_s=1)
    out = files.out_dir()
    files.fetch_rendition(io.out_dir, "480p", out)
    assert (out / "480p" / "video.m3u8").read_text() == playlist
    assert (out / "480p" / "seg_001.ts").read_text() == "ts1"
    (out / "video.mp4").write_bytes(b"mp4")
    files.publish_file(out / "video.mp4", io.out_dir)
    with storage.open_output(JOB, "video.mp4") as mp4:
        assert mp4.read_bytes() == b"mp4"
    with pytest.raises(ValueError):
        files.fetch_rendition(io.out_dir, "../x", out)
    storage.write_output(JOB, "360p/video.m3u8", "#EXTM3U\n#EXTINF:4.0,\n../../source\n")
    with pytest.raises(ValueError):  # a playlist naming anything but its own media
        files.fetch_rendition(io.out_dir, "360p", out)
    with pytest.raises(FileNotFoundError):
        files.fetch_rendition(io.out_dir, "720p", out)


def test_startup_refuses_a_missing_bucket_and_wrong_credentials(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = S3Storage.from_settings(settings_for(s3_server, "no-such-bucket"), tmp_path)
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket' does not exist"):
        missing.prepare()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    refused = S3Storage.from_settings(settings_for(s3_server, s3_bucket), tmp_path)
    with pytest.raises(ConfigError, match=r"refused .*check the S3 credentials"):
        refused.prepare()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    anonymous = S3Storage.from_settings(settings_for(s3_server, s3_bucket), tmp_path)
    with pytest.raises(ConfigError, match="no S3 credentials"):
        anonymous.prepare()


async def test_an_unreachable_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    settings = replace(StorageSettings.from_env({
        "VIDEO_STORAGE": "s3", "VIDEO_S3_BUCKET": "videos",
        "VIDEO_S3_ENDPOINT": "http://127.0.0.1:9", "VIDEO_S3_FORCE_PATH_STYLE": "true",
        "VIDEO_S3_REGION": "us-east-1"}), s3_retry_s=0.5)
    s = S3Storage.from_settings(settings, tmp_path)
    with pytest.raises(ConfigError, match="VIDEO_S3_ENDPOINT: cannot reach"):
        s.prepare()
    with pytest.raises(StorageUnavailable):
        await s.receive(JOB, _chunks(b"abc", 1), 10)
    with pytest.raises(StorageUnavailable):
        s.stage(JOB)
    assert not (tmp_path / JOB).exists(), "a failed stage leaves no scratch directory"
    assert s.read_progress(JOB, "720p") is None, "no news, never an error, for the poll"
    s.close()


def test_parts_map_onto_one_multipart_upload(
    storage: S3Storage, s3_server: S3Server, s3_bucket: str
) -> None:
    data = os.urandom(2 * SESSION_PART_SIZE + 777)
    ref = storage.start_parts(JOB, len(data))
    chunks = [data[i:i + SESSION_PART_SIZE] for i in range(0, len(data), SESSION_PART_SIZE)]
    tags = {n: storage.put_part(JOB, ref, n, (n - 1) * SESSION_PART_SIZE, [chunks[n - 1]])
            for n in (3, 1, 2)}
    assert tags[1] == storage.put_part(JOB, ref, 1, 0, [chunks[0]])  # same bytes, same tag
    assert not storage.has_source(JOB)
    storage.finish_parts(JOB, ref, tags)
    storage.finish_parts(JOB, ref, tags)  # a retried finish
    assert s3_server.multipart_uploads(s3_bucket) == []
    assert storage.source_digest(JOB) == hashlib.sha256(data).hexdigest()
    assert storage.source_head(JOB, 16) == data[:16]
    other = "job-00000002"
    ref = storage.start_parts(other, len(data))
    storage.put_part(other, ref, 1, 0, [chunks[0]])
    storage.abort_parts(other, ref)
    assert s3_server.multipart_uploads(s3_bucket) == []
    assert all(other not in key for key in s3_server.keys(s3_bucket))
