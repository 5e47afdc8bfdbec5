"""Daily quota held by uploads in progress: reserved before a byte is stored.

Reading the remaining quota before streaming let one DID stream any number of uploads at
once, refused only at commit. A reservation holds one video and the upload's bytes (the
declared size, or the remaining bytes as a ceiling) on the DID's daily row from the start;
committing the job converts it into use, anything else releases it. Each step is one
transaction of conditional UPDATEs, so concurrent uploads serialise on the DID's rows on
Postgres and on the write lock on SQLite, and the sum of what is held and used never exceeds
the quota.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from atproto_video.core.db import video_open_uploads, video_upload_limit, video_upload_reservation
from atproto_video.core.lexicon import QUOTA_BYTES_EXCEEDED, QUOTA_VIDEOS_EXCEEDED

#: Kinds of reservation: a streaming uploadVideo, or a multipart session.
SINGLE = "single"
MULTIPART = "multipart"


@dataclass(frozen=True)
class Quota:
    daily_videos: int
    daily_bytes: int
    #: Uploads of one DID in progress at once (streaming plus open multipart sessions).
    open_uploads: int = 10


class QuotaExceeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TooManyOpenUploads(Exception):
    """The DID already has its cap of uploads in progress."""


@dataclass(frozen=True)
class Reservation:
    id: str
    did: str
    day: dt.date
    bytes: int
    kind: str
    expires_at: dt.datetime


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


_RES = video_upload_reservation.c
_LIM = video_upload_limit.c
_OPEN = video_open_uploads.c


class QuotaLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def reserve(
        self,
        reservation_id: str,
        did: str,
        nbytes: int,
        quota: Quota,
        *,
        kind: str,
        expires_at: dt.datetime,
        day: dt.date | None = None,
    ) -> Reservation:
        """Hold one video and ``nbytes`` of today's quota, and one open-upload slot.

        Raises :class:`QuotaExceeded` (with the sentence social-app matches) or
        :class:`TooManyOpenUploads`; nothing is held then.
        """
        now = _utcnow()
        day = day or now.date()
        with self.engine.begin() as conn:
            # A write first: on SQLite it takes the write lock before anything is read.
            conn.execute(self._insert(video_upload_limit)
                         .values(did=did, day=day, videos=0, bytes=0, reserved_videos=0,
                                 reserved_bytes=0)
                         .on_conflict_do_nothing())
            res = conn.execute(
                update(video_upload_limit)
                .where(_LIM.did == did, _LIM.day == day,
                       _LIM.videos + _LIM.reserved_videos + 1 <= quota.daily_videos,
                       _LIM.bytes + _LIM.reserved_bytes + nbytes <= quota.daily_bytes)
                .values(reserved_videos=_LIM.reserved_videos + 1,
                        reserved_bytes=_LIM.reserved_bytes + nbytes))
            if res.rowcount != 1:
                used = conn.execute(select(_LIM.videos, _LIM.reserved_videos)
                                    .where(_LIM.did == did, _LIM.day == day)).one()
                if used.videos + used.reserved_videos + 1 > quota.daily_videos:
                    raise QuotaExceeded(QUOTA_VIDEOS_EXCEEDED)
                raise QuotaExceeded(QUOTA_BYTES_EXCEEDED)
            conn.execute(self._insert(video_open_uploads).values(did=did, open=0)
                         .on_conflict_do_nothing())
            res = conn.execute(update(video_open_uploads)
                               .where(_OPEN.did == did, _OPEN.open < quota.open_uploads)
                               .values(open=_OPEN.open + 1))
            if res.rowcount != 1:  # raising rolls the reservation above back
                raise TooManyOpenUploads(did)
            conn.execute(video_upload_reservation.insert().values(
                id=reservation_id, did=did, day=day, bytes=nbytes, kind=kind, created_at=now,
                expires_at=expires_at))
        return Reservation(reservation_id, did, day, nbytes, kind, expires_at)

    def release(self, reservation_id: str) -> Reservation | None:
        """Give the held quota back; None if it was already converted or released."""
        with self.engine.begin() as conn:
            return release(conn, reservation_id)

    def remaining(self, did: str, quota: Quota, day: dt.date) -> tuple[int, int]:
        """Videos and bytes left today, counting what uploads in progress hold."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_LIM.videos, _LIM.bytes, _LIM.reserved_videos, _LIM.reserved_bytes)
                .where(_LIM.did == did, _LIM.day == day)).first()
        if row is None:
            return quota.daily_videos, quota.daily_bytes
        return (max(0, quota.daily_videos - row.videos - row.reserved_videos),
                max(0, quota.daily_bytes - row.bytes - row.reserved_bytes))

    def expired(self, kind: str, now: dt.datetime | None = None) -> list[Reservation]:
        """Reservations of ``kind`` past their expiry (uploads cut off by a crash)."""
        now = now or _utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(select(video_upload_reservation)
                                .where(_RES.kind == kind, _RES.expires_at < now)).all()
        return [Reservation(r.id, r.did, r.day, r.bytes, r.kind, _aware(r.expires_at))
                for r in rows]


def release(conn: Connection, reservation_id: str) -> Reservation | None:
    """Release a reservation inside the caller's transaction."""
    row = conn.execute(delete(video_upload_reservation).where(_RES.id == reservation_id)
                       .returning(_RES.id, _RES.did, _RES.day, _RES.bytes, _RES.kind,
                                  _RES.expires_at)).first()
    if row is None:
        return None
    conn.execute(update(video_upload_limit).where(_LIM.did == row.did, _LIM.day == row.day)
                 .values(reserved_videos=_LIM.reserved_videos - 1,
                         reserved_bytes=_LIM.reserved_bytes - row.bytes))
    conn.execute(update(video_open_uploads).where(_OPEN.did == row.did)
                 .values(open=_OPEN.open - 1))
    return Reservation(row.id, row.did, row.day, row.bytes, row.kind, _aware(row.expires_at))


def convert(conn: Connection, reservation_id: str, nbytes: int) -> bool:
    """Turn a reservation into use of one video and ``nbytes`` (at most what it held), inside
    the caller's transaction. False when there is none left (it expired): the caller then
    checks the quota as for an unreserved upload."""
    held = release(conn, reservation_id)
    if held is None:
        return False
    if nbytes > held.bytes:
        raise ValueError("an upload may not use more than it reserved")
    conn.execute(update(video_upload_limit).where(_LIM.did == held.did, _LIM.day == held.day)
                 .values(videos=_LIM.videos + 1, bytes=_LIM.bytes + nbytes))
    return True
