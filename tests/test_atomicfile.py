"""Atomic file replacement: the old file or the new one, never a torn one."""

from __future__ import annotations

from pathlib import Path

import pytest

from atproto_video.core.atomicfile import atomic_write_text


def test_a_write_replaces_the_file_readable_by_all(tmp_path: Path) -> None:
    target = tmp_path / "video.m3u8"
    target.write_text("old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["video.m3u8"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "playlist.m3u8"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "new \udcff")  # not encodable as UTF-8: fails mid-write
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["playlist.m3u8"]
