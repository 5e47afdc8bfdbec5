"""Where uploads and outputs live, behind one interface in job terms.

Callers name a job and, for outputs, a file name relative to the job's output tree (the SPEC
section 5 layout: ``playlist.m3u8``, ``720p/video.m3u8``, ``thumbnail.jpg``, ``video.mp4``);
only a backend knows where the bytes are. The transcoder works on local files, so a backend
hands out a :class:`Workspace` (local paths valid for one attempt) and takes the outputs back
with :meth:`Storage.publish`.

:class:`LocalStorage` keeps one directory per job under a root that the API, the operator and
the worker pods share (``jobs/<id>/source``, ``jobs/<id>/out/``, ``jobs/<id>/progress/``).

The S3 backend (:mod:`atproto_video.core.s3`) keeps the same layout as objects under
``<prefix>jobs/<id>/`` and stages files in a local scratch directory while a job transcodes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import mimetypes
import os
import re
import secrets
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from atproto_video.core.atomicfile import atomic_write_text
from atproto_video.core.diskspace import free_bytes

# Part of the storage interface; defined apart so that the worker catches it without asyncio.
from atproto_video.core.errors import StorageUnavailable as StorageUnavailable

if TYPE_CHECKING:
    from atproto_video.core.config import VideoConfig

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# Names a player may ask for inside an output dir: no traversal, no hidden files.
_OUTPUT_PATH = re.compile(r"^(?:[0-9]{3,4}p/)?[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}$")
_TARGET = re.compile(r"^[a-z0-9]{1,16}$")

SOURCE_NAME = "source"
#: A multipart upload being received (local backend): renamed to SOURCE_NAME when finished.
PARTIAL_NAME = "upload.partial"
OUTPUT_DIR = "out"
#: The master playlist in an output tree (SPEC section 5).
MASTER_NAME = "playlist.m3u8"
PROGRESS_DIR = "progress"
#: Where worker pods mount the storage root (local backend).
WORKER_MOUNT = "/storage"
# 1 MiB measured best (bench/upload.py): 256 KiB costs more thread hand-offs, 4 MiB more cache.
_WRITE_BUFFER = 1 << 20


#: Media types of the output layout; anything else is guessed from the name.
CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".json": "application/json",
}


def content_type(name: str) -> str:
    """The media type a player expects for an output file name."""
    suffix = os.path.splitext(name)[1]
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class UploadTooLarge(Exception):
    pass


class EmptyUpload(Exception):
    pass


@dataclass(frozen=True)
class StoredUpload:
    size: int
    sha256_hex: str


@dataclass(frozen=True)
class Workspace:
    """Local paths the transcoder reads and writes for one attempt at one job."""

    job_id: str
    source: Path
    out_dir: Path


@dataclass(frozen=True)
class RemoteObject:
    """An output the service streams from elsewhere: ``read(start, end)`` yields the bytes
    ``start..end`` inclusive (blocking; run it in a thread)."""

    size: int
    content_type: str
    read: Callable[[int, int], Iterator[bytes]]


@dataclass(frozen=True)
class Playback:
    """How to serve one output: a local file, its bytes (playlists), an object to stream,
    or a URL to redirect the player to."""

    file: Path | None = None
    url: str | None = None
    data: bytes | None = None
    remote: RemoteObject | None = None
    content_type: str | None = None
    #: Addressed by job id, not CID: may change (playlists grow while the job encodes).
    changing: bool = False


@dataclass(frozen=True)
class WorkerIO:
    """What one worker pod needs: its arguments' locations and the volumes to mount."""

    source: str
    out_dir: str
    progress_file: str
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)
    env_from: list[dict[str, Any]] = field(default_factory=list)


