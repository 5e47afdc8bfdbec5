"""The S3 backend of :class:`~atproto_video.core.storage.Storage` (boto3), for any S3-compatible
store (AWS S3, MinIO, SeaweedFS, GCS interoperability, R2).

Objects live under ``<prefix>jobs/<id>/``: ``source`` (the upload), ``out/...`` (the SPEC
section 5 layout) and ``progress/<target>.json`` (cluster workers). The transcoder works on
local files: :meth:`S3Storage.stage` downloads the source into a scratch directory and
:meth:`S3Storage.publish` uploads the outputs and removes it. Cluster workers do the same
themselves (:class:`WorkerFiles`), with an ``emptyDir`` as scratch and no shared volume.

Credentials come from boto3's standard chain (environment, web identity, instance profile);
nothing here reads a secret.

A store that cannot be reached, or answers 5xx, raises :class:`StorageUnavailable`; the
steps of a job retry it for ``VIDEO_S3_RETRY_S`` before giving up, an upload does not (the
client gets a 503 and retries itself).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from atproto_video.core.config import ConfigError, StorageSettings
from atproto_video.core.storage import (
    MASTER_NAME,
    OUTPUT_DIR,
    PROGRESS_DIR,
    SOURCE_NAME,
    EmptyUpload,
    Playback,
    RemoteObject,
    StorageUnavailable,
    StoredUpload,
    UploadTooLarge,
    WorkerIO,
    Workspace,
    check_job_id,
    check_output_name,
    check_target,
    content_type,
    parse_progress,
    shielded,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Multipart part size: S3's minimum is 5 MiB (except the last part).
PART_SIZE = 8 << 20
#: Parts sent at once by one upload; one more buffer fills meanwhile.
PARTS_IN_FLIGHT = 2
#: Playlists are read into memory to be served; anything larger is not ours.
MAX_PLAYLIST_BYTES = 1 << 20
#: Where worker pods keep the source and their outputs (an emptyDir).
WORKER_SCRATCH = "/scratch"
#: Environment a worker needs to reach the store (not the bucket: that is in its arguments).
_WORKER_ENV = ("VIDEO_STORAGE", "VIDEO_S3_ENDPOINT", "VIDEO_S3_REGION",
               "VIDEO_S3_FORCE_PATH_STYLE", "VIDEO_S3_RETRY_S")


def client_for(settings: StorageSettings) -> Any:
    """A boto3 S3 client for these settings, credentials from boto3's chain."""
    addressing = "path" if settings.s3_force_path_style else "auto"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint or None,
        region_name=settings.s3_region or None,
        config=BotoConfig(
            s3={"addressing_style": addressing},
            # Our own loop retries job steps for minutes; boto3's covers single blips.
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=16,
        ),
    )


