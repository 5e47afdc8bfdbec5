"""Files that try to make ffmpeg read something else must be rejected without doing so.

The FIFO watcher (tests/support/hostile.py) sees any open of the referenced file; a control
run with a plain, unprotected ffprobe shows it does detect the playlist being followed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from atproto_video.transcoder import TranscodeLimits, ValidationFailure, probe, transcode
from atproto_video.transcoder.formats import input_args
from tests.support.hostile import ReaderWatcher, hls_playlist


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[Path]:
    fifo = tmp_path / "secret.ts"  # an extension the HLS demuxer accepts
    os.mkfifo(fifo)
    yield fifo


def playlist_file(path: Path, target: str, prefix: bytes = b"") -> Path:
    path.write_bytes(hls_playlist(target, prefix))
    return path


def test_control_an_unprotected_ffprobe_does_follow_the_playlist(
    tmp_path: Path, secret: Path
) -> None:
    playlist = playlist_file(tmp_path / "video.mp4", f"file://{secret}")
    with ReaderWatcher(secret) as watcher:
        subprocess.run(["ffprobe", "-v", "quiet", str(playlist)], timeout=30, check=False)
    assert watcher.opened, "the watcher must detect the referenced file being opened"


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b"\n\n"])
def test_hls_playlist_disguised_as_mp4_is_rejected_unread(
    tmp_path: Path, secret: Path, limits: TranscodeLimits, prefix: bytes
) -> None:
    playlist = playlist_file(tmp_path / "video.mp4", f"file://{secret}", prefix)
    with ReaderWatcher(secret) as watcher, pytest.raises(ValidationFailure, match="HLS playlist"):
        transcode(playlist, tmp_path / "out", limits)
    assert not watcher.opened
    assert not (tmp_path / "out").exists()


def test_playlist_behind_a_fake_mp4_header_is_not_followed(
    tmp_path: Path, secret: Path, limits: TranscodeLimits
) -> None:
    fake = playlist_file(tmp_path / "video.mp4", f"file://{secret}", b"\x00\x00\x00\x10ftypisom")
    with ReaderWatcher(secret) as watcher, pytest.raises(ValidationFailure):
        probe(fake, limits)
    assert not watcher.opened


def test_forced_demuxer_refuses_playlists_even_without_sniffing(
    tmp_path: Path, secret: Path
) -> None:
    """Defence in depth: the ffmpeg options alone stop the HLS demuxer being chosen."""
    playlist = playlist_file(tmp_path / "video.mp4", f"file://{secret}")
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
    playlist = playlist_file(tmp_path / "video.mp4", "file:///etc/passwd")
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
