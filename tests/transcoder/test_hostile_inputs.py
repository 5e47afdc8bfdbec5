"""Files that try to make ffmpeg read something else must be rejected without doing so.

Proof uses a FIFO as the referenced file: opening a FIFO for reading blocks until a writer
appears, and a non-blocking open for writing succeeds only while a reader has it open. A
watcher polling for readers therefore sees any open attempt, however brief. A control run
with a plain, unprotected ffprobe shows the watcher does detect the playlist being followed.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atproto_video.transcoder import TranscodeLimits, ValidationFailure, probe, transcode
from atproto_video.transcoder.formats import input_args


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


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[Path]:
    fifo = tmp_path / "secret.ts"  # an extension the HLS demuxer accepts
    os.mkfifo(fifo)
    yield fifo


def hls_playlist(path: Path, target: str, prefix: bytes = b"") -> Path:
    path.write_bytes(
        prefix + b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        b"#EXTINF:4.0,\n" + target.encode() + b"\n#EXT-X-ENDLIST\n"
    )
    return path


def test_control_an_unprotected_ffprobe_does_follow_the_playlist(
    tmp_path: Path, secret: Path
) -> None:
    playlist = hls_playlist(tmp_path / "video.mp4", f"file://{secret}")
    with ReaderWatcher(secret) as watcher:
        subprocess.run(["ffprobe", "-v", "quiet", str(playlist)], timeout=30, check=False)
    assert watcher.opened, "the watcher must detect the referenced file being opened"


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b"\n\n"])
def test_hls_playlist_disguised_as_mp4_is_rejected_unread(
    tmp_path: Path, secret: Path, limits: TranscodeLimits, prefix: bytes
) -> None:
    playlist = hls_playlist(tmp_path / "video.mp4", f"file://{secret}", prefix)
    with ReaderWatcher(secret) as watcher, pytest.raises(ValidationFailure, match="HLS playlist"):
        transcode(playlist, tmp_path / "out", limits)
    assert not watcher.opened
    assert not (tmp_path / "out").exists()


def test_playlist_behind_a_fake_mp4_header_is_not_followed(
    tmp_path: Path, secret: Path, limits: TranscodeLimits
) -> None:
    fake = hls_playlist(tmp_path / "video.mp4", f"file://{secret}", b"\x00\x00\x00\x10ftypisom")
    with ReaderWatcher(secret) as watcher, pytest.raises(ValidationFailure):
        probe(fake, limits)
    assert not watcher.opened


def test_forced_demuxer_refuses_playlists_even_without_sniffing(
    tmp_path: Path, secret: Path
) -> None:
    """Defence in depth: the ffmpeg options alone stop the HLS demuxer being chosen."""
    playlist = hls_playlist(tmp_path / "video.mp4", f"file://{secret}")
    with ReaderWatcher(secret) as watcher:
        result = subprocess.run(
            ["ffprobe", "-v", "error", *input_args(playlist, "mov", max_frame_pixels=10**7)],
            timeout=30, capture_output=True, check=False,
        )
    assert result.returncode != 0
    assert not watcher.opened


def test_concat_script_is_rejected_unread(
    tmp_path: Path, secret: Path, limits: TranscodeLimits
) -> None:
    script = tmp_path / "video.mp4"
    script.write_text(f"ffconcat version 1.0\nfile '{secret}'\n")
    with ReaderWatcher(secret) as watcher, pytest.raises(ValidationFailure, match="concat"):
        transcode(script, tmp_path / "out", limits)
    assert not watcher.opened


def test_playlist_referencing_etc_passwd_is_a_validation_failure(
    tmp_path: Path, limits: TranscodeLimits
) -> None:
    playlist = hls_playlist(tmp_path / "video.mp4", "file:///etc/passwd")
    with pytest.raises(ValidationFailure) as info:
        transcode(playlist, tmp_path / "out", limits)
    assert info.value.failure_code == "validation_failure"
    assert "passwd" not in info.value.message


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"just some text\n" * 20, "text"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "image"),
    ],
)
def test_zero_bytes_text_and_images_fail_validation(
    tmp_path: Path, limits: TranscodeLimits, content: bytes, match: str
) -> None:
    path = tmp_path / "upload.mov"
    path.write_bytes(content)
    with pytest.raises(ValidationFailure, match=match):
        transcode(path, tmp_path / "out", limits)
