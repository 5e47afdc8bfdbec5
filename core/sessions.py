"""Multipart upload sessions (startUpload .. finishUpload): their record and its rules.

A session is ``created`` while parts arrive, ``finishing`` while one finishUpload assembles
it, then terminal: ``completed`` (a job exists: the session's own, or on deduplication an
earlier one), ``failed`` (with a reason), ``aborted`` or ``expired``. Terminal sessions stay
readable until they age out of retention. Every transition is one conditional UPDATE, and a
transition that ends the upload without a job releases its quota reservation in the same
transaction, so a reservation is released exactly once whoever gets there first (a client's
abort, the expiry sweep, a failed finish).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row

from atproto_video.core.db import video_upload_part, video_upload_session
from atproto_video.core.quota import release

#: Size of every part but the last. S3 needs at least 5 MiB; the Bluesky app sends 8 MiB.
PART_SIZE = 8 << 20
#: Terminal sessions are kept readable this long, then forgotten (UploadNotFound).
RETENTION = dt.timedelta(days=7)


class SessionState(StrEnum):
    CREATED = "created"
    FINISHING = "finishing"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in (SessionState.CREATED, SessionState.FINISHING)


def part_count(size: int, part_size: int = PART_SIZE) -> int:
    return -(-size // part_size)


def expected_part_size(size: int, part_size: int, number: int) -> int:
    """The exact length of part ``number`` (1-based): full parts, then the remainder."""
    if number < part_count(size, part_size):
        return part_size
    return size - (number - 1) * part_size


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


@dataclass(frozen=True)
class UploadSession:
    id: str
    did: str
    state: SessionState
    size_bytes: int
    part_size: int
    part_count: int
    expires_at: dt.datetime
    mime_type: str | None = None
    upload_name: str | None = None
    storage_ref: str | None = None
    failure_reason: str | None = None
    completed_job_id: str | None = None
    updated_at: dt.datetime | None = None

    @classmethod
    def from_row(cls, row: Row[Any]) -> UploadSession:
        m = row._mapping
        return cls(
            id=m["id"], did=m["did"], state=SessionState(m["state"]),
            size_bytes=int(m["size_bytes"]), part_size=int(m["part_size"]),
            part_count=int(m["part_count"]), expires_at=_aware(m["expires_at"]) or _utcnow(),
            mime_type=m["mime_type"], upload_name=m["upload_name"],
            storage_ref=m["storage_ref"], failure_reason=m["failure_reason"],
            completed_job_id=m["completed_job_id"], updated_at=_aware(m["updated_at"]))

    def expired_at(self, now: dt.datetime) -> bool:
        return self.state is SessionState.CREATED and now >= self.expires_at


_S = video_upload_session.c
_P = video_upload_part.c


class SessionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def create(self, session: UploadSession) -> None:
        now = _utcnow()
        with self.engine.begin() as conn:
            conn.execute(insert(video_upload_session).values(
                id=session.id, did=session.did, state=session.state.value,
                size_bytes=session.size_bytes, part_size=session.part_size,
                part_count=session.part_count, mime_type=session.mime_type,
                upload_name=session.upload_name, storage_ref=session.storage_ref,
                expires_at=session.expires_at, created_at=now, updated_at=now))

    def get(self, session_id: str) -> UploadSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(video_upload_session).where(_S.id == session_id)).first()
        return UploadSession.from_row(row) if row else None

    def parts(self, session_id: str) -> dict[int, str]:
        """Part number -> tag of the bytes stored for it."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_P.part_number, _P.tag).where(_P.session_id == session_id)
                                .order_by(_P.part_number)).all()
        return {int(r.part_number): str(r.tag) for r in rows}

    def record_part(self, session_id: str, number: int, size: int, tag: str) -> bool:
        """Record a stored part (again, for a re-sent one) while the session is created and
        not expired; False otherwise. The session row is written first, so this and the
        start of a finish take turns."""
        now = _utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(update(video_upload_session)
                               .where(_S.id == session_id, _S.state == SessionState.CREATED.value,
                                      _S.expires_at > now)
                               .values(updated_at=now))
            if res.rowcount != 1:
                return False
            stmt = self._insert(video_upload_part).values(
                session_id=session_id, part_number=number, size_bytes=size, tag=tag)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["session_id", "part_number"],
                set_={"size_bytes": size, "tag": tag}))
        return True

    def transition(
        self,
        session_id: str,
        frm: Iterable[SessionState],
        to: SessionState,
        *,
        release_quota: bool = False,
        **values: Any,
    ) -> bool:
        """Move from one of ``frm`` to ``to`` (with column ``values``); False if the session
        was elsewhere. ``release_quota``: release its reservation in the same transaction."""
        now = _utcnow()
        if to.terminal:
            values.setdefault("finished_at", now)
        with self.engine.begin() as conn:
            res = conn.execute(update(video_upload_session)
                               .where(_S.id == session_id, _S.state.in_([s.value for s in frm]))
                               .values(state=to.value, updated_at=now, **values))
            if res.rowcount != 1:
                return False
            if release_quota:
                release(conn, session_id)
        return True

    def due(self, now: dt.datetime, finishing_before: dt.datetime) -> list[UploadSession]:
        """Created sessions past ``expiresAt`` and finishes that stopped (their process died)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(video_upload_session).where(
                ((_S.state == SessionState.CREATED.value) & (_S.expires_at <= now))
                | ((_S.state == SessionState.FINISHING.value)
                   & (_S.updated_at < finishing_before)))).all()
        return [UploadSession.from_row(r) for r in rows]

    def forget_before(self, before: dt.datetime) -> int:
        """Drop terminal sessions (and their part records) that ended before ``before``."""
        terminal = [s.value for s in SessionState if s.terminal]
        with self.engine.begin() as conn:
            ids = [r.id for r in conn.execute(select(_S.id).where(
                _S.state.in_(terminal), _S.finished_at < before)).all()]
            if ids:
                conn.execute(delete(video_upload_part).where(_P.session_id.in_(ids)))
                conn.execute(delete(video_upload_session).where(_S.id.in_(ids)))
        return len(ids)
