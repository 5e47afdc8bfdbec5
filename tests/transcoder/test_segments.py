"""Segment-parallel encoding: the plan, the join, and equivalence with the single encode.

The equivalence test encodes a 24 s clip with audio once whole and once as three 8 s segments
joined without re-encoding, then holds the joined rendition to the single encode: the same
frame count and duration, timestamps that run on across joins in both streams, a clean
decode of every media segment in order, and PSNR against the source within 0.5 dB. Its
segment workers get the probe's facts (``--source-info``) as the operator passes them, and
run no ffprobe of their own (counted by a real ffprobe behind a wrapper).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from atproto_video.transcoder import TranscodeLimits
from atproto_video.transcoder.errors import EncodingFailure
from atproto_video.transcoder.pipeline import transcode_target
from atproto_video.transcoder.probe import SourceInfo, probe
from atproto_video.transcoder.segments import (
    encode_segment,
    join_playlists,
    join_segments,
    plan_segments,
    segment_at,
    segment_length,
)
from tests.support import hlsequiv
from tests.support.media import cached, make_clip

SECONDS = 24
SEGMENT_S = 8
TARGET = "240p"
FPS = "30/1"
FRAME_S = 1 / 30


def test_segment_length_is_whole_hls_segments_and_aac_frames() -> None:
    assert segment_length(8, 4) == 8
    assert segment_length(6, 4) == 8
    assert segment_length(60, 4) == 64
    assert segment_length(0, 4) == 0


def test_short_sources_and_disabled_setting_stay_one_encode() -> None:
    assert [s.length_s for s in plan_segments(100.0, 60, 120, 4)] == [None]
    assert [s.length_s for s in plan_segments(600.0, 0, 120, 4)] == [None]
    # Long enough for the threshold but not for two segments: still one.
    assert len(plan_segments(66.0, 64, 10, 4)) == 1


def test_long_sources_split_on_segment_boundaries() -> None:
    segments = plan_segments(300.0, 60, 120, 4)
    assert [s.start_s for s in segments] == [0, 64, 128, 192, 256]
    assert [s.length_s for s in segments] == [64, 64, 64, 64, None]
    assert all(s.count == 5 for s in segments)
    # A tail under one HLS segment joins the segment before instead of making its own.
    assert len(plan_segments(130.0, 64, 10, 4)) == 2
    assert segment_at(4, 5, 64) == segments[4]
    with pytest.raises(ValueError):
        segment_at(5, 5, 64)


def _part(first: int, count: int, *, last: bool = True) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:4",
             f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for n in range(first, first + count):
        lines += ["#EXTINF:4.000000,", f"seg_{n:03d}.ts"]
    if last:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def test_join_concatenates_parts_in_order() -> None:
    joined = join_playlists([_part(0, 2), _part(2, 2), _part(4, 1)])
    uris = [line for line in joined.splitlines() if line.startswith("seg_")]
    assert uris == [f"seg_{n:03d}.ts" for n in range(5)]
    assert "#EXT-X-MEDIA-SEQUENCE:0" in joined
    assert joined.rstrip().endswith("#EXT-X-ENDLIST")


@pytest.mark.parametrize("parts", [
    [_part(0, 2), _part(3, 2)],  # a segment's media missing
    [_part(0, 2), _part(1, 2)],  # overlapping segments
    [_part(2, 2), _part(0, 2)],  # out of order
    [_part(0, 2), _part(2, 2, last=False)],  # an encode that did not finish
])
def test_join_refuses_parts_that_do_not_follow_on(parts: list[str]) -> None:
    with pytest.raises(EncodingFailure):
        join_playlists(parts)


def test_segment_must_start_on_an_hls_boundary(tmp_path: Path, limits: TranscodeLimits) -> None:
    from atproto_video.transcoder.segments import Segment

    with pytest.raises(ValueError):
        encode_segment(tmp_path / "none.mp4", tmp_path, TARGET, Segment(1, 2, 6, None), limits)


@pytest.fixture(scope="module")
def source(media_dir: Path) -> Path:
    return cached(media_dir, "segments24.mp4",
                  lambda p: make_clip(p, seconds=SECONDS, size="320x240"))


@pytest.fixture(scope="module")
def single(source: Path, tmp_path_factory: pytest.TempPathFactory,
           limits: TranscodeLimits) -> Path:
    out = tmp_path_factory.mktemp("single")
    transcode_target(source, out, TARGET, limits)
    return out / TARGET / "video.m3u8"


def _counting_ffprobe(where: Path) -> tuple[Path, Path]:
    """A wrapper that logs each call, then runs the real ffprobe: (wrapper, call log)."""
    real = shutil.which("ffprobe")
    assert real is not None
    calls = where / "ffprobe-calls"
    wrapper = where / "ffprobe"
    wrapper.write_text(f'#!/bin/sh\necho call >> "{calls}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper, calls


def _segment_worker(source: Path, out: Path, segment: str, ffprobe: Path,
                    *extra: str) -> subprocess.CompletedProcess[str]:
    """One segment Job's run of the worker's CLI."""
    return subprocess.run(
        [sys.executable, "-m", "atproto_video.transcoder.command", "transcode", str(source),
         str(out), "--target", TARGET, "--segment", segment,
         "--segment-seconds", str(SEGMENT_S), *extra],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "VIDEO_TRANSCODE_THREADS": "2",
             "VIDEO_FFPROBE_PATH": str(ffprobe)},
    )


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture(scope="module")
def joined(source: Path, tmp_path_factory: pytest.TempPathFactory,
           limits: TranscodeLimits) -> Path:
    """Encoded through the worker's CLI, segments out of order (as parallel Jobs finish),
    each given the probe's facts as the operator passes them: no worker runs ffprobe."""
    out = tmp_path_factory.mktemp("joined")
    ffprobe, calls = _counting_ffprobe(tmp_path_factory.mktemp("bin"))
    facts = json.dumps(probe(source, limits).to_json())
    segments = plan_segments(SECONDS, SEGMENT_S, 10, limits.segment_s)
    assert len(segments) == 3
    for segment in reversed(segments):
        done = _segment_worker(source, out, segment.name, ffprobe, "--source-info", facts)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["segment"] == segment.name
    assert _calls(calls) == 0
    return join_segments(out, TARGET, len(segments))


