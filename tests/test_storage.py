"""The storage interface's local backend: uploads (hash, size limit, clean-up, batches hashed
and written by separate threads), workspaces, outputs for playback and delivery, worker
locations, progress files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from atproto_video.core import storage as storage_module
from atproto_video.core.storage import (
    WORKER_MOUNT,
    EmptyUpload,
    LocalStorage,
    UploadTooLarge,
    parse_progress,
)
from tests.support.storage import receive_bytes

pytestmark = pytest.mark.anyio

JOB = "job-00000001"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[LocalStorage]:
    s = LocalStorage(tmp_path / "storage")
    s.prepare()
    yield s
    s.close()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def test_hash_and_content_across_many_buffers(storage: LocalStorage) -> None:
    # Uneven chunks that straddle the write buffer, with empty chunks in between.
    data = os.urandom(5 * storage_module._WRITE_BUFFER + 12_345)

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in _chunks(data, 300_001):
            yield chunk
            yield b""

    stored = await storage.receive(JOB, chunks(), max_bytes=len(data))
    assert stored.size == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    with storage.open_source(JOB) as source:
        assert source.read_bytes() == data


async def test_tiny_chunks_are_joined_before_the_thread_writes_them(
    storage: LocalStorage,
) -> None:
    # A body chunked by its client into 1,000-byte pieces: more per buffer than one writev
    # takes, so a batch is joined first; the bytes and their hash are the same.
    data = os.urandom(2 * storage_module._WRITE_BUFFER + 999)
    stored = await storage.receive(JOB, _chunks(data, 1_000), max_bytes=len(data))
    assert stored.size == len(data)
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    with storage.open_source(JOB) as source:
        assert source.read_bytes() == data


def test_blocks_are_written_in_order_in_bounded_calls(tmp_path: Path) -> None:
    blocks = [os.urandom(n) for n in [5, 0, 70_000, 1] * 400]  # 1,600: more than IOV_MAX
    path = tmp_path / "out"
    with path.open("wb", buffering=0) as f:
        storage_module._write_blocks(f.fileno(), blocks)
    assert path.read_bytes() == b"".join(blocks)


async def test_too_large_stops_at_the_crossing_chunk(storage: LocalStorage) -> None:
    limit = 3 * storage_module._WRITE_BUFFER + 1
    consumed = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 100_000
            yield b"\x00" * 100_000

    with pytest.raises(UploadTooLarge):
        await storage.receive(JOB, chunks(), max_bytes=limit)
    assert consumed == (limit // 100_000 + 1) * 100_000
    assert storage.job_ids() == []


async def test_client_gone_mid_stream_removes_the_partial_file(storage: LocalStorage) -> None:
    class Gone(Exception):
        pass

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in _chunks(os.urandom(4 * storage_module._WRITE_BUFFER), 65_536):
            yield chunk
        raise Gone

    with pytest.raises(Gone):
        await storage.receive(JOB, chunks(), max_bytes=10**9)
    assert storage.job_ids() == []


async def test_cancelled_while_a_buffer_is_in_the_thread(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, submitted = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    class SlowThreads(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Callable[..., None], *args: object) -> concurrent.futures.Future[None]:
            def slow() -> None:
                submitted.set()
                gate.wait()
                try:
                    fn(*args)
                except BaseException as exc:  # e.g. a write to a file already closed
                    errors.append(exc)
                    raise

            return pool.submit(slow)

    monkeypatch.setattr(storage, "_sink_pool", SlowThreads(max_workers=1))

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(storage_module._WRITE_BUFFER)

    task = asyncio.create_task(storage.receive(JOB, chunks(), max_bytes=10**9))
    while not submitted.is_set():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the second buffer now waits for the first one
    task.cancel()
    threading.Timer(0.2, gate.set).start()
    with pytest.raises(asyncio.CancelledError):
        await task
    pool.shutdown(wait=True)
    assert errors == []
    assert storage.job_ids() == []


async def test_a_batch_is_written_while_it_is_hashed(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hashing and writing are separate stages: each batch's hash waits here until the same
    # batch is on disk, which would never happen if one thread hashed and then wrote it.
    written = threading.Semaphore(0)
    write_blocks = storage_module._write_blocks

    def write_then_signal(fd: int, blocks: list[bytes]) -> None:
        write_blocks(fd, blocks)
        written.release()

    class HashAfterWrite(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Callable[..., None], *args: object) -> concurrent.futures.Future[None]:
            if fn is write_then_signal:
                return super().submit(fn, *args)

            def after_write() -> None:
                assert written.acquire(timeout=10), "the hash waited for a write that never came"
                fn(*args)

            return super().submit(after_write)

    monkeypatch.setattr(storage_module, "_write_blocks", write_then_signal)
    monkeypatch.setattr(storage, "_sink_pool", HashAfterWrite(max_workers=2))
    data = os.urandom(3 * storage_module._WRITE_BUFFER)  # whole batches: all go to the threads
    stored = await storage.receive(JOB, _chunks(data, 65_536), max_bytes=len(data))
    assert stored.sha256_hex == hashlib.sha256(data).hexdigest()
    with storage.open_source(JOB) as source:
        assert source.read_bytes() == data


async def test_a_failed_write_stops_the_upload_and_removes_it(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk filling up on the write thread (the hash thread still busy with the batch):
    # the error reaches the caller and nothing of the upload stays behind.
    calls = 0
    write_blocks = storage_module._write_blocks

    def full_on_third(fd: int, blocks: list[bytes]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_blocks(fd, blocks)

    monkeypatch.setattr(storage_module, "_write_blocks", full_on_third)
    consumed = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 65_536
            await asyncio.sleep(0)
            yield os.urandom(65_536)

    with pytest.raises(OSError) as raised:
        await storage.receive(JOB, chunks(), max_bytes=10**9)
    assert raised.value.errno == errno.ENOSPC
    assert consumed < 6 * storage_module._WRITE_BUFFER  # stopped, not read to the end
    assert storage.job_ids() == []


async def test_empty_upload(storage: LocalStorage) -> None:
    with pytest.raises(EmptyUpload):
        await storage.receive(JOB, _chunks(b"", 1), max_bytes=10)
    assert storage.job_ids() == []


def test_importing_the_module_starts_no_thread_pool() -> None:
    """Pools belong to a backend instance (closed with it), never to the module."""
    assert not [v for v in vars(storage_module).values()
                if isinstance(v, concurrent.futures.Executor)]


async def test_a_workspace_is_published_in_place_and_discarded_on_failure(
    storage: LocalStorage,
) -> None:
    await receive_bytes(storage, JOB, b"video bytes")
    workspace = storage.stage(JOB)
    assert workspace.source.read_bytes() == b"video bytes"
    (workspace.out_dir / "720p").mkdir()
    (workspace.out_dir / "720p" / "video.m3u8").write_text("#EXTM3U\n")
    (workspace.out_dir / "video.mp4").write_bytes(b"mp4")
    storage.publish(workspace)
    assert storage.has_output(JOB, "video.mp4") and storage.has_output(JOB, "720p/video.m3u8")
    with storage.open_output(JOB, "video.mp4") as mp4:
        assert mp4.read_bytes() == b"mp4"
    # A second attempt starts from an empty output tree.
    again = storage.stage(JOB)
    assert not storage.has_output(JOB, "video.mp4")
    storage.discard(again)
    assert not storage.has_output(JOB, "720p/video.m3u8")
    assert storage.has_source(JOB)
    storage.remove_source(JOB)
    assert not storage.has_source(JOB)
    with pytest.raises(FileNotFoundError), storage.open_source(JOB):
        pass


def test_playback_serves_only_output_names(storage: LocalStorage) -> None:
    storage.write_output(JOB, "playlist.m3u8", "#EXTM3U\n")
    storage.write_output(JOB, "720p/video.m3u8", "#EXTM3U\n")
    found = storage.playback(JOB, "playlist.m3u8")
    assert found is not None and found.file is not None and found.url is None
    assert found.file.read_text() == "#EXTM3U\n"
    assert storage.playback(JOB, "720p/video.m3u8") is not None
    for name in ("../source", "720p/../../source", ".hidden", "source", "a/b/c.ts",
                 "missing.ts"):
        assert storage.playback(JOB, name) is None, name
    with pytest.raises(ValueError):
        storage.write_output(JOB, "../escape", "x")
    with pytest.raises(ValueError):
        storage.playback("../../etc", "passwd")


def test_worker_locations_and_source_refs(storage: LocalStorage, tmp_path: Path) -> None:
    io = storage.worker_io(JOB, "720p")
    assert io.source == f"{WORKER_MOUNT}/jobs/{JOB}/source"
    assert io.out_dir == f"{WORKER_MOUNT}/jobs/{JOB}/out"
    assert io.progress_file == f"{WORKER_MOUNT}/jobs/{JOB}/progress/720p.json"
    assert io.volumes == [{"name": "storage", "hostPath": {
        "path": str((tmp_path / "storage").resolve()), "type": "Directory"}}]
    pvc = LocalStorage(tmp_path / "s", pod_volume={"persistentVolumeClaim": {"claimName": "v"}})
    assert pvc.worker_io(JOB, "mp4").volumes == [
        {"name": "storage", "persistentVolumeClaim": {"claimName": "v"}}]
    with pytest.raises(ValueError):
        storage.worker_io(JOB, "../x")
    assert storage.check_source_ref(JOB, storage.source_ref(JOB))
    for ref in ("/etc/passwd", f"jobs/{JOB}/../../etc/passwd", "jobs/other-job-1/source", ""):
        assert not storage.check_source_ref(JOB, ref), ref
    assert not storage.check_source_ref("../../etc", "../../etc")


def test_progress_files_read_as_no_news_when_odd(storage: LocalStorage, tmp_path: Path) -> None:
    assert storage.read_progress(JOB, "480p") is None
    storage.prepare_worker(JOB, os.getuid(), os.getgid())
    path = tmp_path / "storage" / "jobs" / JOB / "progress" / "480p.json"
    path.write_text('{"target": "480p", "progress": 42}')
    assert storage.read_progress(JOB, "480p") == 42
    assert parse_progress(b'{"progress": 250.5}') == 100
    for junk in (b'{"progress": "50"}', b"{half", b"[]", b'{"progress": true}', b"x" * 5000):
        assert parse_progress(junk) is None
    storage.remove_scratch(JOB)
    assert storage.read_progress(JOB, "480p") is None


def test_parts_are_written_at_their_offsets(storage: LocalStorage) -> None:
    data = os.urandom(3 * 1000 + 17)
    ref = storage.start_parts(JOB, len(data))
    tags = {}
    for n in (4, 2, 1, 3, 2):  # out of order, part 2 twice
        start, end = (n - 1) * 1000, n * 1000
        tags[n] = storage.put_part(JOB, ref, n, start, [data[start:end - 300], data[end - 300:end]])
    assert not storage.has_source(JOB)
    storage.finish_parts(JOB, ref, tags)
    storage.finish_parts(JOB, ref, tags)  # a retried finish
    with storage.open_source(JOB) as source:
        assert source.read_bytes() == data
    assert storage.source_digest(JOB) == hashlib.sha256(data).hexdigest()
    assert storage.source_head(JOB, 10) == data[:10]
    storage.abort_parts(JOB, ref)
    assert storage.job_ids() == []
