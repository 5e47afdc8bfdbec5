"""probe(): what an accepted upload looks like, and everything turned away before encoding."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from atproto_video.transcoder.errors import EncodingFailure, ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.probe import _check, probe
from tests.support.media import cached, ffmpeg, make_clip
from tests.transcoder.media import source_info


@pytest.fixture(scope="module")
def silent(media_dir: Path) -> Path:
    """320x240, 30 fps, 2 s, no audio track (shared with test_inputs through `cached`)."""
    return cached(media_dir, "silent.mp4", lambda p: make_clip(p, audio=False))


# --- what is read ------------------------------------------------------------------------------


def test_reads_size_rate_duration_codec_and_audio(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "clip.mp4", size="640x360", rate=25, seconds=1)
    info = probe(src, limits)
    assert info.format == "mov"
    assert (info.width, info.height) == (640, 360)
    assert (info.coded_width, info.coded_height, info.rotation) == (640, 360, 0)
    assert info.fps == 25
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert (info.video_codec, info.pix_fmt) == ("h264", "yuv420p")
    assert info.video_stream == 0 and info.audio_stream == 1
    assert info.has_audio and not info.hdr


def test_no_audio_track(silent: Path, limits: TranscodeLimits) -> None:
    info = probe(silent, limits)
    assert info.audio_stream is None and not info.has_audio


def test_ntsc_rate_is_kept_exact(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "ntsc.mp4", rate=Fraction(30000, 1001), seconds=1, audio=False)
    assert probe(src, limits).fps == Fraction(30000, 1001)


def test_non_square_pixels_give_the_display_width(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "sar.mp4", seconds=1, audio=False, extra=("-vf", "setsar=4/3"))
    info = probe(src, limits)
    assert (info.coded_width, info.coded_height) == (320, 240)
    assert (info.width, info.height) == (427, 240)


def test_rotation_is_clockwise_degrees_and_swaps_display_size(
    silent: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    """ffprobe reports -90 for this display matrix; callers get 270 (0..359, clockwise)."""
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-i", str(silent), "-c", "copy", "-metadata:s:v", "rotate=270", str(rotated))
    info = probe(rotated, limits)
    assert info.rotation == 270
    assert (info.width, info.height) == (240, 320)
    assert (info.coded_width, info.coded_height) == (320, 240)


def test_ten_bit_hdr_is_flagged(tmp_path: Path, limits: TranscodeLimits) -> None:
    src = make_clip(tmp_path / "pq.mp4", seconds=0.5, audio=False, video=(
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
        "-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc"))
    info = probe(src, limits)
    assert (info.pix_fmt, info.color_transfer) == ("yuv420p10le", "smpte2084")
    assert info.hdr


@pytest.mark.parametrize(("transfer", "hdr"), [("smpte2084", True), ("arib-std-b67", True),
                                               ("bt709", False), ("", False)])
def test_hdr_means_pq_or_hlg(transfer: str, hdr: bool) -> None:
    assert source_info(color_transfer=transfer).hdr is hdr


@pytest.mark.parametrize(
    ("source", "cap", "expected"),
    [(30, 60, 30), (Fraction(30000, 1001), 60, Fraction(30000, 1001)), (120, 60, 60),
     (100, 60, 50), (90, 60, 45), (75, 60, 60), (240, 60, 60), (30, 25, 25), (50, 25, 25)],
)
def test_output_frame_rate_policy(source: Fraction, cap: int, expected: Fraction) -> None:
    """An even fraction of the source rate when close enough to the cap, else the cap."""
    assert source_info(fps=Fraction(source)).output_fps(cap) == expected


# --- what is turned away -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [
        ("audio.m4a", ("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac"), "no video"),
        ("audio.mka", ("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libopus"), "no video"),
        ("still.mp4", ("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1",
                       "-c:v", "libx264"), "still image"),
        ("still.png", ("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1"), "image"),
        ("still.jpg", ("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1"), "image"),
        ("still.gif", ("-f", "lavfi", "-i", "testsrc2=size=64x48", "-frames:v", "1"), "still"),
        ("audio.mp3", ("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libmp3lame"), "audio"),
    ],
)
def test_audio_only_and_still_images_fail_validation(
    media_dir: Path, limits: TranscodeLimits, name: str, args: tuple[str, ...], match: str
) -> None:
    src = cached(media_dir, name, lambda p: ffmpeg(*args, str(p)))
    with pytest.raises(ValidationFailure, match=match) as info:
        probe(src, limits)
    assert info.value.failure_code == "validation_failure"


def test_cover_art_is_not_a_video_track(tmp_path: Path, limits: TranscodeLimits) -> None:
    """A song with album art has a "video" stream: the attached picture, which we ignore."""
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=64x64", "-frames:v", "1", str(cover))
    song = tmp_path / "song.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0", "-map", "1",
           "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", str(song))
    with pytest.raises(ValidationFailure, match="no video track"):
        probe(song, limits)


def test_text_is_rejected_before_ffprobe_runs(tmp_path: Path, limits: TranscodeLimits) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 20)
    missing = replace(limits, ffprobe_path=str(tmp_path / "no-ffprobe"))
    with pytest.raises(ValidationFailure, match="text"):  # not "cannot run ffprobe"
        probe(notes, missing)


def test_longer_than_max_duration_is_rejected(silent: Path, limits: TranscodeLimits) -> None:
    with pytest.raises(ValidationFailure, match="maximum is 1 s"):
        probe(silent, replace(limits, max_duration_s=1))
    assert probe(silent, replace(limits, max_duration_s=2)).duration_s == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"max_width": 200}, "maximum is 200x"), ({"max_height": 200}, "maximum is 7680x200"),
     ({"max_frame_pixels": 320 * 200}, "too large"),
     ({"max_total_pixels": 320 * 240 * 30}, "too large to process")],
)
def test_dimension_and_pixel_caps(
    silent: Path, limits: TranscodeLimits, change: dict[str, int], match: str
) -> None:
    with pytest.raises(ValidationFailure, match=match):
        probe(silent, replace(limits, **change))  # type: ignore[arg-type]


# --- when ffprobe itself cannot run: our fault, not the upload's -------------------------------


def test_missing_ffprobe_is_an_encoding_failure(
    silent: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    with pytest.raises(EncodingFailure, match="cannot run ffprobe"):
        probe(silent, replace(limits, ffprobe_path=str(tmp_path / "no-ffprobe")))


def test_memory_cap_is_an_encoding_failure(silent: Path, limits: TranscodeLimits) -> None:
    with pytest.raises(EncodingFailure, match="out of memory"):
        probe(silent, replace(limits, max_memory_bytes=16 * 1024 * 1024))


def probed(**video: Any) -> dict[str, Any]:
    """ffprobe's JSON for a 2 s 320x240 H.264 MP4, with these video stream fields changed."""
    stream = {"index": 0, "codec_type": "video", "codec_name": "h264", "width": 320,
              "height": 240, "avg_frame_rate": "30/1", "nb_frames": "60", "duration": "2.0"}
    return {"format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "2.0"},
            "streams": [{**stream, **video}]}  # fmt: skip


