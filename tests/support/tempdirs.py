"""Temp dirs for test servers that clean up after test runs that were killed.

A server's ``stop()`` removes its dir, and the servers themselves exit when the test process
dies (parent-death signal / stdin closing), but a killed test process cannot remove the dir.
Each dir records its owner's PID; making a new one sweeps dirs whose owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_OWNER_FILE = ".owner-pid"
_MIN_AGE_S = 60.0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sweep_stale(prefix: str, base: Path) -> None:
    """Remove ``base/prefix*`` dirs whose owner process no longer runs."""
    now = time.time()
    for d in base.glob(f"{prefix}*"):
        with contextlib.suppress(OSError, ValueError):
            owner = d / _OWNER_FILE
            if now - d.stat().st_mtime < _MIN_AGE_S or not owner.is_file():
                continue
            if not _alive(int(owner.read_text().strip())):
                shutil.rmtree(d, ignore_errors=True)


def make_owned_dir(prefix: str, base: Path | None = None) -> Path:
    """A fresh private temp dir ``base/prefix*`` (mode 0700) marked with our PID."""
    base = base or Path(tempfile.gettempdir())
    sweep_stale(prefix, base)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    (d / _OWNER_FILE).write_text(f"{os.getpid()}\n")
    return d


@contextlib.contextmanager
def host_tmpdir(prefix: str) -> Iterator[Path]:
    """A dir on the host disk (/var/tmp) that worker pods, running as another uid with it
    mounted by hostPath, can traverse: pytest's tmp dirs are 0700. Removed on exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
