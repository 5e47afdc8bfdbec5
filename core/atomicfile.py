"""Files replaced whole: a reader sees the old file or the new one, never part of either.

Its own module, with nothing but the standard library's file calls, because the worker image's
entrypoint writes playlists and progress with it: every segment worker imports it, and
``core/storage.py`` (asyncio, hashing) would cost each of them a measurable share of its CPU.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(target: Path, text: str) -> None:
    """Write through a temporary file and a rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