def unavailable(exc: BaseException) -> bool:
    """Whether an error means the store is down (retry later), not that a request is wrong."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return int(status) >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError")
    return isinstance(exc, BotoCoreError) and not isinstance(exc, NoCredentialsError)


def not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


def retrying(fn: Callable[[], T], *, budget_s: float, what: str) -> T:
    """``fn()``, retried with backoff while the store is unavailable, for up to ``budget_s``."""
    deadline = time.monotonic() + budget_s
    delay = 0.5
    while True:
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            if not unavailable(exc):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(f"object storage unavailable while {what}: {exc}") from exc
            log.warning("object storage unavailable while %s; retrying: %s", what, exc)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)


class S3Storage:
    """Uploads and outputs as objects; a local scratch directory while a job transcodes."""

    def __init__(self, client: Any, settings: StorageSettings, scratch: Path) -> None:
        self.client = client
        self.settings = settings
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self._scratch = scratch.resolve()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: StorageSettings, scratch: Path) -> S3Storage:
        return cls(client_for(settings), settings, scratch)

    # -- keys ---------------------------------------------------------------------------------

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}jobs/{check_job_id(job_id)}/"

    def _source(self, job_id: str) -> str:
        return self._job(job_id) + SOURCE_NAME

    def _output(self, job_id: str, name: str) -> str:
        if not check_output_name(name):
            raise ValueError(f"not an output name: {name!r}")
        return f"{self._job(job_id)}{OUTPUT_DIR}/{name}"

    def _progress(self, job_id: str, target: str) -> str:
        return f"{self._job(job_id)}{PROGRESS_DIR}/{check_target(target)}.json"

    def _scratch_dir(self, job_id: str) -> Path:
        return self._scratch / check_job_id(job_id)

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return retrying(fn, budget_s=self.settings.s3_retry_s, what=what)

    # -- life cycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Stop startup with one line if the bucket is missing or the credentials are refused."""
        where = self.client.meta.endpoint_url
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ConfigError(
                "VIDEO_STORAGE=s3: no S3 credentials found (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, web identity or an instance profile)"
            ) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchBucket") or status == 404:
                raise ConfigError(
                    f"VIDEO_S3_BUCKET: bucket {self.bucket!r} does not exist at {where}"
                ) from None
            raise ConfigError(
                f"VIDEO_S3_BUCKET: access to bucket {self.bucket!r} at {where} was refused "
                f"({code or status}): check the S3 credentials"
            ) from None
        except BotoCoreError as exc:
            raise ConfigError(f"VIDEO_S3_ENDPOINT: cannot reach {where}: {exc}") from None
        self._scratch.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.client.close()

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(4, os.cpu_count() or 1), thread_name_prefix="s3")
            return self._pool

    # -- uploads ------------------------------------------------------------------------------

    def room_for(self, size: int) -> bool:
        """Uploads stream to the store, not to a local disk: the store says when it is full."""
        return True

    async def receive(
        self, job_id: str, chunks: AsyncIterator[bytes], max_bytes: int
    ) -> StoredUpload:
        """Stream an upload into a multipart upload, hashing as it goes.

        Chunks are copied into reused part buffers; a full part is hashed (in order, on this
        upload's own thread) and sent (on the shared pool) while the next one fills. Two
        parts in flight keep the store busy (one leaves it idle between parts: 0.65-0.70 of
        boto3's own upload_file, bench/s3_upload.py); three buffers bound memory at 24 MiB.
        On any failure the multipart upload is aborted: no object, no orphaned parts.
        """
        key = self._source(job_id)
        try:
            created = await asyncio.to_thread(
                self.client.create_multipart_upload, Bucket=self.bucket, Key=key,
                ContentType="application/octet-stream")
        except (ClientError, BotoCoreError) as exc:
            if unavailable(exc):
                raise StorageUnavailable("object storage unavailable") from exc
            raise
        upload_id = str(created["UploadId"])
        digest = hashlib.sha256()
        hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="s3-hash")
        pool = self._threads()
        parts: list[dict[str, Any]] = []
        in_flight: collections.deque[_Part] = collections.deque()
        made = 0

        def send(body: bytes | bytearray, number: int) -> None:
            answer = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                             PartNumber=number, Body=body)
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        numbers = itertools.count(1)

        def start(body: bytes | bytearray, buffer: bytearray | None) -> None:
            hashed = hasher.submit(digest.update, body)  # one thread: in order
            sent = pool.submit(send, body, next(numbers))
            in_flight.append(_Part(hashed, sent, buffer))

        async def settle_oldest() -> bytearray | None:
            part = in_flight.popleft()
            await asyncio.wrap_future(part.hashed)
            await asyncio.wrap_future(part.sent)
            return part.buffer

        async def fresh_buffer() -> bytearray:
            nonlocal made
            if made < PARTS_IN_FLIGHT + 1:
                made += 1
                return bytearray(PART_SIZE)
            buffer = await settle_oldest()
            assert buffer is not None
            return buffer

        size = 0
        try:
            try:
                buffer: bytearray | None = None
                filled = 0
                async for chunk in chunks:
                    if not chunk:
                        continue
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadTooLarge(f"upload exceeds {max_bytes} bytes")
                    view = memoryview(chunk)
                    offset = 0
                    while offset < len(view):
                        if buffer is None:
                            buffer, filled = await fresh_buffer(), 0
                        n = min(PART_SIZE - filled, len(view) - offset)
                        buffer[filled:filled + n] = view[offset:offset + n]
                        filled += n
                        offset += n
                        if filled == PART_SIZE:
                            start(buffer, buffer)
                            buffer = None
                if size == 0:
                    raise EmptyUpload("the request body is empty")
                if buffer is not None and filled:
                    start(bytes(memoryview(buffer)[:filled]), None)
                while in_flight:
                    await settle_oldest()
                parts.sort(key=lambda part: int(part["PartNumber"]))
                await asyncio.to_thread(
                    self.client.complete_multipart_upload, Bucket=self.bucket, Key=key,
                    UploadId=upload_id, MultipartUpload={"Parts": parts})
            finally:
                # Parts in flight must finish before the abort, or one could land after it.
                concurrent.futures.wait([f for p in in_flight for f in (p.hashed, p.sent)])
                hasher.shutdown(wait=True)
        except (ClientError, BotoCoreError) as exc:
            await shielded(asyncio.to_thread(self._abort, key, upload_id))
            if unavailable(exc):
                raise StorageUnavailable("object storage unavailable") from exc
            raise
        except BaseException:
            await shielded(asyncio.to_thread(self._abort, key, upload_id))
            raise
        return StoredUpload(size=size, sha256_hex=digest.hexdigest())

    # -- multipart uploads (the client's parts are the store's parts) ---------------------------

    def _store_call(self, fn: Callable[[], T]) -> T:
        """A client is waiting: no retries, an unavailable store is StorageUnavailable."""
        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            if unavailable(exc):
                raise StorageUnavailable("object storage unavailable") from exc
            raise

    def start_parts(self, job_id: str, size: int) -> str:
        key = self._source(job_id)
        created = self._store_call(lambda: self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType="application/octet-stream"))
        return str(created["UploadId"])

    def put_part(
        self, job_id: str, ref: str, number: int, offset: int, blocks: Sequence[bytes]
    ) -> str:
        key = self._source(job_id)
        body = b"".join(blocks)
        answer = self._store_call(lambda: self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=ref, PartNumber=number, Body=body))
        return str(answer["ETag"])

    def finish_parts(self, job_id: str, ref: str, parts: dict[int, str]) -> None:
        key = self._source(job_id)
        listed = [{"PartNumber": n, "ETag": tag} for n, tag in sorted(parts.items())]
        try:
            self._store_call(lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=ref, MultipartUpload={"Parts": listed}))
        except ClientError as exc:
            # Completed already (a retried finish): the object is there, the upload is gone.
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code != "NoSuchUpload" or not self._exists(key):
                raise

    def abort_parts(self, job_id: str, ref: str) -> None:
        if ref:
            self._abort(self._source(job_id), ref)
        self.remove(job_id)

    def source_digest(self, job_id: str) -> str:
        """A streaming read of the object: nothing is written to disk."""
        key = self._source(job_id)
        digest = hashlib.sha256()
        body = self._store_call(lambda: self.client.get_object(Bucket=self.bucket, Key=key))["Body"]
        with contextlib.closing(body):
            for chunk in body.iter_chunks(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def source_head(self, job_id: str, size: int) -> bytes:
        key = self._source(job_id)
        body = self._store_call(lambda: self.client.get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes=0-{size - 1}"))["Body"]
        with contextlib.closing(body):
            return bytes(body.read())

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; if the store is down, keep trying in the background."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            if not unavailable(exc):
                return  # already gone
            log.warning("cannot abort a multipart upload yet; retrying in the background")
            self._threads().submit(self._abort_later, key, upload_id)

    def _abort_later(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError, StorageUnavailable):
            self._retry(lambda: self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id), "aborting an upload")

    def _exists(self, key: str) -> bool:
        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if not_found(exc):
                    return False
                raise
            return True

        return self._retry(head, "looking up an object")

    def has_source(self, job_id: str) -> bool:
        return self._exists(self._source(job_id))

    @contextlib.contextmanager
    def open_source(self, job_id: str) -> Iterator[Path]:
        with self._download(self._source(job_id)) as path:
            yield path

    def remove_source(self, job_id: str) -> None:
        key = self._source(job_id)
        self._retry(lambda: self.client.delete_object(Bucket=self.bucket, Key=key),
                    "removing an upload")

    @contextlib.contextmanager
    def _download(self, key: str) -> Iterator[Path]:
        """The object in a temporary file under the scratch directory, removed afterwards."""
        self._scratch.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._scratch, prefix=".download-")
        os.close(fd)
        try:
            self._fetch(key, Path(tmp))
            yield Path(tmp)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _fetch(self, key: str, dest: Path) -> None:
        download(self.client, self.bucket, key, dest, budget_s=self.settings.s3_retry_s)

    # -- transcoding ----------------------------------------------------------------------------

    def stage(self, job_id: str) -> Workspace:
        """The source downloaded into ``<scratch>/<id>/`` and an empty ``out/`` beside it."""
        directory = self._scratch_dir(job_id)
        shutil.rmtree(directory, ignore_errors=True)
        (directory / OUTPUT_DIR).mkdir(parents=True)
        source = directory / SOURCE_NAME
        try:
            self._fetch(self._source(job_id), source)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return Workspace(job_id, source, directory / OUTPUT_DIR)

    def publish(self, workspace: Workspace) -> None:
        """Upload every output file, playlists last, then drop the scratch directory."""
        try:
            upload_tree(self.client, workspace.out_dir, self.bucket,
                        f"{self._job(workspace.job_id)}{OUTPUT_DIR}/",
                        budget_s=self.settings.s3_retry_s)
        finally:
            shutil.rmtree(self._scratch_dir(workspace.job_id), ignore_errors=True)

    def publish_rendition(self, workspace: Workspace, rendition: str) -> None:
        """The rendition's segments and playlist, then the master playlist in one PUT: a
        player never finds the master naming a playlist that is not there yet."""
        check_output_name(f"{rendition}/{MASTER_NAME}")
        out = f"{self._job(workspace.job_id)}{OUTPUT_DIR}/"
        upload_tree(self.client, workspace.out_dir / rendition, self.bucket,
                    f"{out}{rendition}/", budget_s=self.settings.s3_retry_s)
        text = (workspace.out_dir / MASTER_NAME).read_text(encoding="utf-8")
        self.write_output(workspace.job_id, MASTER_NAME, text)

    def discard(self, workspace: Workspace) -> None:
        shutil.rmtree(self._scratch_dir(workspace.job_id), ignore_errors=True)
        self.remove_outputs(workspace.job_id)

    # -- outputs --------------------------------------------------------------------------------

    def has_output(self, job_id: str, name: str) -> bool:
        return self._exists(self._output(job_id, name))

    def write_output(self, job_id: str, name: str, text: str) -> None:
        key = self._output(job_id, name)
        self._retry(lambda: self.client.put_object(
            Bucket=self.bucket, Key=key, Body=text.encode(), ContentType=content_type(name)),
            "writing an output")

    @contextlib.contextmanager
    def open_output(self, job_id: str, name: str) -> Iterator[Path]:
        with self._download(self._output(job_id, name)) as path:
            yield path

    def playback(self, job_id: str, name: str) -> Playback | None:
        """Playlists as bytes (their relative URLs must resolve against ``/watch/``, not a
        signed URL whose query a player would drop); the rest by redirect or proxy.

        A player is waiting: no retries here, an unavailable store is StorageUnavailable."""
        if not check_output_name(name):
            return None
        try:
            return self._playback(self._output(job_id, name), name)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and not_found(exc):
                return None
            if unavailable(exc):
                raise StorageUnavailable("object storage unavailable") from exc
            raise

    def _playback(self, key: str, name: str) -> Playback | None:
        ctype = content_type(name)
        if name.endswith(".m3u8"):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with contextlib.closing(body):
                data = body.read(MAX_PLAYLIST_BYTES + 1)
            if len(data) > MAX_PLAYLIST_BYTES:
                return None
            return Playback(data=data, content_type=ctype)
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        if self.settings.playback == "proxy":
            return Playback(remote=RemoteObject(
                size=int(head["ContentLength"]), content_type=ctype,
                read=lambda start, end: self._read_range(key, start, end)))
        if self.settings.playback_base_url:
            return Playback(url=f"{self.settings.playback_base_url}/{quote(key)}")
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=self.settings.playback_url_ttl_s)
        return Playback(url=str(url))

    def _read_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive) of an object, in chunks (blocking)."""
        answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}")
        body = answer["Body"]
        with contextlib.closing(body):
            yield from body.iter_chunks(1 << 16)

    # -- cluster workers --------------------------------------------------------------------------

    def source_ref(self, job_id: str) -> str:
        """``spec.source`` of a VideoJob: the upload's URI."""
        return f"s3://{self.bucket}/{self._source(job_id)}"

    def check_source_ref(self, job_id: str, ref: str) -> bool:
        try:
            return ref == self.source_ref(job_id)
        except ValueError:
            return False

    def prepare_worker(self, job_id: str, uid: int, gid: int) -> None:
        """Nothing: workers write objects, not files on a shared volume."""

    def worker_io(self, job_id: str, target: str) -> WorkerIO:
        """``s3://`` locations, an emptyDir scratch, the store's settings and credentials."""
        env = [{"name": k, "value": v} for k, v in self.settings.to_env().items()
               if k in _WORKER_ENV]
        env.append({"name": "TMPDIR", "value": WORKER_SCRATCH})
        secret = self.settings.s3_credentials_secret
        return WorkerIO(
            source=self.source_ref(job_id),
            out_dir=f"s3://{self.bucket}/{self._job(job_id)}{OUTPUT_DIR}/",
            progress_file=f"s3://{self.bucket}/{self._progress(job_id, target)}",
            volumes=[{"name": "scratch", "emptyDir": {}}],
            mounts=[{"name": "scratch", "mountPath": WORKER_SCRATCH}],
            env=env,
            env_from=[{"secretRef": {"name": secret}}] if secret else [],
        )

    def read_progress(self, job_id: str, target: str) -> int | None:
        """The percentage in a worker's progress object; None when absent or unreadable."""
        try:
            key = self._progress(job_id, target)
        except ValueError:
            return None
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with contextlib.closing(body):
                raw = body.read(4097)
        except (ClientError, BotoCoreError):
            return None  # absent, or the store is down: no news this tick
        return parse_progress(raw)

    # -- clean-up -------------------------------------------------------------------------------

    def _delete_under(self, prefix: str) -> None:
        def sweep() -> None:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket,
                                               Delete={"Objects": keys, "Quiet": True})

        self._retry(sweep, "removing objects")

    def remove_outputs(self, job_id: str) -> None:
        self._delete_under(f"{self._job(job_id)}{OUTPUT_DIR}/")

    def remove_scratch(self, job_id: str) -> None:
        shutil.rmtree(self._scratch_dir(job_id), ignore_errors=True)
        self._delete_under(f"{self._job(job_id)}{PROGRESS_DIR}/")

    def remove(self, job_id: str) -> None:
        prefix = self._job(job_id)
        self._delete_under(prefix)
        answer = self._retry(lambda: self.client.list_multipart_uploads(
            Bucket=self.bucket, Prefix=prefix), "listing uploads")
        for upload in answer.get("Uploads", []):
            self._abort(str(upload["Key"]), str(upload["UploadId"]))
        shutil.rmtree(self._scratch_dir(job_id), ignore_errors=True)

    def job_ids(self) -> list[str]:
        root = f"{self.prefix}jobs/"
        found: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=root, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.add(str(common["Prefix"])[len(root):].rstrip("/"))
        # Multipart uploads not completed (an upload cut off, a session open) are no objects.
        uploads = self.client.get_paginator("list_multipart_uploads")
        for page in uploads.paginate(Bucket=self.bucket, Prefix=root):
            for upload in page.get("Uploads", []):
                found.add(str(upload["Key"])[len(root):].split("/", 1)[0])
        return sorted(found)


