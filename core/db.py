"""Database schema and engine: Postgres (psycopg 3) in production, SQLite when embedded.

The schema is SQLAlchemy Core tables; the migrations in ``migrations/`` create exactly these.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)

metadata = MetaData()

video_job = Table(
    "video_job",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("did", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("progress", Integer, nullable=False, default=0),
    Column("failure_code", String(64)),
    Column("error", Text),
    Column("message", Text),
    Column("mime_type", String(255)),
    Column("upload_name", String(255)),
    Column("source_size", BigInteger, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("output_size", BigInteger),
    Column("cid", String(100)),
    Column("blob", JSON),
    Column("executor", String(32), nullable=False, default="local"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("details", JSON),
    Column("pds_url", String(512)),
    Column("upload_token", LargeBinary),
    Column("token_expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_video_job_did_hash", "did", "content_hash"),
    Index("ix_video_job_did_cid", "did", "cid"),
    Index("ix_video_job_state", "state"),
    # One live (not failed) job per DID and content; see migrations/versions/0002.
    Index(
        "uq_video_job_live_upload",
        "did",
        "content_hash",
        unique=True,
        postgresql_where=text("state != 'JOB_STATE_FAILED'"),
        sqlite_where=text("state != 'JOB_STATE_FAILED'"),
    ),
)

video_upload_limit = Table(
    "video_upload_limit",
    metadata,
    Column("did", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("videos", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    # Held by uploads still streaming or multipart sessions still open (core/quota.py).
    Column("reserved_videos", Integer, nullable=False, default=0, server_default="0"),
    Column("reserved_bytes", BigInteger, nullable=False, default=0, server_default="0"),
)

#: One row per upload in progress: what it holds of its DID's quota, until converted or released.
video_upload_reservation = Table(
    "video_upload_reservation",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("did", String(255), nullable=False),
    Column("day", Date, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_video_upload_reservation_expires", "expires_at"),
)

#: Uploads in progress per DID, so the cap on open uploads is one conditional UPDATE.
video_open_uploads = Table(
    "video_open_uploads",
    metadata,
    Column("did", String(255), primary_key=True),
    Column("open", Integer, nullable=False, default=0),
)

#: A multipart upload (startUpload .. finishUpload); terminal sessions stay readable.
video_upload_session = Table(
    "video_upload_session",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("did", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("part_size", BigInteger, nullable=False),
    Column("part_count", Integer, nullable=False),
    Column("mime_type", String(255)),
    Column("upload_name", String(256)),
    # The backend's handle (an S3 multipart UploadId); never shown to clients.
    Column("storage_ref", String(1024)),
    Column("failure_reason", String(1024)),
    Column("completed_job_id", String(64)),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_video_upload_session_state_expires", "state", "expires_at"),
)

#: Parts received; ``tag`` identifies the stored bytes (an S3 ETag, or a per-write nonce).
video_upload_part = Table(
    "video_upload_part",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("part_number", Integer, primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("tag", String(256), nullable=False),
)


#: Seconds a new Postgres connection may take before it counts as the database being down.
_CONNECT_TIMEOUT_S = 5


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the dialect: WAL and a busy timeout for SQLite, pre-ping for Postgres."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=32,
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # A server that drops packets (host down, partition) must fail a connect in seconds, not
    # after the kernel's SYN retries (minutes): callers answer 503 or retry (core/dbfaults.py).
    kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", _CONNECT_TIMEOUT_S)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