def test_header_values_the_fuzz_found(limits: TranscodeLimits) -> None:
    """Found by tests/transcoder/test_probe_fuzz.py; each value comes from the upload's own
    headers (a rotate tag is free text, sizes and rates are what the container declares)."""
    assert _check(probed(), "mov", limits).fps == 30
    # A rotate tag of "inf" (or "1e400") raised OverflowError: it is no rotation.
    for tag in ("inf", "-inf", "1e400", "nan"):
        assert _check(probed(tags={"rotate": tag}), "mov", limits).rotation == 0
    # A 320x0 video was accepted with a height of 0 (nothing to scale).
    with pytest.raises(ValidationFailure, match="no video track"):
        _check(probed(height=0), "mov", limits)
    # A declared rate of 1/1000000000 rounded to 0 fps; the next rate or the frame count rules.
    slow = _check(probed(avg_frame_rate="1/1000000000", r_frame_rate="1/1000000000"), "mov", limits)
    assert slow.fps == 30 and slow.output_fps(limits.max_fps) == 30
    # 2**63-1 frames in 5e-324 s overflowed float division (and then Fraction): too large.
    with pytest.raises(ValidationFailure, match="too large to process"):
        _check(probed(avg_frame_rate="0/0", r_frame_rate="0/0", nb_frames=str(2**63 - 1),
                      duration="5e-324"), "mov", limits)  # fmt: skip
