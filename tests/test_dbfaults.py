"""Which database errors count as "unavailable" (503, retried) and which are bugs (500)."""

from __future__ import annotations

import errno
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, exc, text

from atproto_video.api.errors import from_unexpected
from atproto_video.core.dbfaults import database_full, db_unavailable, disk_or_database_full
from atproto_video.core.diskspace import out_of_space
from tests.support.postgres import PostgresServer
from tests.support.waiting import free_port


def caught(url: str, sql: str) -> BaseException:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    except Exception as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("no error")


def test_nobody_listening_is_unavailable() -> None:
    error = caught(f"postgresql+psycopg://u:p@127.0.0.1:{free_port()}/db", "SELECT 1")
    assert isinstance(error, exc.OperationalError) and db_unavailable(error)
    answer = from_unexpected(error)
    assert (answer.status, answer.name) == (503, "NotEnoughResources")
    assert int(answer.headers["retry-after"]) > 0
    # Wrapped by other code, it is still recognised through the cause chain.
    try:
        raise RuntimeError("while committing") from error
    except RuntimeError as wrapped:
        assert db_unavailable(wrapped)


def test_pool_timeout_is_unavailable() -> None:
    assert db_unavailable(exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached"))


@pytest.mark.postgres
def test_server_shutting_down_is_unavailable_but_bad_sql_is_not(
    postgres: PostgresServer,
) -> None:
    url = postgres.create_database()
    bad = caught(url, "SELECT * FROM no_such_table")
    assert isinstance(bad, exc.ProgrammingError) and not db_unavailable(bad)
    assert from_unexpected(bad).status == 500
    division = caught(url, "SELECT 1 / 0")
    assert not db_unavailable(division)
    # What a backend gets when the server stops under it: 57P01 admin_shutdown.
    killed = caught(url, "SELECT pg_terminate_backend(pg_backend_pid())")
    assert isinstance(killed, exc.OperationalError) and db_unavailable(killed)


def test_sqlite_and_other_errors_are_bugs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    # SQLite reports a missing table as an OperationalError too: a bug, not an outage.
    missing = caught(url, "SELECT * FROM no_such_table")
    assert isinstance(missing, exc.OperationalError) and not db_unavailable(missing)
    assert not db_unavailable(ValueError("x"))
    answer = from_unexpected(ValueError("secret internals"))
    assert (answer.status, answer.name, answer.message) == (
        500, "InternalServerError", "Internal Server Error")


def test_a_full_database_disk_is_waited_for_and_answered_as_storage_full(
    tmp_path: Path,
) -> None:
    """SQLite's SQLITE_FULL (here from max_page_count, as from a full disk) and PostgreSQL's
    disk_full: writes are retried once space is back, and clients are told storage is full."""
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (b BLOB)"))
        with engine.connect() as conn:
            conn.execute(text("PRAGMA max_page_count = 8"))
            try:
                conn.execute(text("INSERT INTO t VALUES (zeroblob(1000000))"))
            except exc.OperationalError as error:
                full: BaseException = error
            else:
                raise AssertionError("the insert fitted")
    finally:
        engine.dispose()
    assert "full" in str(full)
    for error in (full, psycopg.errors.DiskFull("could not extend file")):
        assert db_unavailable(error)
        answer = from_unexpected(error)
        assert (answer.status, answer.name) == (503, "NotEnoughResources")
        assert "storage is full" in answer.message
        # Told by the database code, through what wraps it; the disk-only check (the
        # worker's) does not look at database errors.
        assert disk_or_database_full(error) and disk_or_database_full(_wrapped(error))
        assert not out_of_space(error)
    assert isinstance(full, exc.DBAPIError)
    assert database_full(full.orig) and not database_full(full)  # the driver's error itself


def test_disk_or_database_full_covers_the_disk_too() -> None:
    enospc = OSError(errno.ENOSPC, "No space left on device")
    assert disk_or_database_full(enospc) and disk_or_database_full(_wrapped(enospc))
    assert not disk_or_database_full(OSError(errno.EIO, "Input/output error"))
    assert not disk_or_database_full(ValueError("no space"))
    # Other database errors are not a full disk (one is unavailable, one a bug).
    assert not disk_or_database_full(psycopg.errors.AdminShutdown("terminating connection"))
    assert not disk_or_database_full(psycopg.errors.UndefinedTable("no such table"))


def _wrapped(inner: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("while committing") from inner
    except RuntimeError as outer:
        return outer