class Storage(Protocol):
    """The storage of uploads and outputs, in job terms (see the module docstring)."""

    def prepare(self) -> None:
        """At startup: create what is missing, or stop with a clear error if unusable."""

    # -- uploads ------------------------------------------------------------------------------
    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes fit now (a cheap early refusal of a declared upload;
        concurrent writers can still fill the volume, which writes then report)."""
        ...

    async def receive(
        self, job_id: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> StoredUpload: ...

    def has_source(self, job_id: str) -> bool: ...

    def open_source(self, job_id: str) -> contextlib.AbstractContextManager[Path]: ...

    def remove_source(self, job_id: str) -> None: ...

    # -- multipart uploads (blocking: run them in a thread) -----------------------------------
    def start_parts(self, job_id: str, size: int) -> str:
        """Make room for an upload sent in parts; returns the backend's handle for it."""
        ...

    def put_part(
        self, job_id: str, ref: str, number: int, offset: int, blocks: Sequence[bytes]
    ) -> str:
        """Store (or store again) one part, given as its blocks in order; returns a tag naming
        the bytes stored."""
        ...

    def finish_parts(self, job_id: str, ref: str, parts: dict[int, str]) -> None:
        """Join the recorded parts (number -> tag) into the job's source; idempotent."""
        ...

    def abort_parts(self, job_id: str, ref: str) -> None:
        """Remove every part and anything else of the upload."""
        ...

    def source_digest(self, job_id: str) -> str:
        """sha-256 (hex) of the job's source, read in order."""
        ...

    def source_head(self, job_id: str, size: int) -> bytes:
        """The first ``size`` bytes of the job's source (to recognise its container)."""
        ...

    # -- transcoding ----------------------------------------------------------------------------
    def stage(self, job_id: str) -> Workspace: ...

    def publish(self, workspace: Workspace) -> None: ...

    def publish_rendition(self, workspace: Workspace, rendition: str) -> None:
        """Publish one complete rendition of a job still encoding, then the workspace's
        master playlist (which lists only complete renditions): playable early."""

    def discard(self, workspace: Workspace) -> None: ...

    # -- outputs --------------------------------------------------------------------------------
    def has_output(self, job_id: str, name: str) -> bool: ...

    def write_output(self, job_id: str, name: str, text: str) -> None: ...

    def open_output(self, job_id: str, name: str) -> contextlib.AbstractContextManager[Path]: ...

    def playback(self, job_id: str, name: str) -> Playback | None: ...

    # -- cluster workers --------------------------------------------------------------------------
    def source_ref(self, job_id: str) -> str: ...

    def check_source_ref(self, job_id: str, ref: str) -> bool: ...

    def prepare_worker(self, job_id: str, uid: int, gid: int) -> None: ...

    def worker_io(self, job_id: str, target: str) -> WorkerIO: ...

    def read_progress(self, job_id: str, target: str) -> int | None: ...

    # -- clean-up -------------------------------------------------------------------------------
    def remove_outputs(self, job_id: str) -> None: ...

    def remove_scratch(self, job_id: str) -> None: ...

    def remove(self, job_id: str) -> None: ...

    def job_ids(self) -> list[str]: ...

    def close(self) -> None: ...


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError("malformed job id")
    return job_id


def check_target(target: str) -> str:
    if not _TARGET.match(target):
        raise ValueError(f"not a target name: {target!r}")
    return target


def check_output_name(name: str) -> bool:
    """Whether ``name`` is a file a player or the service may ask for in an output tree."""
    return bool(_OUTPUT_PATH.match(name)) and ".." not in name


