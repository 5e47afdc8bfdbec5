"""A full disk (or an exhausted quota), told apart from other I/O errors, in one place.

A full storage volume is an operational condition, not a bug: the API answers a retryable 503
and refuses early when the free space cannot hold a declared size; a job whose outputs no
longer fit fails with a named reason and its files are removed, so the service recovers by
itself once space is back. ffmpeg's HLS muxer does not always report a failed write (it can
exit 0 with empty files), hence :func:`refuses_writes`, which asks the filesystem itself.

A database refusing a write because its disk is full is told by the database code
(:func:`atproto_video.core.dbfaults.disk_or_database_full` asks both), which the worker, whose
writes are its own and ffmpeg's, never loads.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: errno values that mean "no room to write": the filesystem is full, or the owner's quota is.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

#: How ffmpeg (via strerror) reports those errors on stderr, lower case.
NO_SPACE_MARKERS = ("no space left on device", "disk quota exceeded")

#: Bytes :func:`refuses_writes` tries to write: more than a filesystem's last free blocks.
_PROBE_BYTES = 1 << 20


def out_of_space(exc: BaseException) -> bool:
    """True when ``exc``, or what it wraps, is a write the filesystem refused for want of
    space (ENOSPC, EDQUOT)."""
    return any(_no_space(cause) for cause in causes(exc))


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (its cause, else its context), each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


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