def test_source_info_round_trips_and_refuses_nonsense(source: Path,
                                                      limits: TranscodeLimits) -> None:
    info = probe(source, limits)
    assert SourceInfo.from_json(json.loads(json.dumps(info.to_json()))) == info
    bad: object
    for bad in ({**info.to_json(), "format": "hls"}, {**info.to_json(), "fps": "0/1"},
                {**info.to_json(), "width": 0}, {"format": "mov"}, [], None):
        assert SourceInfo.from_json(bad) is None


@pytest.mark.parametrize("facts", ["not json", '{"format": "mov"}', "matroska"])
def test_a_worker_given_unusable_facts_probes_for_itself(
    source: Path, tmp_path: Path, limits: TranscodeLimits, facts: str
) -> None:
    """Facts that do not parse, or name another container than the file's first bytes do
    (``matroska``: the facts of some other upload), are not trusted: the worker probes."""
    if facts == "matroska":
        facts = json.dumps(replace(probe(source, limits), format="matroska").to_json())
    ffprobe, calls = _counting_ffprobe(tmp_path)
    done = _segment_worker(source, tmp_path / "out", "2/3", ffprobe, "--source-info", facts)
    assert done.returncode == 0, done.stderr
    assert _calls(calls) == 1
    part = tmp_path / "out" / TARGET / "part_002.m3u8"
    assert "#EXT-X-ENDLIST" in part.read_text()


def test_source_info_only_with_a_segment(source: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "atproto_video.transcoder.command", "transcode", str(source),
         str(tmp_path), "--target", TARGET, "--source-info", "{}"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "--source-info applies with --segment" in done.stderr


def test_joined_has_the_same_frames_and_duration(single: Path, joined: Path) -> None:
    assert hlsequiv.frame_count(joined) == pytest.approx(hlsequiv.frame_count(single), abs=1)
    assert hlsequiv.frame_count(joined) == SECONDS * 30
    assert hlsequiv.playlist_seconds(joined) == pytest.approx(
        hlsequiv.playlist_seconds(single), abs=FRAME_S)
    # The same HLS segments: a segment encode ends exactly where an HLS segment does.
    assert [p.name for p in hlsequiv.media_segments(joined)] == [
        p.name for p in hlsequiv.media_segments(single)]
    assert not list(joined.parent.glob("part_*.m3u8"))


@pytest.mark.parametrize("kind", ["v", "a"])
def test_joined_timestamps_run_on_across_joins(single: Path, joined: Path, kind: str) -> None:
    got = hlsequiv.continuity(joined, kind)
    want = hlsequiv.continuity(single, kind)
    assert got.packets == pytest.approx(want.packets, abs=1)
    assert got.max_gap_s < FRAME_S
    assert got.max_overlap_s < FRAME_S
    # Every media segment starts within one frame (video) of where the one before ended.
    for last, first in got.boundaries:
        assert 0 < first - last <= FRAME_S + 1e-3


def test_joined_decodes_cleanly_across_joins(joined: Path) -> None:
    assert hlsequiv.decode_errors(joined) == ""


def test_joined_quality_matches_the_single_encode(source: Path, single: Path,
                                                   joined: Path) -> None:
    reference = hlsequiv.psnr(source, single, 320, 240, FPS)
    assert hlsequiv.psnr(source, joined, 320, 240, FPS) >= reference - 0.5