@dataclass(frozen=True)
class _Part:
    """A part being hashed and sent; ``buffer`` is reusable once both are done."""

    hashed: concurrent.futures.Future[None]
    sent: concurrent.futures.Future[None]
    buffer: bytearray | None


def download(client: Any, bucket: str, key: str, dest: Path, *, budget_s: float) -> None:
    """An object into ``dest``, waiting out outages; FileNotFoundError if it does not exist."""

    def get() -> None:
        try:
            client.download_file(bucket, key, str(dest))
        except ClientError as exc:
            if not_found(exc):
                raise FileNotFoundError(key) from None
            raise

    retrying(get, budget_s=budget_s, what="downloading an object")


def upload_tree(client: Any, root: Path, bucket: str, prefix: str, *, budget_s: float) -> None:
    """Upload the files under ``root`` to ``prefix``: media first, then rendition playlists,
    the master playlist last, so a player never finds a playlist naming a missing segment."""

    def order(path: Path) -> tuple[int, str]:
        name = path.relative_to(root).as_posix()
        if name.endswith(".m3u8"):
            return (2 if "/" not in name else 1), name
        return 0, name

    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    for path in sorted(files, key=order):
        name = path.relative_to(root).as_posix()
        retrying(lambda path=path, name=name: client.upload_file(  # type: ignore[misc]
            str(path), bucket, prefix + name, ExtraArgs={"ContentType": content_type(name)}),
            budget_s=budget_s, what="publishing outputs")


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key


