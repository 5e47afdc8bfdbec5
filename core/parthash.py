"""The content hash of a multipart upload, computed while its parts arrive.

Deduplication needs the sha-256 of the whole file in order. Reading 300 MB back at
finishUpload costs a second or more of CPU (and, with S3, a full download); instead each part
is hashed when it arrives if it is the next one, and parts arriving a little early (three are
in flight) wait in memory for their turn. The running hash lives in this process only: when
parts went to another replica, were re-sent after being hashed, or too many arrived early,
:meth:`OrderedHashes.digest` answers None and the caller reads the assembled file instead.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Cursor:
    lock: threading.Lock = field(default_factory=threading.Lock)
    digest: Any = field(default_factory=hashlib.sha256)
    next: int = 1
    hashed: dict[int, str] = field(default_factory=dict)  # part -> tag of the bytes hashed
    early: dict[int, tuple[bytes, str]] = field(default_factory=dict)
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

    def offer(self, session_id: str, number: int, body: bytes, tag: str) -> None:
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
                    self._unhold(len(previous[0]))
                if len(cursor.early) >= self.held_parts or not self._hold(len(body)):
                    self._break(cursor)  # a part is missing here: give up, free the memory
                    return
                cursor.early[number] = (body, tag)
                return
            cursor.digest.update(body)
            cursor.hashed[number] = tag
            cursor.next += 1
            while cursor.next in cursor.early:
                held, held_tag = cursor.early.pop(cursor.next)
                self._unhold(len(held))
                cursor.digest.update(held)
                cursor.hashed[cursor.next] = held_tag
                cursor.next += 1

    def _break(self, cursor: _Cursor) -> None:
        cursor.broken = True
        self._unhold(sum(len(body) for body, _ in cursor.early.values()))
        cursor.early.clear()

    def digest(self, session_id: str, parts: dict[int, str]) -> str | None:
        """The hex digest if exactly the recorded ``parts`` (number -> tag) were hashed."""
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
