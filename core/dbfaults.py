"""Telling a database that is unreachable (wait and retry) from a query that is wrong (a bug).

Callers retry, or answer 503, only for the first kind: a refused or lost connection, a server
shutting down or not yet accepting connections, too many connections, a pool that stayed
empty, a disk too full to take a write (it takes writes again once space is freed, like a
server that comes back). Constraint violations, syntax errors, serialization failures and
the like are not "unavailable" and keep their usual handling.

A full disk under the database is also what :func:`disk_or_database_full` reports, with a full
storage volume: the API answers both as "storage is full". It lives here, not in
:mod:`~atproto_video.core.diskspace`, so that the worker never loads the database's errors.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from atproto_video.core.diskspace import causes, out_of_space

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQLSTATE classes and codes that mean "cannot talk to the server now" (PostgreSQL
#: appendix A): 08 connection exception, 53300 too many connections, 57P01-57P03 admin or
#: crash shutdown, cannot connect now.
_UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")

#: PostgreSQL's disk_full (its data directory cannot grow).
PG_DISK_FULL = "53100"

#: Longest wait between two attempts while the database is down.
MAX_BACKOFF_S = 5.0


def db_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database cannot be reached right now."""
    return any(_unavailable(cause) for cause in causes(exc))


def disk_or_database_full(exc: BaseException) -> bool:
    """True when ``exc``, or what it wraps, is a write refused for want of space: by the
    filesystem, or by a database whose disk is full (SQLite's SQLITE_FULL, PostgreSQL's
    disk_full), which is where the default layout keeps its SQLite file too."""
    return out_of_space(exc) or any(database_full(cause) for cause in causes(exc))


def database_full(exc: BaseException) -> bool:
    """Whether ``exc`` itself is a database refusing a write because its disk is full."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return getattr(exc, "sqlstate", None) == PG_DISK_FULL


def _unavailable(exc: BaseException) -> bool:
    if database_full(exc):
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # pool checkout timed out; a connection found dead by pre-ping
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and (
            _driver_unavailable(exc.orig) or database_full(exc.orig))
    return _driver_unavailable(exc)


def _driver_unavailable(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    if not isinstance(exc, psycopg.OperationalError):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        # Raised by libpq, not by the server: connection refused, reset, closed, timed out.
        return True
    return str(sqlstate).startswith(_UNAVAILABLE_SQLSTATES)


def backoff_delays(first_s: float = 0.5, cap_s: float = MAX_BACKOFF_S) -> Callable[[], float]:
    """Successive waits: doubling from ``first_s`` up to ``cap_s``, with jitter."""
    delay = first_s

    def next_delay() -> float:
        nonlocal delay
        current = delay
        delay = min(cap_s, delay * 2)
        return current * random.uniform(0.8, 1.0)

    return next_delay


async def retry_while_unavailable(
    fn: Callable[[], T], *, what: str, extra: dict[str, str] | None = None,
    cap_s: float = MAX_BACKOFF_S,
) -> T:
    """Run blocking ``fn`` in a thread until it succeeds or fails for another reason.

    For work that cannot go on without its write (a job's next state): the outage is waited
    out with bounded backoff, however long it lasts; cancelling the caller stops the wait.
    """
    delays = backoff_delays(cap_s=cap_s)
    failures = 0
    while True:
        try:
            result = await asyncio.to_thread(fn)
        except Exception as exc:
            if not db_unavailable(exc):
                raise
            failures += 1
            if failures == 1:
                log.warning("database unavailable while %s; retrying: %s", what,
                            _first_line(exc), extra=extra or {})
            await asyncio.sleep(delays())
            continue
        if failures:
            log.info("database back after %d failed attempts while %s", failures, what,
                     extra=extra or {})
        return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
