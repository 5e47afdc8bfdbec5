"""Filter chains: tone mapping and constant frame rate, exact scaling, the thumbnail picker;
checked as strings and by running them through ffmpeg on tiny generated clips."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from atproto_video.core.ladder import Variant
from atproto_video.transcoder import filtergraph
from tests.support.media import ffmpeg, make_clip
from tests.transcoder.media import ffprobe, mean_luma, source_info, stream

PORTRAIT = Variant("480p", "480p", 480, 854, 1_200_000, "3.1")
LANDSCAPE = Variant("480p", "480p", 854, 480, 1_200_000, "3.1")
TINY = Variant("120p", "480p", 160, 120, 300_000, "3.0")
HDR_TAGS = ("-color_primaries", "bt2020", "-color_trc", "smpte2084", "-colorspace", "bt2020nc")
TEN_BIT = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le")


def test_sdr_preprocessing_is_only_a_constant_rate() -> None:
    assert filtergraph.preprocess(source_info(), Fraction(30)) == "fps=30/1"
    ntsc = Fraction(30000, 1001)
    assert filtergraph.preprocess(source_info(fps=ntsc), ntsc) == "fps=30000/1001"
    # The output rate is the caller's choice (capped), not the source's.
    assert filtergraph.preprocess(source_info(fps=Fraction(120)), Fraction(60)) == "fps=60/1"


def test_ten_bit_sdr_is_not_tone_mapped() -> None:
    """10-bit alone is not HDR: `scale` converts it to 8-bit, colours are left as they are."""
    source = source_info(pix_fmt="yuv420p10le", color_transfer="bt709")
    assert filtergraph.preprocess(source, Fraction(30)) == "fps=30/1"


def test_hdr_is_tone_mapped_to_limited_range_bt709_before_the_rate_change() -> None:
    chain = filtergraph.preprocess(source_info(color_transfer="arib-std-b67"), Fraction(25))
    steps = chain.split(",")
    assert steps[0] == "zscale=t=linear:npl=100"
    assert any(s.startswith("tonemap=") for s in steps)
    assert steps[-2] == "zscale=t=bt709:m=bt709:r=tv"
    assert steps[-1] == "fps=25/1"


@pytest.mark.parametrize(("variant", "expected"), [
    (PORTRAIT, "scale=480:854:flags=bicubic,setsar=1,format=yuv420p"),
    (LANDSCAPE, "scale=854:480:flags=bicubic,setsar=1,format=yuv420p"),
])
def test_scale_is_exact_square_pixel_8bit(variant: Variant, expected: str) -> None:
    assert filtergraph.scale(variant) == expected


def test_thumbnail_section_samples_the_start_and_skips_black() -> None:
    graph = filtergraph.thumbnail("s3", "thumb", LANDSCAPE)
    assert graph.startswith("[s3]trim=duration=6,fps=4,scale=854:480:")
    assert graph.endswith("concat=n=2:v=1:a=0[thumb]")
    assert "key=lavfi.signalstats.YAVG:value=24:function=greater" in graph
    assert "thumbnail=n=24" in graph  # every sampled frame of the 6 s window is a candidate


def run_chain(src: Path, out: Path, chain: str) -> Path:
    ffmpeg("-i", str(src), "-filter_complex", f"[0:v]{chain}[out]", "-map", "[out]",
           "-c:v", "libx264", "-preset", "ultrafast", str(out))
    return out


@pytest.mark.parametrize("hdr", [True, False], ids=["hdr-pq", "10bit-sdr"])
def test_ten_bit_portrait_source_comes_out_8bit_at_the_variant_size(
    tmp_path: Path, hdr: bool
) -> None:
    src = make_clip(tmp_path / "in.mp4", size="240x426", seconds=0.5, audio=False,
                    video=(*TEN_BIT, *(HDR_TAGS if hdr else ())))
    source = source_info(width=240, height=426, pix_fmt="yuv420p10le",
                         color_transfer="smpte2084" if hdr else "bt709")
    variant = Variant("240p", "480p", 240, 426, 300_000, "3.0")
    fps = Fraction(24)
    chain = f"{filtergraph.preprocess(source, fps)},{filtergraph.scale(variant)}"
    video = stream(run_chain(src, tmp_path / "out.mp4", chain), "video")
    assert video is not None
    assert (video["width"], video["height"], video["pix_fmt"]) == (240, 426, "yuv420p")
    assert Fraction(video["r_frame_rate"]) == fps


def test_non_square_source_pixels_become_square(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "sar.mp4", seconds=0.5, audio=False, extra=("-vf", "setsar=4/3"))
    out = run_chain(src, tmp_path / "out.mp4", filtergraph.scale(TINY))
    video = stream(out, "video")
    assert video is not None
    assert (video["width"], video["height"]) == (160, 120)
    assert video["sample_aspect_ratio"] == "1:1"


def thumbnail_of(src: Path, out: Path) -> Path:
    graph = f"[0:v]fps=30[pre];{filtergraph.thumbnail('pre', 'out', TINY)}"
    ffmpeg("-i", str(src), "-filter_complex", graph, "-map", "[out]",
           "-update", "1", "-f", "image2", str(out))
    return out


def test_thumbnail_skips_a_black_leader(tmp_path: Path) -> None:
    src = tmp_path / "leader.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=black:size=160x120:rate=30:duration=1",
           "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30:duration=1",
           "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src))
    thumb = thumbnail_of(src, tmp_path / "thumb.jpg")
    info = ffprobe(thumb)["streams"][0]
    assert (info["codec_name"], info["width"], info["height"]) == ("mjpeg", 160, 120)
    assert mean_luma(thumb) > 50


def test_an_all_black_video_still_gets_its_first_frame(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "black.mp4", size="160x120", seconds=1, audio=False,
                    source="color=black")
    thumb = thumbnail_of(src, tmp_path / "thumb.jpg")
    assert thumb.stat().st_size > 0
    assert mean_luma(thumb) < 24
