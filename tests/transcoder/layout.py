"""Assertions that a transcode output directory is what players need (SPEC section 5)."""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction
from pathlib import Path

from tests.transcoder.media import (
    ffprobe,
    parse_master_playlist,
    parse_media_playlist,
    top_level_atoms,
)

LEVELS = {"3.0": 30, "3.1": 31, "3.2": 32, "4.0": 40, "4.1": 41, "4.2": 42}


def first_frame_is_key(segment: Path) -> bool:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
         "-show_entries", "frame=key_frame", "-of", "csv=p=0", str(segment)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.split()
    return bool(out) and out[0].startswith("1")


def assert_valid_layout(
    out_dir: Path,
    sizes: list[tuple[int, int]],
    *,
    has_audio: bool,
    fps: Fraction | None = None,
    check_all_segments: bool = False,
) -> None:
    """Master, variants, segments, MP4 and thumbnail, all checked with ffprobe."""
    master = parse_master_playlist(out_dir / "playlist.m3u8")
    assert [tuple(map(int, s.attributes["RESOLUTION"].split("x"))) for s in master] == sizes
    for inf in master:
        w, h = map(int, inf.attributes["RESOLUTION"].split("x"))
        assert w % 2 == 0 and h % 2 == 0
        assert int(inf.attributes["BANDWIDTH"]) > 0
        codecs = inf.attributes["CODECS"].split(",")
        assert codecs[0].startswith("avc1.6400")
        assert ("mp4a.40.2" in codecs) is has_audio
        level_idc = int(codecs[0][-2:], 16)

        variant = parse_media_playlist(out_dir / inf.uri)
        assert variant.ended, "variant playlist must end with EXT-X-ENDLIST"
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in variant.tags
        assert variant.segments
        for duration, _ in variant.segments:
            assert round(duration) <= variant.target_duration
            assert duration <= variant.target_duration + 0.1
        assert 1 <= variant.target_duration <= 5
        variant_dir = (out_dir / inf.uri).parent
        segments = [variant_dir / name for _, name in variant.segments]
        for segment in segments if check_all_segments else segments[:1]:
            assert first_frame_is_key(segment), f"{segment.name} must start with a keyframe"

        info = ffprobe(segments[0])
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert video["codec_name"] == "h264"
        assert video["profile"] == "High"
        assert video["level"] == level_idc
        assert video["pix_fmt"] == "yuv420p"
        assert (video["width"], video["height"]) == (w, h)
        audio = [s for s in info["streams"] if s["codec_type"] == "audio"]
        if has_audio:
            assert [(a["codec_name"], a["profile"]) for a in audio] == [("aac", "LC")]
        else:
            assert audio == []
        if fps is not None:
            assert Fraction(video["r_frame_rate"]) == fps

    mp4 = out_dir / "video.mp4"
    atoms = top_level_atoms(mp4)
    assert "moov" in atoms and "mdat" in atoms
    assert atoms.index("moov") < atoms.index("mdat"), f"not faststart: {atoms}"
    info = ffprobe(mp4)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["profile"], video["pix_fmt"]) == ("h264", "High", "yuv420p")
    assert (video["width"], video["height"]) == sizes[0]
    assert min(sizes[0]) <= 1080
    assert any(s["codec_type"] == "audio" for s in info["streams"]) is has_audio
    assert math.isfinite(float(info["format"]["duration"]))

    thumb = ffprobe(out_dir / "thumbnail.jpg")["streams"][0]
    assert thumb["codec_name"] == "mjpeg"
    assert (thumb["width"], thumb["height"]) == sizes[0]
