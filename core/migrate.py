"""Schema migrations, safe when several processes start at once.

Postgres: a session-level advisory lock serialises concurrent upgrades. SQLite: an exclusive
``flock`` on a file beside the database does the same for processes on one machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

# Located by name, not imported: the migrations import this package's schema (core.db).
_SCRIPTS = "atproto_video.migrations"

log = logging.getLogger(__name__)

_PG_LOCK_KEY = 0x61747076  # "atpv": any constant shared by every process of this service


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(importlib.resources.files(_SCRIPTS)))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(importlib.resources.files(_SCRIPTS)))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns it."""
    with _migration_lock(engine), engine.connect() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        conn.commit()
        command.upgrade(_alembic_config(conn), "head")
        conn.commit()
        after = MigrationContext.configure(conn).get_current_revision()
    if before != after:
        log.info("database migrated", extra={"from_revision": before, "to_revision": after})
    assert after is not None
    return after


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as lock_conn:
            lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            lock_conn.commit()
            try:
                yield
            finally:
                lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                lock_conn.commit()
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
