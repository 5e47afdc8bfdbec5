"""A full disk (or an exhausted quota), told apart from other I/O errors, in one place.

A full storage volume is an operational condition, not a bug: the API answers a retryable 503
and refuses early when the free space cannot hold a declared size; a job whose outputs no
longer fit fails with a named reason and its files are removed, so the service recovers by
itself once space is back. ffmpeg's HLS muxer does not always report a failed write (it can
exit 0 with empty files), hence :func:`refuses_writes`, which asks the filesystem itself.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

#: errno values that mean "no room to write": the filesystem is full, or the owner's quota is.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: PostgreSQL's disk_full (its data directory cannot grow).
PG_DISK_FULL = "53100"

#: How ffmpeg (via strerror) reports those errors on stderr, lower case.
NO_SPACE_MARKERS = ("no space left on device", "disk quota exceeded")

#: Bytes :func:`refuses_writes` tries to write: more than a filesystem's last free blocks.
_PROBE_BYTES = 1 << 20


def out_of_space(exc: BaseException) -> bool:
    """True when ``exc``, or what it wraps, is a write refused for want of space: by the
    filesystem, or by a database whose disk is full (SQLite's SQLITE_FULL, PostgreSQL's
    disk_full), which is where the default layout keeps its SQLite file too."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _no_space(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def database_full(exc: BaseException) -> bool:
    """Whether ``exc`` itself is a database refusing a write because its disk is full."""
    # Never imported here: the worker (ffmpeg's disk errors only) does not pay for sqlite3; an
    # exception of it exists only once something else has imported it.
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL
    return getattr(exc, "sqlstate", None) == PG_DISK_FULL


def _no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in NO_SPACE_ERRNOS
    return database_full(exc)


def says_out_of_space(lines: list[str]) -> bool:
    """Whether a program's error output reports a write refused for want of space."""
    return any(marker in line.lower() for line in lines for marker in NO_SPACE_MARKERS)


def free_bytes(path: Path) -> int:
    """Bytes this process may still write on the filesystem holding ``path``."""
    st = os.statvfs(path)
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use reserved blocks
    return blocks * st.f_frsize


def refuses_writes(directory: Path) -> bool:
    """Whether the filesystem of ``directory`` refuses a small write for want of space now."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".space-probe-")
    except OSError as exc:
        return exc.errno in NO_SPACE_ERRNOS
    try:
        block = memoryview(bytes(_PROBE_BYTES))
        while block:
            block = block[os.write(fd, block):]
    except OSError as exc:
        return exc.errno in NO_SPACE_ERRNOS
    finally:
        os.close(fd)
        os.unlink(name)
    return False