class WorkerFiles:
    """A worker pod's side of S3 storage: fetch the source, publish outputs, report progress.

    Progress goes to one small object per target, which the operator reads on its poll: the
    worker needs only object access to its job's keys, never the Kubernetes API.
    """

    #: Progress objects are rewritten at most this often (the operator polls every second).
    PROGRESS_INTERVAL_S = 0.5

    def __init__(self, client: Any, scratch: Path, *, budget_s: float) -> None:
        self.client = client
        self.scratch = scratch
        self.budget_s = budget_s
        self._last_put = 0.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerFiles:
        settings = StorageSettings.from_env(os.environ if env is None else env)
        scratch = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
        return cls(client_for(settings), scratch, budget_s=settings.s3_retry_s)

    def fetch_source(self, uri: str) -> Path:
        bucket, key = parse_uri(uri)
        dest = self.scratch / "source"
        self.scratch.mkdir(parents=True, exist_ok=True)
        download(self.client, bucket, key, dest, budget_s=self.budget_s)
        return dest

    def out_dir(self) -> Path:
        path = self.scratch / "out"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def publish(self, out_dir: Path, uri: str) -> None:
        bucket, prefix = parse_uri(uri.rstrip("/") + "/")
        upload_tree(self.client, out_dir, bucket, prefix, budget_s=self.budget_s)

    def fetch_rendition(self, uri: str, rendition: str, out_dir: Path) -> None:
        """A published rendition (its playlist and the media it lists) into ``out_dir``: the
        input of the MP4 remux of a segment-encoded job."""
        bucket, prefix = parse_uri(uri.rstrip("/") + "/")
        if not check_output_name(f"{rendition}/video.m3u8"):
            raise ValueError(f"not a rendition name: {rendition!r}")
        local = out_dir / rendition
        local.mkdir(parents=True, exist_ok=True)
        playlist = local / "video.m3u8"
        download(self.client, bucket, f"{prefix}{rendition}/video.m3u8", playlist,
                 budget_s=self.budget_s)
        for line in playlist.read_text(encoding="utf-8").splitlines():
            name = line.strip()
            if not name or name.startswith("#"):
                continue
            if not check_output_name(f"{rendition}/{name}"):
                raise ValueError(f"unexpected media name {name!r} in {rendition}/video.m3u8")
            download(self.client, bucket, f"{prefix}{rendition}/{name}", local / name,
                     budget_s=self.budget_s)

    def publish_file(self, path: Path, uri: str) -> None:
        """One output file (e.g. ``video.mp4``) to the output prefix, by its name."""
        bucket, prefix = parse_uri(uri.rstrip("/") + "/")
        retrying(lambda: self.client.upload_file(
            str(path), bucket, prefix + path.name,
            ExtraArgs={"ContentType": content_type(path.name)}),
            budget_s=self.budget_s, what="publishing outputs")

    def put_progress(self, uri: str, body: str, *, final: bool = False) -> None:
        """Best effort: a lost progress write only delays the status bar."""
        now = time.monotonic()
        if not final and now - self._last_put < self.PROGRESS_INTERVAL_S:
            return
        self._last_put = now
        bucket, key = parse_uri(uri)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body.encode(),
                                   ContentType="application/json")
        except (ClientError, BotoCoreError) as exc:
            log.warning("cannot write progress: %s", exc)

