"""Where uploads and outputs live: one directory per job under the storage root.

``jobs/<job_id>/source`` is the upload as received; ``jobs/<job_id>/out/`` holds the ladder,
thumbnail and MP4 (SPEC section 5 layout). The same tree is what the API and the cluster's
worker pods mount.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# Names a player may ask for inside an output dir: no traversal, no hidden files.
_OUTPUT_PATH = re.compile(r"^(?:[0-9]{3,4}p/)?[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$")

SOURCE_NAME = "source"
OUTPUT_DIR = "out"
# 1 MiB measured best (bench/upload.py): 256 KiB costs more thread hand-offs, 4 MiB more cache.
_WRITE_BUFFER = 1 << 20
# Hash-and-write threads for uploads; each upload has at most one buffer in one of them.
_SINK_THREADS = concurrent.futures.ThreadPoolExecutor(
    max_workers=os.cpu_count() or 1, thread_name_prefix="upload-sink"
)


class UploadTooLarge(Exception):
    pass


class EmptyUpload(Exception):
    pass


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    size: int
    sha256_hex: str


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.jobs_root = self.root / "jobs"

    def prepare(self) -> None:
        self.jobs_root.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise ValueError("malformed job id")
        return self.jobs_root / job_id

    def source_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / SOURCE_NAME

    def output_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / OUTPUT_DIR

    def output_file(self, job_id: str, relpath: str) -> Path | None:
        """A file inside the job's output dir, or None for names a player never asks for."""
        if not _OUTPUT_PATH.match(relpath) or ".." in relpath:
            return None
        path = self.output_dir(job_id) / relpath
        return path if path.is_file() else None

    async def receive(
        self, job_id: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> StoredUpload:
        """Stream an upload to disk, hashing as it goes; memory stays at a few write buffers.

        Each full buffer is hashed and written on a worker thread while the event loop
        receives the next one: sha256 is most of the CPU per byte, and hashlib and write()
        release the GIL. At most one buffer is in the thread, so memory stays bounded.
        On any failure (client gone, too large, empty) the job directory is removed.
        """
        directory = self.job_dir(job_id)
        directory.mkdir(parents=True, exist_ok=False)
        path = directory / SOURCE_NAME
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_len = 0
        in_thread: concurrent.futures.Future[None] | None = None

        def sink(f: BinaryIO, block: bytes) -> None:
            digest.update(block)
            f.write(block)

        try:
            with path.open("wb") as f:
                try:
                    async for chunk in chunks:
                        if not chunk:
                            continue
                        size += len(chunk)
                        if size > max_bytes:
                            raise UploadTooLarge(f"upload exceeds {max_bytes} bytes")
                        pending.append(chunk)
                        pending_len += len(chunk)
                        if pending_len >= _WRITE_BUFFER:
                            block = b"".join(pending)
                            pending.clear()
                            pending_len = 0
                            if in_thread is not None:
                                await asyncio.wrap_future(in_thread)
                            in_thread = _SINK_THREADS.submit(sink, f, block)
                    if in_thread is not None:
                        await asyncio.wrap_future(in_thread)
                    if pending:
                        sink(f, b"".join(pending))
                finally:
                    # On failure the thread may still hold f: let it finish (one buffer) before
                    # f is closed. Waiting here, not awaiting, so a cancellation cannot skip it.
                    if in_thread is not None and not in_thread.done():
                        concurrent.futures.wait([in_thread])
            if size == 0:
                raise EmptyUpload("the request body is empty")
        except BaseException:
            self.remove(job_id)
            raise
        return StoredUpload(path=path, size=size, sha256_hex=digest.hexdigest())

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def remove_source(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.source_path(job_id))

    def job_ids(self) -> list[str]:
        if not self.jobs_root.is_dir():
            return []
        return [p.name for p in self.jobs_root.iterdir() if p.is_dir()]
