"""Real-world inputs, each generated here with ffmpeg, through the whole pipeline."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

from atproto_video.transcoder import (
    EncodingFailure,
    TranscodeError,
    TranscodeLimits,
    ValidationFailure,
    probe,
    transcode,
)
from tests.support.media import cached, ffmpeg, make_clip
from tests.transcoder.layout import assert_valid_layout
from tests.transcoder.media import ffprobe, mean_luma, stream

Make = Callable[[Path], object]


def run(src: Path, tmp_path: Path, limits: TranscodeLimits) -> Path:
    out = tmp_path / "out"
    transcode(src, out, limits)
    return out


# --- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [("240x320", (240, 320)), ("300x300", (300, 300)), ("321x241", (320, 240))],
    ids=["portrait", "square", "odd"],
)
def test_shapes_keep_aspect_at_even_size(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits, size: str, expected: tuple[int, int]
) -> None:
    src = cached(media_dir, f"shape-{size}.mp4", lambda p: make_clip(p, size=size, seconds=1.5))
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [expected], has_audio=True)


def test_phone_rotation_is_applied_and_dimensions_swapped(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    """Top half white in the coded frame; rotated 90 degrees it must end up on the left."""

    def build(path: Path) -> None:
        coded = path.with_suffix(".coded.mp4")
        ffmpeg("-f", "lavfi", "-i",
               "color=white:size=320x240:rate=30:duration=1.5,"
               "drawbox=x=0:y=120:w=320:h=120:color=black:t=fill",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", str(coded))
        ffmpeg("-i", str(coded), "-c", "copy", "-metadata:s:v", "rotate=90", str(path))

    src = cached(media_dir, "rotated.mp4", build)
    info = probe(src, limits)
    assert (info.coded_width, info.coded_height, info.rotation) == (320, 240, 90)
    assert (info.width, info.height) == (240, 320)
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(240, 320)], has_audio=False)
    for produced in (out / "thumbnail.jpg", out / "video.mp4"):
        left = tmp_path / "left.png"
        right = tmp_path / "right.png"
        ffmpeg("-i", str(produced), "-frames:v", "1", "-vf", "crop=120:320:0:0", str(left))
        ffmpeg("-i", str(produced), "-frames:v", "1", "-vf", "crop=120:320:120:0", str(right))
        assert mean_luma(left) > 200 and mean_luma(right) < 60, produced.name
    # No rotation tag left behind, or players would rotate a second time.
    video = stream(out / "video.mp4", "video")
    assert video is not None and not video.get("side_data_list")


# --- tracks --------------------------------------------------------------------------------


def test_no_audio_track_gives_video_only_renditions(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "silent.mp4", lambda p: make_clip(p, audio=False))
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(320, 240)], has_audio=False)
    assert 'CODECS="avc1.64001e"' in (out / "playlist.m3u8").read_text()


# --- frame rates ---------------------------------------------------------------------------


def test_variable_frame_rate_becomes_constant(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    def build(path: Path) -> None:
        # Drop frames irregularly and keep their timestamps: a variable-rate stream.
        make_clip(path, seconds=3, audio=True, extra=(
            "-vf", "select='lt(mod(n\\,7)\\,4)+lt(n\\,10)'", "-fps_mode", "vfr"))

    src = cached(media_dir, "vfr.mp4", build)
    source_video = stream(src, "video")
    assert source_video is not None
    assert Fraction(source_video["avg_frame_rate"]) != Fraction(source_video["r_frame_rate"])
    info = probe(src, limits)
    out = run(src, tmp_path, limits)
    expected = info.output_fps(limits.max_fps)
    assert_valid_layout(out, [(320, 240)], has_audio=True, fps=expected)
    frames = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
         "packet=duration_time", "-of", "csv=p=0", str(out / "video.mp4")],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert len({round(float(d), 4) for d in frames if d != "N/A"}) == 1, "constant frame rate"


def test_frame_rate_above_cap_is_reduced_not_rejected(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "120fps.mp4",
                 lambda p: make_clip(p, rate=120, seconds=1, size="160x120"))
    info = probe(src, limits)
    assert info.fps == 120
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(160, 120)], has_audio=True, fps=Fraction(60))
    lower = replace(limits, max_fps=24)
    out24 = tmp_path / "out24"
    transcode(src, out24, lower)
    assert_valid_layout(out24, [(160, 120)], has_audio=True, fps=Fraction(24))


# --- pixel formats -------------------------------------------------------------------------


@pytest.mark.parametrize("hdr", [True, False], ids=["hdr-pq", "10bit-sdr"])
def test_ten_bit_sources_become_8bit_yuv420p(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits, hdr: bool
) -> None:
    tags = ("-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc")
    name = "hdr10.mp4" if hdr else "10bit.mp4"
    src = cached(media_dir, name, lambda p: make_clip(p, seconds=1, video=(
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le",
        *(tags if hdr else ())), audio=False))
    source_video = stream(src, "video")
    assert source_video is not None and source_video["pix_fmt"] == "yuv420p10le"
    assert probe(src, limits).hdr is hdr
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(320, 240)], has_audio=False)
    video = stream(out / "video.mp4", "video")
    assert video is not None and video["pix_fmt"] == "yuv420p"
    if hdr:
        assert video.get("color_transfer") == "bt709"
        assert video.get("color_primaries") == "bt709"
        assert mean_luma(out / "thumbnail.jpg") > 30, "tone mapping must not produce black"


# --- containers and codecs -----------------------------------------------------------------


CONTAINERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "clip.gif": ((), ("-f", "gif"), False),
    "clip.webm": (("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
                  ("-c:a", "libopus"), True),
    "clip.mkv": (("-c:v", "libx264", "-preset", "ultrafast"), ("-c:a", "libvorbis"), True),
    "clip.mpg": (("-c:v", "mpeg2video", "-f", "vob"), ("-c:a", "mp2"), True),
    "clip.ts": (("-c:v", "mpeg2video", "-f", "mpegts"), ("-c:a", "mp2"), True),
    "clip-h264.ts": (("-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"),
                     ("-c:a", "aac"), True),
    "clip.mov": (("-c:v", "prores_ks", "-profile:v", "0", "-f", "mov"),
                 ("-c:a", "pcm_s16le"), True),
    "clip.avi": (("-c:v", "mjpeg", "-f", "avi"), ("-c:a", "pcm_s16le"), True),
}


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_supported_containers_and_codecs(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits, name: str
) -> None:
    video, audio, has_audio = CONTAINERS[name]
    if name.endswith(".gif"):
        build: Make = lambda p: ffmpeg(  # noqa: E731
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2", str(p))
    else:
        build = lambda p: make_clip(p, seconds=1.5, video=video, audio_codec=audio,  # noqa: E731
                               audio=has_audio)
    src = cached(media_dir, name, build)
    info = probe(src, limits)
    expected = (160, 120) if name.endswith(".gif") else (320, 240)
    assert (info.width, info.height) == expected
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [expected], has_audio=has_audio)


def test_clip_shorter_than_one_second(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "short.mp4", lambda p: make_clip(p, seconds=0.4))
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(320, 240)], has_audio=True)
    assert float(ffprobe(out / "video.mp4")["format"]["duration"]) == pytest.approx(0.4, abs=0.1)


# --- damaged files -------------------------------------------------------------------------


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_faststart_mp4_completes_what_can_be_decoded(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    full = cached(media_dir, "faststart.mp4",
                lambda p: make_clip(p, seconds=3, extra=("-movflags", "+faststart")))
    src = _cut(full, tmp_path / "cut.mp4", 0.6)
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(320, 240)], has_audio=True)
    duration = float(ffprobe(out / "video.mp4")["format"]["duration"])
    assert 0.5 < duration < 2.9


def test_truncated_mp4_without_index_fails_validation(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    full = cached(media_dir, "moov-at-end.mp4", lambda p: make_clip(p, seconds=2))
    src = _cut(full, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(ValidationFailure, match="not a readable"):
        transcode(src, tmp_path / "out", limits)


def test_truncated_transport_stream_completes(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    full = cached(media_dir, "clip-h264.ts", lambda p: make_clip(p, seconds=1.5, video=(
        "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts")))
    src = _cut(full, tmp_path / "cut.ts", 0.55)
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(320, 240)], has_audio=True)


@pytest.mark.parametrize("name", ["clip-h264.ts", "faststart.mp4"])
def test_corrupted_middle_is_terminal_either_way(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits, name: str
) -> None:
    """Garbage in the payload: decode around it, or fail with a clear, terminal error."""
    full = cached(media_dir, name, lambda p: make_clip(p, seconds=1.5, video=(
        "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts"))
        if name.endswith(".ts") else make_clip(p, seconds=3, extra=("-movflags", "+faststart")))
    data = bytearray(full.read_bytes())
    rng = random.Random(1234)
    start = len(data) // 3
    data[start:start + 4096] = rng.randbytes(4096)
    src = tmp_path / f"corrupt-{name}"
    src.write_bytes(bytes(data))
    try:
        out = run(src, tmp_path, limits)
    except TranscodeError as exc:
        assert exc.failure_code in ("validation_failure", "encoding_failure")
        assert exc.message
    else:
        assert_valid_layout(out, [(320, 240)], has_audio=True)


# --- limits --------------------------------------------------------------------------------


def test_wall_clock_timeout_is_an_encoding_failure(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "silent.mp4", lambda p: make_clip(p, audio=False))
    with pytest.raises(EncodingFailure, match="did not finish"):
        transcode(src, tmp_path / "out", replace(limits, timeout_base_s=0.01, timeout_factor=0))


def test_memory_cap_is_an_encoding_failure(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "silent.mp4", lambda p: make_clip(p, audio=False))
    with pytest.raises(EncodingFailure, match="memory"):
        transcode(src, tmp_path / "out", replace(limits, max_memory_bytes=48 * 1024 * 1024))


def test_missing_ffmpeg_is_an_encoding_failure(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "silent.mp4", lambda p: make_clip(p, audio=False))
    missing = str(tmp_path / "no-such-ffmpeg")
    with pytest.raises(EncodingFailure, match="cannot run ffmpeg"):
        transcode(src, tmp_path / "out", replace(limits, ffmpeg_path=missing))
    assert not os.path.exists(missing)


# --- thumbnails ----------------------------------------------------------------------------


def test_thumbnail_skips_a_black_leader(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    def build(path: Path) -> None:
        ffmpeg("-f", "lavfi", "-i", "color=black:size=320x240:rate=30:duration=2",
               "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=2",
               "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))

    src = cached(media_dir, "black-leader.mp4", build)
    first = tmp_path / "first.png"
    ffmpeg("-i", str(src), "-frames:v", "1", str(first))
    assert mean_luma(first) < 20
    out = run(src, tmp_path, limits)
    assert mean_luma(out / "thumbnail.jpg") > 50


def test_all_black_video_still_gets_a_thumbnail(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(media_dir, "black.mp4", lambda p: make_clip(p, source="color=black", seconds=1))
    out = run(src, tmp_path, limits)
    assert_valid_layout(out, [(320, 240)], has_audio=True)


# --- privacy and process count -------------------------------------------------------------


def test_location_and_device_metadata_are_not_published(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits
) -> None:
    src = cached(
        media_dir,
        "tagged.mov",
        lambda p: make_clip(
            p,
            seconds=1,
            extra=(
                "-metadata",
                "location=+37.7749-122.4194/",
                "-metadata",
                "com.apple.quicktime.make=Apple",
                "-metadata",
                "title=my secret place",
                "-f",
                "mov",
            ),
        ),
    )
    assert "location" in ffprobe(src)["format"]["tags"]
    out = run(src, tmp_path, limits)
    for produced in (out / "video.mp4", out / "240p" / "seg_000.ts"):
        info = ffprobe(produced)
        text = str(info["format"].get("tags", {})) + str([s.get("tags") for s in info["streams"]])
        for secret in ("37.7749", "Apple", "secret place"):
            assert secret not in text, (produced.name, secret)
        assert b"37.7749" not in produced.read_bytes()


def test_single_strategy_runs_exactly_one_ffmpeg_process(
    media_dir: Path, tmp_path: Path, limits: TranscodeLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atproto_video.transcoder.process import run as real_run

    calls: list[list[str]] = []

    def counting_run(argv: list[str], **kwargs: object) -> object:
        calls.append(list(argv))
        return real_run(argv, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("atproto_video.transcoder.pipeline.run", counting_run)
    src = cached(media_dir, "silent.mp4", lambda p: make_clip(p, audio=False))
    out = run(src, tmp_path, limits)
    assert len(calls) == 1
    assert sum(arg == "-i" for arg in calls[0]) == 1
    assert_valid_layout(out, [(320, 240)], has_audio=False)
