"""The MP4 of a segment-encoded job: the joined top rendition remuxed (stream copy).

A 16 s clip with audio is encoded as two 8 s segments and joined, then remuxed; the MP4 must
hold the rendition's frames and length (within one frame), play cleanly, start at 0, be
faststart (``moov`` before ``mdat``), and carry the same bits (no second encode).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from atproto_video.transcoder import TranscodeLimits
from atproto_video.transcoder.errors import EncodingFailure
from atproto_video.transcoder.remux import remux_rendition
from atproto_video.transcoder.segments import encode_segment, join_segments, plan_segments
from tests.support import hlsequiv
from tests.support.media import cached, make_clip

SECONDS = 16
SEGMENT_S = 8
TARGET = "240p"
FRAME_S = 1 / 30


@pytest.fixture(scope="module")
def joined(media_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           limits: TranscodeLimits) -> Path:
    source = cached(media_dir, "remux16.mp4",
                    lambda p: make_clip(p, seconds=SECONDS, size="320x240"))
    out = tmp_path_factory.mktemp("joined")
    segments = plan_segments(SECONDS, SEGMENT_S, 10, limits.segment_s)
    assert len(segments) == 2
    for segment in segments:
        assert encode_segment(source, out, TARGET, segment, limits)
    return join_segments(out, TARGET, len(segments))


@pytest.fixture(scope="module")
def mp4(joined: Path) -> Path:
    """Made through the worker's CLI, as the operator's mp4 Job runs it."""
    out = joined.parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "atproto_video.transcoder.command", "transcode",
         str(out / "absent-source"), str(out), "--target", "mp4", "--from-rendition", TARGET],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "VIDEO_TRANSCODE_THREADS": "2"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"target": "mp4", "from_rendition": TARGET}
    return out / "video.mp4"


def test_mp4_has_the_renditions_frames_and_length(joined: Path, mp4: Path) -> None:
    assert hlsequiv.frame_count(mp4) == pytest.approx(hlsequiv.frame_count(joined), abs=1)
    assert hlsequiv.frame_count(mp4) == SECONDS * 30
    assert hlsequiv.stream_seconds(mp4, "v") == pytest.approx(
        hlsequiv.playlist_seconds(joined), abs=FRAME_S)
    for kind in ("v", "a"):  # audio too: the rendition's own (priming at joins included)
        assert hlsequiv.stream_seconds(mp4, kind) == pytest.approx(
            hlsequiv.stream_seconds(joined, kind), abs=FRAME_S), kind


def test_mp4_plays_from_the_start_and_is_faststart(mp4: Path) -> None:
    assert hlsequiv.decode_errors(mp4) == ""
    assert hlsequiv.start_seconds(mp4) == pytest.approx(0, abs=FRAME_S)
    boxes = hlsequiv.top_level_boxes(mp4)
    assert "moov" in boxes and "mdat" in boxes
    assert boxes.index("moov") < boxes.index("mdat")


def test_mp4_is_a_stream_copy_of_the_rendition(joined: Path, mp4: Path) -> None:
    """The same decoded pictures, frame for frame: no second encode (which would differ)."""
    def frame_hashes(path: Path) -> list[str]:
        out = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i",
                              str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                             check=True, capture_output=True, text=True, timeout=300).stdout
        return [line.rsplit(",", 1)[1].strip() for line in out.splitlines()
                if line and not line.startswith("#")]

    assert frame_hashes(mp4) == frame_hashes(joined)


def test_missing_rendition_is_an_encoding_failure(tmp_path: Path,
                                                  limits: TranscodeLimits) -> None:
    with pytest.raises(EncodingFailure):
        remux_rendition(tmp_path, TARGET, limits)
