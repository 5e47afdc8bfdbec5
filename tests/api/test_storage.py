"""LocalStorage.receive: the hash, the size limit and the clean-up, with buffers in the thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from atproto_video import storage as storage_module
from atproto_video.storage import EmptyUpload, LocalStorage, UploadTooLarge

pytestmark = pytest.mark.anyio

JOB = "job-00000001"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    s = LocalStorage(tmp_path / "storage")
    s.prepare()
    return s


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
    assert stored.path.read_bytes() == data


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

    class SlowThreads:
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

    monkeypatch.setattr(storage_module, "_SINK_THREADS", SlowThreads())

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


async def test_empty_upload(storage: LocalStorage) -> None:
    with pytest.raises(EmptyUpload):
        await storage.receive(JOB, _chunks(b"", 1), max_bytes=10)
    assert storage.job_ids() == []
