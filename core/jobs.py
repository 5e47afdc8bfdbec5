"""The job record: creation under daily quotas, state transitions, and the status clients see.

Every writer (API, in-process executor, operator) goes through :class:`JobStore`, so the rules
live here: states only move forward, progress never goes backwards within a state, and a
terminal job never changes again.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from atproto_video.core import metrics
from atproto_video.core.db import video_job, video_upload_limit
from atproto_video.core.details import JobDetails
from atproto_video.core.lexicon import (
    QUOTA_BYTES_EXCEEDED,
    QUOTA_VIDEOS_EXCEEDED,
    STATE_ORDER,
    FailureCode,
    JobState,
    JobStatus,
    UploadLimits,
)
from atproto_video.core.quota import Quota, QuotaExceeded, convert

__all__ = ["DuplicateUpload", "Job", "JobStore", "NewJob", "Quota", "QuotaExceeded"]

TERMINAL = (JobState.COMPLETED.value, JobState.FAILED.value)


def new_job_id() -> str:
    """An opaque, unguessable id (160 random bits): getJobStatus is tokenless."""
    return secrets.token_hex(20)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DuplicateUpload(Exception):
    """The DID already has a live job for these bytes (the unique index said so)."""


@dataclass(frozen=True)
class NewJob:
    id: str
    did: str
    source_size: int
    content_hash: str
    mime_type: str | None = None
    upload_name: str | None = None
    executor: str = "local"
    pds_url: str | None = None
    upload_token: bytes | None = None
    token_expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class Job:
    id: str
    did: str
    state: JobState
    progress: int
    failure_code: str | None
    error: str | None
    message: str | None
    source_size: int
    content_hash: str
    mime_type: str | None
    cid: str | None
    blob: dict[str, Any] | None
    executor: str
    attempts: int
    details: JobDetails
    pds_url: str | None
    upload_token: bytes | None
    token_expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_row(cls, row: RowMapping) -> Job:
        return cls(
            id=row["id"],
            did=row["did"],
            state=JobState(row["state"]),
            progress=row["progress"],
            failure_code=row["failure_code"],
            error=row["error"],
            message=row["message"],
            source_size=row["source_size"],
            content_hash=row["content_hash"],
            mime_type=row["mime_type"],
            cid=row["cid"],
            blob=row["blob"],
            executor=row["executor"],
            attempts=row["attempts"],
            details=JobDetails.from_json(row["details"]),
            pds_url=row["pds_url"],
            upload_token=row["upload_token"],
            token_expires_at=_aware(row["token_expires_at"]),
            created_at=_aware(row["created_at"]) or utcnow(),
            updated_at=_aware(row["updated_at"]) or utcnow(),
        )

    def status(self) -> JobStatus:
        return status_from_row(self.__dict__)


def status_from_row(row: Any) -> JobStatus:
    """The lexicon jobStatus, leaving out absent optional fields."""
    out: JobStatus = {"jobId": row["id"], "did": row["did"], "state": row["state"]}
    out["progress"] = int(row["progress"])
    if row["blob"] is not None:
        out["blob"] = row["blob"]
    if row["error"]:
        out["error"] = row["error"]
    if row["failure_code"]:
        out["failureCode"] = row["failure_code"]
    if row["message"]:
        out["message"] = row["message"]
    return out


_STATUS_COLUMNS = (
    video_job.c.id,
    video_job.c.did,
    video_job.c.state,
    video_job.c.progress,
    video_job.c.blob,
    video_job.c.error,
    video_job.c.failure_code,
    video_job.c.message,
)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class StatusCache:
    """A bounded LRU of job statuses, so polling clients rarely reach the database.

    Terminal statuses never change, so they are always safe to cache. Statuses of jobs in
    progress are cached only when this process is the only writer (embedded mode), where every
    write refreshes the entry.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._data: OrderedDict[str, JobStatus] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, job_id: str) -> JobStatus | None:
        with self._lock:
            status = self._data.get(job_id)
            if status is not None:
                self._data.move_to_end(job_id)
            return status

    def put(self, job_id: str, status: JobStatus) -> None:
        with self._lock:
            self._data[job_id] = status
            self._data.move_to_end(job_id)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._data.pop(job_id, None)


