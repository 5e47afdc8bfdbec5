"""The content hash of a multipart upload, computed while its parts arrive.

Deduplication needs the sha-256 of the whole file in order. Reading 300 MB back at
finishUpload costs a second or more of CPU (and, with S3, a full download); instead each part
is hashed when it arrives if it is the next one, and parts arriving a little early (three are
in flight) wait in memory for their turn. The running hash lives in this process only: when
parts went to another replica, were re-sent after being hashed, or too many arrived early,
:meth:`OrderedHashes.digest` answers None and the caller reads the assembled file instead.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Cursor:
    lock: threading.Lock = field(default_factory=threading.Lock)
    digest: Any = field(default_factory=hashlib.sha256)
    next: int = 1
    hashed: dict[int, str] = field(default_factory=dict)  # part -> tag of the bytes hashed
    early: dict[int, tuple[Sequence[bytes], str]] = field(default_factory=dict)
    broken: bool = False


class OrderedHashes:
    """Running sha-256 per session; bounded in sessions and in parts held early."""

    def __init__(self, *, held_parts: int = 4, sessions: int = 1000,
                 held_bytes: int = 256 << 20) -> None:
        self.held_parts = held_parts
        self.sessions = sessions
        #: Bytes of early parts held across all sessions; beyond it a cursor gives up.
        self.held_bytes = held_bytes
        self._held = 0
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: dict[str, set[concurrent.futures.Future[None]]] = {}
        #: Parts waiting for their session's drain, in arrival order.
        self._queues: dict[str, list[tuple[int, Sequence[bytes], str]]] = {}

    def submit(self, session_id: str, number: int, blocks: Sequence[bytes], tag: str) -> None:
        """:meth:`offer` on a pool thread, so the part's answer does not wait for the hash;
        :meth:`digest` waits for what is still pending. A session's parts are offered one at
        a time in the order they arrived: a pool free to reorder them would hold more parts
        early than the client has in flight, and give up the running hash under load."""
        with self._lock:
            queue = self._queues.get(session_id)
            if queue is not None:  # a drain is running for this session: it takes this too
                queue.append((number, blocks, tag))
                return
            self._queues[session_id] = [(number, blocks, tag)]
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=os.cpu_count() or 1, thread_name_prefix="part-hash")
            future = self._pool.submit(self._drain, session_id)
            self._pending.setdefault(session_id, set()).add(future)
        future.add_done_callback(lambda done: self._settled(session_id, done))

    def _drain(self, session_id: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[session_id]
                if not queue:
                    del self._queues[session_id]
                    return
                number, blocks, tag = queue.pop(0)
            try:
                self.offer(session_id, number, blocks, tag)
            except BaseException:
                with self._lock:  # a bug: give the session's hash up, never leave it queued
                    self._queues.pop(session_id, None)
                    cursor = self._cursors.get(session_id)
                if cursor is not None:
                    with cursor.lock:
                        self._break(cursor)
                raise

    def _settled(self, session_id: str, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            pending = self._pending.get(session_id)
            if pending is not None:
                pending.discard(future)
                if not pending:
                    del self._pending[session_id]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _hold(self, size: int) -> bool:
        with self._lock:
            if self._held + size > self.held_bytes:
                return False
            self._held += size
            return True

    def _unhold(self, size: int) -> None:
        with self._lock:
            self._held -= size

    def _cursor(self, session_id: str) -> _Cursor:
        evicted: list[_Cursor] = []
        with self._lock:
            cursor = self._cursors.get(session_id)
            if cursor is None:
                cursor = self._cursors[session_id] = _Cursor()
                while len(self._cursors) > self.sessions:
                    evicted.append(self._cursors.popitem(last=False)[1])
            self._cursors.move_to_end(session_id)
        for old in evicted:
            with old.lock:
                self._break(old)
        return cursor

    def offer(self, session_id: str, number: int, blocks: Sequence[bytes], tag: str) -> None:
        """A part stored under ``tag``: hash it now if it is next (blocking: run in a thread)."""
        cursor = self._cursor(session_id)
        with cursor.lock:
            if cursor.broken:
                return
            if number < cursor.next:  # re-sent after hashing: digest() compares the tags
                return
            if number > cursor.next:
                previous = cursor.early.pop(number, None)
                if previous is not None:
                    self._unhold(_size(previous[0]))
                if len(cursor.early) >= self.held_parts or not self._hold(_size(blocks)):
                    self._break(cursor)  # a part is missing here: give up, free the memory
                    return
                cursor.early[number] = (blocks, tag)
                return
            for block in blocks:
                cursor.digest.update(block)
            cursor.hashed[number] = tag
            cursor.next += 1
            while cursor.next in cursor.early:
                held, held_tag = cursor.early.pop(cursor.next)
                self._unhold(_size(held))
                for block in held:
                    cursor.digest.update(block)
                cursor.hashed[cursor.next] = held_tag
                cursor.next += 1

    def _break(self, cursor: _Cursor) -> None:
        cursor.broken = True
        self._unhold(sum(_size(blocks) for blocks, _ in cursor.early.values()))
        cursor.early.clear()

    def digest(self, session_id: str, parts: dict[int, str]) -> str | None:
        """The hex digest if exactly the recorded ``parts`` (number -> tag) were hashed
        (blocking: waits for parts still being hashed)."""
        with self._lock:
            pending = list(self._pending.get(session_id, ()))
        concurrent.futures.wait(pending)
        with self._lock:
            cursor = self._cursors.get(session_id)
        if cursor is None:
            return None
        with cursor.lock:
            if cursor.broken or cursor.hashed != parts:
                return None
            return str(cursor.digest.copy().hexdigest())

    def drop(self, session_id: str) -> None:
        with self._lock:
            cursor = self._cursors.pop(session_id, None)
        if cursor is not None:
            with cursor.lock:
                self._break(cursor)


def _size(blocks: Sequence[bytes]) -> int:
    return sum(len(block) for block in blocks)
