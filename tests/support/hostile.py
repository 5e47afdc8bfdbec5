"""Uploads that try to make ffmpeg read something else, and a way to prove it never did.

Proof uses a FIFO as the referenced file: opening a FIFO for reading blocks until a writer
appears, and a non-blocking open for writing succeeds only while a reader has it open. A
watcher polling for readers therefore sees any open attempt, however brief.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path


class ReaderWatcher:
    """Records whether any process opened `fifo` for reading while watching."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no reader: the expected, safe state
            else:
                self.opened = True
                os.close(fd)  # the reader sees EOF and moves on
            time.sleep(0.001)

    def __enter__(self) -> ReaderWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.05)
        self._stop.set()
        self._thread.join()


def hls_playlist(target: str, prefix: bytes = b"") -> bytes:
    """A one-segment VOD playlist whose segment is `target` (a path or URL to be followed)."""
    return (
        prefix + b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        b"#EXTINF:4.0,\n" + target.encode() + b"\n#EXT-X-ENDLIST\n"
    )