class LocalStorage:
    """Jobs as directories under ``root`` (a local disk, or a volume the pods share).

    ``pod_volume``: how worker pods mount the same root (a hostPath or PVC volume source);
    None means the root's own path as a hostPath (single-node clusters and tests).
    """

    def __init__(self, root: Path, *, pod_volume: dict[str, Any] | None = None) -> None:
        self._root = root.resolve()
        self._jobs = self._root / "jobs"
        self._pod_volume = pod_volume
        self._sink_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._write_locks = _ThreadLocks()

    def prepare(self) -> None:
        self._jobs.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pool, self._sink_pool = self._sink_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _dir(self, job_id: str) -> Path:
        return self._jobs / check_job_id(job_id)

    def _source(self, job_id: str) -> Path:
        return self._dir(job_id) / SOURCE_NAME

    def _out(self, job_id: str) -> Path:
        return self._dir(job_id) / OUTPUT_DIR

    def _output(self, job_id: str, name: str) -> Path:
        if not check_output_name(name):
            raise ValueError(f"not an output name: {name!r}")
        return self._out(job_id) / name

    # -- uploads ------------------------------------------------------------------------------

    def room_for(self, size: int) -> bool:
        return free_bytes(self._jobs) >= size

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        # Created on first use, not at import: importing the module starts nothing.
        if self._sink_pool is None:
            self._sink_pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="upload-sink"
            )
        return self._sink_pool

    async def receive(
        self, job_id: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> StoredUpload:
        """Stream an upload to disk, hashing as it goes; memory stays at a few write buffers.

        Each batch of about ``_WRITE_BUFFER`` bytes is hashed on one worker thread and written
        (one ``writev``, no joined copy) on another while the event loop receives the next:
        three stages in a pipeline, so an upload goes as fast as the slowest of receiving,
        hashing and writing, not hashing plus writing (hashlib and writev release the GIL).
        Each stage holds at most one batch, in order, so memory stays bounded. On any failure
        (client gone, too large, empty) the job directory is removed.
        """
        directory = self._dir(job_id)
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=False)
        path = directory / SOURCE_NAME
        digest = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_len = 0
        hashing: concurrent.futures.Future[None] | None = None
        writing: concurrent.futures.Future[None] | None = None
        pool = self._pool()

        def hash_blocks(blocks: list[bytes]) -> None:
            for block in blocks:
                digest.update(block)

        try:
            with path.open("wb", buffering=0) as f:
                fd = f.fileno()
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
                            batch = _batch(pending)
                            pending = []
                            pending_len = 0
                            # Each stage takes the next batch once it is done with the previous
                            # one: the digest and the file both see the batches in order.
                            await _settled(hashing)
                            hashing = pool.submit(hash_blocks, batch)
                            await _settled(writing)
                            writing = pool.submit(_write_blocks, fd, batch)
                    await _settled(hashing)
                    await _settled(writing)
                    if pending:
                        batch = _batch(pending)
                        hash_blocks(batch)
                        _write_blocks(fd, batch)
                finally:
                    # On failure a thread may still hold f: let both finish (one batch each)
                    # before f is closed. Waiting here, not awaiting, so a cancellation cannot
                    # skip it.
                    concurrent.futures.wait([s for s in (hashing, writing) if s is not None])
            if size == 0:
                raise EmptyUpload("the request body is empty")
        except BaseException:
            await remove_job(self, job_id)
            raise
        return StoredUpload(size=size, sha256_hex=digest.hexdigest())

    def has_source(self, job_id: str) -> bool:
        return self._source(job_id).is_file()

    @contextlib.contextmanager
    def open_source(self, job_id: str) -> Iterator[Path]:
        """A local path to the upload (for probing), valid inside the ``with`` block."""
        path = self._source(job_id)
        if not path.is_file():
            raise FileNotFoundError(f"job {job_id} has no source")
        yield path

    def remove_source(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._source(job_id))

    # -- multipart uploads ------------------------------------------------------------------------

    def _partial(self, job_id: str) -> Path:
        return self._dir(job_id) / PARTIAL_NAME

    def start_parts(self, job_id: str, size: int) -> str:
        """One file of the declared size: each part is written at its offset, so finishing
        is a rename, not a copy (a sparse file until the parts arrive)."""
        directory = self._dir(job_id)
        directory.mkdir(parents=True, exist_ok=False)
        with self._partial(job_id).open("wb") as f:
            f.truncate(size)
        return ""

    def put_part(
        self, job_id: str, ref: str, number: int, offset: int, blocks: Sequence[bytes]
    ) -> str:
        fd = os.open(self._partial(job_id), os.O_WRONLY)
        try:
            # One writer per file at a time: concurrent parts spun on the inode's lock in the
            # kernel. About 1 MiB per call: one 8 MiB write cost 9x the CPU
            # (bench/multipart.py).
            with self._write_locks.hold(job_id):
                for block in blocks:
                    view = memoryview(block)
                    while view:
                        written = os.pwrite(fd, view[:_WRITE_BUFFER], offset)
                        view, offset = view[written:], offset + written
        finally:
            os.close(fd)
        return secrets.token_hex(8)  # a new tag per write: a re-sent part may differ

    def finish_parts(self, job_id: str, ref: str, parts: dict[int, str]) -> None:
        partial = self._partial(job_id)
        if partial.exists() or not self._source(job_id).is_file():
            os.replace(partial, self._source(job_id))

    def abort_parts(self, job_id: str, ref: str) -> None:
        self.remove(job_id)

    def source_digest(self, job_id: str) -> str:
        with self._source(job_id).open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def source_head(self, job_id: str, size: int) -> bytes:
        with self._source(job_id).open("rb") as f:
            return f.read(size)

    # -- transcoding ----------------------------------------------------------------------------

    def stage(self, job_id: str) -> Workspace:
        """The source in place and an empty ``out/``: outputs land where they are served."""
        out = self._out(job_id)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        return Workspace(job_id, self._source(job_id), out)

    def publish(self, workspace: Workspace) -> None:
        """Nothing to copy: the workspace's ``out_dir`` is the published tree."""

    def publish_rendition(self, workspace: Workspace, rendition: str) -> None:
        """Nothing to copy: the transcoder wrote the master atomically in the served tree."""

    def discard(self, workspace: Workspace) -> None:
        self.remove_outputs(workspace.job_id)

    # -- outputs --------------------------------------------------------------------------------

    def has_output(self, job_id: str, name: str) -> bool:
        return self._output(job_id, name).is_file()

    def write_output(self, job_id: str, name: str, text: str) -> None:
        """Atomically, so a player never reads a partial file."""
        target = self._output(job_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, text)

    @contextlib.contextmanager
    def open_output(self, job_id: str, name: str) -> Iterator[Path]:
        """A local path to a published output, valid inside the ``with`` block."""
        path = self._output(job_id, name)
        if not path.is_file():
            raise FileNotFoundError(f"job {job_id} has no output {name}")
        yield path

    def playback(self, job_id: str, name: str) -> Playback | None:
        """The file to serve, or None for names a player never asks for or that do not exist."""
        if not check_output_name(name):
            return None
        path = self._out(job_id) / name
        return Playback(file=path) if path.is_file() else None

    # -- cluster workers --------------------------------------------------------------------------

    def source_ref(self, job_id: str) -> str:
        """``spec.source`` of a VideoJob: the upload's path relative to the root."""
        return f"jobs/{check_job_id(job_id)}/{SOURCE_NAME}"

    def check_source_ref(self, job_id: str, ref: str) -> bool:
        """Whether a VideoJob's ``spec.source`` names this job's upload and nothing else."""
        try:
            return ref == self.source_ref(job_id)
        except ValueError:
            return False

    def prepare_worker(self, job_id: str, uid: int, gid: int) -> None:
        """``out/`` and ``progress/`` writable by the worker's uid/gid (non-root pods)."""
        for path in (self._out(job_id), self._dir(job_id) / PROGRESS_DIR):
            path.mkdir(parents=True, exist_ok=True)
            st = path.stat()
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(path, uid, gid)
            if st.st_mode & 0o2775 != 0o2775:
                path.chmod(0o2775)

    def worker_io(self, job_id: str, target: str) -> WorkerIO:
        check_target(target)
        mount = PurePosixPath(WORKER_MOUNT)
        volume = self._pod_volume or {"hostPath": {"path": str(self._root), "type": "Directory"}}
        return WorkerIO(
            source=str(mount / self.source_ref(job_id)),
            out_dir=str(mount / "jobs" / job_id / OUTPUT_DIR),
            progress_file=str(mount / "jobs" / job_id / PROGRESS_DIR / f"{target}.json"),
            volumes=[{"name": "storage", **volume}],
            mounts=[{"name": "storage", "mountPath": WORKER_MOUNT}],
        )

    def read_progress(self, job_id: str, target: str) -> int | None:
        """The percentage in a worker's progress file, or None when absent or unreadable.

        Writers replace the file atomically, but a half-written or foreign file must never
        break the poll: anything unexpected reads as "no news".
        """
        if not _TARGET.match(target):
            return None
        try:
            raw = (self._dir(job_id) / PROGRESS_DIR / f"{target}.json").read_bytes()
        except OSError:
            return None
        return parse_progress(raw)

    # -- clean-up -------------------------------------------------------------------------------

    def remove_outputs(self, job_id: str) -> None:
        shutil.rmtree(self._out(job_id), ignore_errors=True)

    def remove_scratch(self, job_id: str) -> None:
        shutil.rmtree(self._dir(job_id) / PROGRESS_DIR, ignore_errors=True)

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    def job_ids(self) -> list[str]:
        if not self._jobs.is_dir():
            return []
        return [p.name for p in self._jobs.iterdir() if p.is_dir()]


