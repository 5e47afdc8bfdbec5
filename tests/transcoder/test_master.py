"""The master playlist is a pure function of the plan, written atomically."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from atproto_video.core.ladder import Variant
from atproto_video.transcoder.master import master_playlist, write_master

PLAN = [
    Variant("720p", "720p", 1280, 720, 2_800_000, "3.1"),
    Variant("480p", "480p", 854, 480, 1_200_000, "3.0"),
]

WITH_AUDIO = """\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=3660000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"
720p/video.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=1660000,RESOLUTION=854x480,CODECS="avc1.64001e,mp4a.40.2"
480p/video.m3u8
"""


def test_variants_best_first_with_bandwidth_resolution_and_codecs() -> None:
    """BANDWIDTH is (video + 128k audio) x 1.25; CODECS carries the H.264 level."""
    assert master_playlist(PLAN) == WITH_AUDIO


def test_video_only_sources_advertise_no_audio() -> None:
    text = master_playlist(PLAN, has_audio=False)
    assert "mp4a" not in text
    assert 'BANDWIDTH=3500000,RESOLUTION=1280x720,CODECS="avc1.64001f"' in text
    assert 'BANDWIDTH=1500000,RESOLUTION=854x480,CODECS="avc1.64001e"' in text


def test_uri_is_the_variant_directory_not_the_rung() -> None:
    """A small portrait source's one variant is named after its size, produced by "480p"."""
    small = Variant("240p", "480p", 240, 426, 300_000, "3.0")
    assert master_playlist([small]).splitlines()[-1] == "240p/video.m3u8"
    assert "RESOLUTION=240x426" in master_playlist([small])


def test_write_master_creates_the_file_readable_by_everyone(tmp_path: Path) -> None:
    out = tmp_path / "jobs" / "abc" / "out"
    path = write_master(PLAN, out)
    assert path == out / "playlist.m3u8"
    assert path.read_text() == WITH_AUDIO
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # served by the web tier
    assert [p.name for p in out.iterdir()] == ["playlist.m3u8"]  # no temp file left


def test_write_master_replaces_an_earlier_attempt(tmp_path: Path) -> None:
    write_master(PLAN, tmp_path)
    write_master(PLAN[1:], tmp_path, has_audio=False)
    assert (tmp_path / "playlist.m3u8").read_text() == master_playlist(PLAN[1:], has_audio=False)
    assert len(list(tmp_path.iterdir())) == 1


def test_an_empty_plan_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without variants"):
        write_master([], tmp_path / "out")
    assert not (tmp_path / "out").exists()
