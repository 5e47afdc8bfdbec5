"""Outputs that do not fit fail as OutOfSpace (encoding_failure, "upload it again later"),
never as an undecodable video: ffmpeg's HLS muxer can exit 0 after its writes were refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atproto_video.transcoder import TranscodeLimits
from atproto_video.transcoder.errors import OutOfSpace
from atproto_video.transcoder.pipeline import transcode, transcode_target
from tests.support.media import make_clip
from tests.support.tmpfs import fill, small_tmpfs


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4", seconds=6, size="640x360")


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Path]:
    """A volume with room for a few files but not for the outputs."""
    with small_tmpfs(tmp_path / "volume", 8) as path:
        fill(path, "filler", leave=128 << 10)
        yield path


@pytest.mark.parametrize("target", ["360p", "mp4"])
def test_a_target_that_does_not_fit(clip: Path, full_volume: Path, limits: TranscodeLimits,
                                    target: str) -> None:
    with pytest.raises(OutOfSpace) as raised:
        transcode_target(clip, full_volume / "out", target, limits)
    assert raised.value.failure_code == "encoding_failure"


def test_a_whole_ladder_that_does_not_fit(clip: Path, full_volume: Path,
                                          limits: TranscodeLimits) -> None:
    with pytest.raises(OutOfSpace):
        transcode(clip, full_volume / "out", limits)


def test_a_two_rung_ladder_that_does_not_fit(tmp_path_factory: pytest.TempPathFactory,
                                             full_volume: Path, limits: TranscodeLimits) -> None:
    """Two renditions: the single strategy's two processes at once, whichever fails first."""
    hd = make_clip(tmp_path_factory.mktemp("media") / "hd.mp4", seconds=6, size="1280x720")
    with pytest.raises(OutOfSpace):
        transcode(hd, full_volume / "out", limits)