class _ThreadLocks:
    """One thread lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users <= 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def open_storage(cfg: VideoConfig) -> Storage:
    """The backend the settings name: a local directory, or an S3 bucket."""
    if cfg.storage.type == "s3":
        from atproto_video.core.s3 import S3Storage  # boto3 loads only when used

        return S3Storage.from_settings(cfg.storage, scratch=cfg.service.data_dir / "scratch")
    volume: dict[str, Any] | None = None
    if cfg.storage.pod_pvc:
        volume = {"persistentVolumeClaim": {"claimName": cfg.storage.pod_pvc}}
    elif cfg.storage.pod_hostpath:
        volume = {"hostPath": {"path": cfg.storage.pod_hostpath, "type": "Directory"}}
    return LocalStorage(cfg.storage_dir, pod_volume=volume)


async def remove_job(storage: Storage, job_id: str) -> None:
    """Remove everything of a job off the event loop, finishing even if the caller is cancelled
    (a refused upload must leave nothing behind)."""
    await shielded(asyncio.to_thread(storage.remove, job_id))


@contextlib.asynccontextmanager
async def local_source(storage: Storage, job_id: str) -> AsyncIterator[Path]:
    """:meth:`Storage.open_source` for async code: the blocking parts run in a thread."""
    async with _in_thread(storage.open_source(job_id)) as path:
        yield path


@contextlib.asynccontextmanager
async def local_output(storage: Storage, job_id: str, name: str) -> AsyncIterator[Path]:
    """:meth:`Storage.open_output` for async code: the blocking parts run in a thread."""
    async with _in_thread(storage.open_output(job_id, name)) as path:
        yield path


@contextlib.asynccontextmanager
async def _in_thread(cm: contextlib.AbstractContextManager[Path]) -> AsyncIterator[Path]:
    path = await asyncio.to_thread(cm.__enter__)
    try:
        yield path
    except BaseException as exc:
        await shielded(asyncio.to_thread(cm.__exit__, type(exc), exc, exc.__traceback__))
        raise
    await asyncio.to_thread(cm.__exit__, None, None, None)


#: More blocks than this in one batch are joined first: many tiny chunks (a body chunked by
#: its client) are cheaper to copy once than to pass one by one. writev takes at most IOV_MAX.
_MAX_IOV = 64


async def _settled(stage: concurrent.futures.Future[None] | None) -> None:
    """Wait for a pipeline stage's batch (and raise its error); a finished one costs no
    round trip through the event loop."""
    if stage is None:
        return
    if stage.done():
        stage.result()
    else:
        await asyncio.wrap_future(stage)


def _batch(blocks: list[bytes]) -> list[bytes]:
    return blocks if len(blocks) <= _MAX_IOV else [b"".join(blocks)]


def _write_blocks(fd: int, blocks: Sequence[bytes]) -> None:
    """Write ``blocks`` in order with as few ``writev`` calls as the kernel allows (it may
    write less than asked: a signal, a nearly full disk), never joining them in memory."""
    views = [memoryview(b) for b in blocks if b]
    while views:
        written = os.writev(fd, views[:_MAX_IOV])
        if written == 0:
            raise OSError(errno.EIO, "writev made no progress")
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def parse_progress(raw: bytes) -> int | None:
    """``{"progress": 0-100}`` as a worker writes it; None for anything else."""
    if len(raw) > 4096:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    value = data.get("progress") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0, min(100, int(value)))


async def shielded(work: Any) -> None:
    """Await clean-up even when the caller is being cancelled."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