class JobStore:
    def __init__(self, engine: Engine, *, single_writer: bool = False) -> None:
        """``single_writer``: this process makes every change to job rows (embedded mode)."""
        self.engine = engine
        self.single_writer = single_writer
        self.cache = StatusCache()
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # -- creation under quota -------------------------------------------------------------

    def create(self, job: NewJob, quota: Quota | None, *, day: dt.date | None = None,
               reservation: str | None = None) -> Job:
        """Insert the job and count it against the DID's daily quota in one transaction.

        With ``reservation`` (core/quota.py) the quota held since the upload began is
        converted; without one (or if it expired) the quota update is a single conditional
        UPDATE, so concurrent uploads serialise on the quota row and can never overshoot the
        limits. Raises :class:`QuotaExceeded`, or :class:`DuplicateUpload` (nothing counted,
        the reservation untouched) when the DID has a live job for the bytes.
        """
        try:
            return self._create(job, quota, day=day, reservation=reservation)
        except IntegrityError as exc:
            if "uq_video_job_live_upload" in str(exc) or "content_hash" in str(exc):
                raise DuplicateUpload(job.content_hash) from None
            raise

    def _create(self, job: NewJob, quota: Quota | None, *, day: dt.date | None,
                reservation: str | None) -> Job:
        now = utcnow()
        day = day or now.date()
        with self.engine.begin() as conn:
            converted = reservation is not None and convert(conn, reservation, job.source_size)
            if quota is not None and not converted:
                conn.execute(
                    self._insert(video_upload_limit)
                    .values(did=job.did, day=day, videos=0, bytes=0, reserved_videos=0,
                            reserved_bytes=0)
                    .on_conflict_do_nothing()
                )
                lim = video_upload_limit.c
                res = conn.execute(
                    update(video_upload_limit)
                    .where(
                        lim.did == job.did,
                        lim.day == day,
                        lim.videos + lim.reserved_videos + 1 <= quota.daily_videos,
                        lim.bytes + lim.reserved_bytes + job.source_size <= quota.daily_bytes,
                    )
                    .values(videos=lim.videos + 1, bytes=lim.bytes + job.source_size)
                )
                if res.rowcount != 1:
                    used = conn.execute(
                        select(lim.videos, lim.reserved_videos)
                        .where(lim.did == job.did, lim.day == day)
                    ).one()
                    if used.videos + used.reserved_videos + 1 > quota.daily_videos:
                        raise QuotaExceeded(QUOTA_VIDEOS_EXCEEDED)
                    raise QuotaExceeded(QUOTA_BYTES_EXCEEDED)
            conn.execute(
                insert(video_job).values(
                    id=job.id,
                    did=job.did,
                    state=JobState.CREATED.value,
                    progress=0,
                    mime_type=job.mime_type,
                    upload_name=job.upload_name,
                    source_size=job.source_size,
                    content_hash=job.content_hash,
                    executor=job.executor,
                    attempts=0,
                    pds_url=job.pds_url,
                    upload_token=job.upload_token,
                    token_expires_at=job.token_expires_at,
                    created_at=now,
                    updated_at=now,
                )
            )
        created = self.get(job.id)
        assert created is not None
        if self.single_writer:
            self.cache.put(job.id, created.status())
        return created

    def limits(self, did: str, quota: Quota, *, day: dt.date | None = None) -> UploadLimits:
        day = day or utcnow().date()
        lim = video_upload_limit.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(lim.videos + lim.reserved_videos, lim.bytes + lim.reserved_bytes)
                .where(lim.did == did, lim.day == day)
            ).first()
        # Uploads in progress hold their part (core/quota.py): it is not available.
        used_videos, used_bytes = (int(row[0]), int(row[1])) if row else (0, 0)
        videos = max(0, quota.daily_videos - used_videos)
        nbytes = max(0, quota.daily_bytes - used_bytes)
        out: UploadLimits = {
            "canUpload": videos > 0 and nbytes > 0,
            "remainingDailyVideos": videos,
            "remainingDailyBytes": nbytes,
        }
        if videos <= 0:
            out["error"] = out["message"] = QUOTA_VIDEOS_EXCEEDED
        elif nbytes <= 0:
            out["error"] = out["message"] = QUOTA_BYTES_EXCEEDED
        return out

    # -- reads ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(video_job).where(video_job.c.id == job_id)).mappings().first()
        return Job.from_row(row) if row else None

    def cached_status(self, job_id: str) -> JobStatus | None:
        """The status if the cache holds it: no I/O, safe to call on the event loop."""
        return self.cache.get(job_id)

    def status(self, job_id: str) -> JobStatus | None:
        """The hot path of getJobStatus: the cache, else one primary-key lookup."""
        cached = self.cache.get(job_id)
        if cached is not None:
            return cached
        return self._load_status(job_id)

    def _load_status(self, job_id: str) -> JobStatus | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_STATUS_COLUMNS).where(video_job.c.id == job_id)).first()
        if row is None:
            return None
        status = status_from_row(row._mapping)
        if self.single_writer or status["state"] in TERMINAL:
            self.cache.put(job_id, status)
        return status

    def _changed(self, job_id: str) -> None:
        """After a write: refresh (single writer) or forget the cached status."""
        self.cache.drop(job_id)
        if self.single_writer:
            self._load_status(job_id)

    def find_completed_by_cid(self, did: str, cid: str) -> Job | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(video_job).where(
                        video_job.c.did == did,
                        video_job.c.cid == cid,
                        video_job.c.state == JobState.COMPLETED.value,
                    )
                )
                .mappings()
                .first()
            )
        return Job.from_row(row) if row else None

    def find_duplicate(self, did: str, content_hash: str) -> Job | None:
        """An earlier job of this DID for the same bytes that has not failed."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(video_job)
                    .where(
                        video_job.c.did == did,
                        video_job.c.content_hash == content_hash,
                        video_job.c.state != JobState.FAILED.value,
                    )
                    .order_by(video_job.c.created_at)
                )
                .mappings()
                .first()
            )
        return Job.from_row(row) if row else None

    def unfinished(self, executor: str | None = None) -> list[Job]:
        q = select(video_job).where(video_job.c.state.not_in(TERMINAL))
        if executor is not None:
            q = q.where(video_job.c.executor == executor)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(video_job.c.created_at)).mappings().all()
        return [Job.from_row(r) for r in rows]

    # -- transitions ------------------------------------------------------------------------

    def advance(
        self,
        job_id: str,
        state: JobState,
        progress: int = 0,
        *,
        message: str | None = None,
        **values: Any,
    ) -> bool:
        """Move to ``state`` with ``progress`` unless that would go backwards.

        Returns False when the job is terminal, already later, or already further along in
        this state: callers may report progress freely and out of order.
        """
        if state.terminal:
            raise ValueError("use complete() or fail() for terminal states")
        progress = _percent(progress)
        vals: dict[str, Any] = {"state": state.value, "progress": progress, "updated_at": utcnow()}
        if message is not None:
            vals["message"] = message
        vals.update(values)
        with self.engine.begin() as conn:
            moved = _move_forward(conn, job_id, state, progress, vals)
        if moved:
            self._changed(job_id)
        return moved

    def start_attempt(self, job_id: str) -> int:
        """Count an attempt (also when resuming after a restart); returns the new count."""
        c = video_job.c
        with self.engine.begin() as conn:
            conn.execute(update(video_job).where(_live(job_id)).values(**_attempt(utcnow())))
            attempts = conn.execute(select(c.attempts).where(c.id == job_id)).scalar_one()
        return int(attempts)

    def record_progress(
        self,
        job_id: str,
        progress: int,
        change: Callable[[JobDetails], JobDetails] | None = None,
        *,
        attempt: bool = False,
    ) -> Job | None:
        """One reconcile step's writes in one transaction; the row as committed (None: gone).

        Counts an attempt (``attempt``, as :meth:`start_attempt`), moves the job to ENCODING at
        ``progress`` unless that would go backwards (as :meth:`advance`) and applies ``change``
        to its details under the row lock (as :meth:`update_details`), each only while the job
        is not terminal. The operator made these four transactions and a read before: on a
        burst of uploads, round trips its threads waited on instead of creating worker Jobs.
        """
        c = video_job.c
        now = utcnow()
        progress = _percent(progress)
        advanced = False
        with self.engine.begin() as conn:
            current = self._lock_details(conn, job_id)
            if current is not None:
                advanced = _move_forward(conn, job_id, JobState.ENCODING, progress, {
                    "state": JobState.ENCODING.value, "progress": progress, "updated_at": now})
                values: dict[str, Any] = _attempt(now) if attempt else {}
                if change is not None and (new := change(current)) != current:
                    values["details"] = new.to_json()
                if values:
                    values["updated_at"] = now
                    conn.execute(update(video_job).where(c.id == job_id).values(**values))
            row = conn.execute(select(video_job).where(c.id == job_id)).mappings().first()
        if advanced:
            self._changed(job_id)
        return Job.from_row(row) if row else None

    def update_fields(self, job_id: str, **values: Any) -> None:
        """Set non-state columns (cid, ...) of a job that is not terminal."""
        if "details" in values:
            raise ValueError("use update_details(): details are read and written under a lock")
        values["updated_at"] = utcnow()
        with self.engine.begin() as conn:
            conn.execute(update(video_job).where(_live(job_id)).values(**values))

    def update_details(
        self, job_id: str, change: Callable[[JobDetails], JobDetails]
    ) -> JobDetails | None:
        """Apply ``change`` to the job's details and store the result, without lost writes.

        The read takes the row lock (see :meth:`_lock_details`), so concurrent writers
        (operator ticks, the API's planner) take turns instead of overwriting each other. None
        when the job is terminal or gone.
        """
        with self.engine.begin() as conn:
            current = self._lock_details(conn, job_id)
            if current is None:
                return None
            new = change(current)
            if new != current:
                conn.execute(update(video_job).where(video_job.c.id == job_id)
                             .values(details=new.to_json(), updated_at=utcnow()))
        return new

    def _lock_details(self, conn: Connection, job_id: str) -> JobDetails | None:
        """A live job's details, read under its row lock until ``conn`` commits (None: the job
        is terminal or gone): ``FOR UPDATE`` on Postgres; SQLite has no row locks, so a first
        write takes the database's write lock instead."""
        c = video_job.c
        if self.engine.dialect.name == "postgresql":
            raw = conn.execute(select(c.details).where(_live(job_id)).with_for_update()).first()
        else:
            res = conn.execute(update(video_job).where(_live(job_id)).values(updated_at=utcnow()))
            raw = conn.execute(select(c.details).where(_live(job_id))).first() if res.rowcount \
                else None
        return None if raw is None else JobDetails.from_json(raw[0])

    def complete(self, job_id: str, *, blob: dict[str, Any], cid: str, output_size: int) -> bool:
        return self._finish(
            job_id,
            state=JobState.COMPLETED.value,
            progress=100,
            blob=blob,
            cid=cid,
            output_size=output_size,
            failure_code=None,
            error=None,
        )

    def fail(self, job_id: str, code: FailureCode, error: str) -> bool:
        return self._finish(
            job_id, state=JobState.FAILED.value, failure_code=code.value, error=error[:2000]
        )

    def _finish(self, job_id: str, **values: Any) -> bool:
        """Enter a terminal state once; the forwarded upload token is dropped with it."""
        now = utcnow()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(video_job)
                .where(_live(job_id))
                .values(**values, upload_token=None, updated_at=now, finished_at=now)
            )
        self._changed(job_id)
        if res.rowcount == 1:  # this call made the transition: count it once, here
            completed = values["state"] == JobState.COMPLETED.value
            metrics.JOBS_FINISHED.labels(
                outcome="completed" if completed else str(values["failure_code"])).inc()
        return res.rowcount == 1


# -- the transition rules, shared by the writers above (each takes the open transaction) ------


def _live(job_id: str) -> ColumnElement[bool]:
    """The job's row while it is not terminal: a terminal job never changes again."""
    c = video_job.c
    return and_(c.id == job_id, c.state.not_in(TERMINAL))


def _move_forward(
    conn: Connection, job_id: str, state: JobState, progress: int, values: dict[str, Any]
) -> bool:
    """Write ``values`` if the job is in an earlier state than ``state``, or in it with less
    progress; states only move forward and progress never goes backwards within one."""
    c = video_job.c
    earlier = [s.value for s in STATE_ORDER[: STATE_ORDER.index(state)]]
    forward = or_(c.state.in_(earlier), and_(c.state == state.value, c.progress < progress))
    return conn.execute(update(video_job).where(_live(job_id), forward).values(**values)) \
        .rowcount == 1


def _attempt(now: dt.datetime) -> dict[str, Any]:
    """The columns one more attempt sets (also on resuming after a restart)."""
    return {"attempts": video_job.c.attempts + 1, "started_at": now, "updated_at": now}


def _percent(progress: int) -> int:
    return max(0, min(100, int(progress)))
