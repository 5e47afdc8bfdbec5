"""A small tmpfs for storage-full tests: mounted by the (root) test, always unmounted."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    """``path`` as a tmpfs of ``size_mib`` MiB; unmounted on the way out, lazily if something
    still holds it, so no mount outlives the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                   check=True, timeout=30)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], timeout=30).returncode != 0:
            holders = subprocess.run(["fuser", "-vm", str(path)], capture_output=True,
                                     text=True, timeout=30)
            subprocess.run(["umount", "-l", str(path)], check=True, timeout=30)
            raise AssertionError(f"{path} was still in use:\n{holders.stderr}")


def free(volume: Path) -> int:
    st = os.statvfs(volume)
    return st.f_bavail * st.f_frsize


def fill(volume: Path, name: str, leave: int = 0) -> None:
    """Write zeros into ``volume/name`` until ``leave`` bytes are free, or the volume is full."""
    fd = os.open(volume / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        want = free(volume) - leave
        block = bytes(1 << 16)
        while want > 0:
            try:
                want -= os.write(fd, block[:want])
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return
    finally:
        os.close(fd)
