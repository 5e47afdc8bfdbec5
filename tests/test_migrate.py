from __future__ import annotations

import subprocess
import sys

from sqlalchemy import inspect

from atproto_video.core.db import make_engine
from atproto_video.core.migrate import current_revision, head_revision, upgrade


def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade(engine) == head_revision()
        assert upgrade(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert {"video_job", "video_upload_limit", "alembic_version"} <= tables
        columns = {c["name"] for c in inspect(engine).get_columns("video_job")}
        assert {
            "state",
            "progress",
            "failure_code",
            "error",
            "message",
            "did",
            "source_size",
            "content_hash",
            "blob",
            "created_at",
            "updated_at",
            "attempts",
        } <= columns
    finally:
        engine.dispose()


def test_concurrent_processes_migrate_safely(db_url: str) -> None:
    code = (
        "import sys; from atproto_video.core.db import make_engine; "
        "from atproto_video.core.migrate import upgrade; print(upgrade(make_engine(sys.argv[1])))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == head_revision()
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
