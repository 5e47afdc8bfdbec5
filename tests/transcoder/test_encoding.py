"""Encoder and muxer arguments: H.264 level and VBV from the plan, keyframes on segment
boundaries, no metadata published; checked as argument lists and by running ffmpeg with them."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from atproto_video.core.ladder import Variant
from atproto_video.transcoder import encoding
from atproto_video.transcoder.limits import TranscodeLimits
from tests.support.media import ffmpeg, make_clip
from tests.transcoder.media import ffprobe, parse_media_playlist, source_info

V720 = Variant("720p", "720p", 1280, 720, 2_800_000, "3.1")
SMALL = Variant("240p", "480p", 320, 240, 300_000, "3.0")


def option(args: list[str], name: str) -> str:
    """The value following ``name``; fails if the option is absent or given twice."""
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]


def test_video_args_level_profile_and_vbv_come_from_the_variant() -> None:
    args = encoding.video_args(V720, source_info(), Fraction(30), TranscodeLimits(threads=2), 0)
    assert option(args, "-c:v:0") == "libx264"
    assert (option(args, "-profile:v:0"), option(args, "-level:v:0")) == ("high", "3.1")
    assert option(args, "-crf:v:0") == "23"
    # VBV: peak rate and a one-second buffer, so segments stay near the advertised BANDWIDTH.
    assert option(args, "-maxrate:v:0") == option(args, "-bufsize:v:0") == "2800000"
    assert option(args, "-pix_fmt:v:0") == "yuv420p"


@pytest.mark.parametrize(
    ("fps", "segment_s", "gop"),
    [(Fraction(30), 4, 120), (Fraction(30000, 1001), 4, 120), (Fraction(24), 2, 48),
     (Fraction(50), 4, 200), (Fraction(1, 10), 4, 1)],
)
def test_gop_and_forced_keyframes_follow_the_segment_length(
    fps: Fraction, segment_s: int, gop: int
) -> None:
    limits = TranscodeLimits(segment_s=segment_s, threads=1)
    args = encoding.video_args(V720, source_info(fps=fps), fps, limits, 0)
    assert option(args, "-g:v:0") == str(gop)
    assert option(args, "-force_key_frames:v:0") == f"expr:gte(t,n_forced*{segment_s})"


def test_metadata_and_chapters_are_dropped() -> None:
    assert encoding.STRIP_METADATA == ("-map_metadata", "-1", "-map_chapters", "-1")
    assert encoding.thumbnail_output()[:4] == list(encoding.STRIP_METADATA)


def test_hdr_output_is_tagged_bt709_and_sdr_is_left_alone() -> None:
    limits = TranscodeLimits(threads=1)
    hdr = encoding.video_args(V720, source_info(color_transfer="smpte2084"), Fraction(30), limits,
                              0)
    assert [option(hdr, o + ":v:0") for o in ("-colorspace", "-color_primaries", "-color_trc")
            ] == ["bt709", "bt709", "bt709"]
    sdr = encoding.video_args(V720, source_info(), Fraction(30), limits, 0)
    assert not any(arg.startswith(("-colorspace", "-color_trc")) for arg in sdr)


def test_threads_only_when_chosen(one_cpu: None) -> None:
    chosen = encoding.video_args(V720, source_info(), Fraction(30), TranscodeLimits(threads=3), 0)
    assert option(chosen, "-threads:v:0") == "3"
    auto = encoding.video_args(V720, source_info(), Fraction(30), TranscodeLimits(threads=0), 0)
    assert not any(arg.startswith("-threads") for arg in auto)


def test_audio_is_aac_lc_stereo_48k_from_the_probed_stream() -> None:
    args = encoding.audio_args(source_info(audio_stream=2), V720)
    assert option(args, "-map") == "0:2"
    assert (option(args, "-c:a"), option(args, "-profile:a")) == ("aac", "aac_low")
    assert option(args, "-b:a") == "128000"
    assert (option(args, "-ac"), option(args, "-ar")) == ("2", "48000")


def test_no_audio_in_means_no_audio_out() -> None:
    assert encoding.audio_args(source_info(audio_stream=None), V720) == ["-an"]


def test_hls_output_is_a_vod_playlist_in_the_variant_directory() -> None:
    args = encoding.hls_output(V720, TranscodeLimits(segment_s=4))
    assert args == [
        "-f", "hls", "-hls_time", "4", "-hls_playlist_type", "vod",
        "-hls_segment_type", "mpegts", "-hls_flags", "independent_segments",
        "-hls_segment_filename", "720p/seg_%03d.ts", "720p/video.m3u8",
    ]


def test_tee_feeds_the_same_encode_to_hls_and_faststart_mp4() -> None:
    args = encoding.renditions_output([V720], TranscodeLimits(segment_s=4), has_audio=True)
    assert args[:4] == ["-flags", "+global_header", "-f", "tee"]
    hls, mp4 = args[4].split("|")
    assert hls == ("[select=\\'v:0,a\\':f=hls:hls_time=4:hls_playlist_type=vod:"
                   "hls_segment_type=mpegts:hls_flags=independent_segments:"
                   "hls_segment_filename=720p/seg_%03d.ts]720p/video.m3u8")
    assert mp4 == "[select=\\'v:0,a\\':f=mp4:movflags=+faststart]video.mp4"
    assert encoding.mp4_output() == ["-f", "mp4", "-movflags", "+faststart", "video.mp4"]


def test_one_output_carries_every_rendition_and_one_audio_track() -> None:
    """Each HLS playlist gets its own video and the shared audio; the MP4 the first's."""
    args = encoding.renditions_output([V720, SMALL], TranscodeLimits(segment_s=4),
                                      has_audio=True)
    assert args[:4] == ["-flags", "+global_header", "-f", "tee"]
    top_hls, mp4, small_hls = args[4].split("|")
    assert top_hls.startswith("[select=\\'v:0,a\\':f=hls:hls_time=4:")
    assert top_hls.endswith("hls_segment_filename=720p/seg_%03d.ts]720p/video.m3u8")
    assert mp4 == "[select=\\'v:0,a\\':f=mp4:movflags=+faststart]video.mp4"
    assert small_hls.startswith("[select=\\'v:1,a\\':f=hls:")
    assert small_hls.endswith("]240p/video.m3u8")
    silent = encoding.renditions_output([V720, SMALL], TranscodeLimits(), has_audio=False)
    assert [part.split(":f=")[0] for part in silent[4].split("|")] == [
        "[select=\\'v:0\\'", "[select=\\'v:0\\'", "[select=\\'v:1\\'"]


def test_video_args_for_one_stream_of_several() -> None:
    """The same settings, addressed to the output's n-th video stream only (never to its
    audio encoder); no metadata options (those are per output)."""
    limits = TranscodeLimits(segment_s=4)
    source = source_info(width=1280, height=720, fps=Fraction(30))
    first = encoding.video_args(V720, source, Fraction(30), limits, 0)
    second = encoding.video_args(V720, source, Fraction(30), limits, 1)
    assert not any(arg.startswith(("-map_metadata", "-map_chapters")) for arg in first)
    assert all(opt.endswith(":v:0") for opt in first[::2])
    assert all(opt.endswith(":v:1") for opt in second[::2])
    assert first[1::2] == second[1::2]
    assert [opt.removesuffix(":v:0") for opt in first[::2]] == [
        opt.removesuffix(":v:1") for opt in second[::2]]


def keyframe_times(path: Path) -> list[float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,flags", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return [float(t) for t, flags in (line.split(",", 1) for line in out.split()) if "K" in flags]


def test_ffmpeg_with_these_arguments_writes_what_the_plan_promises(tmp_path: Path) -> None:
    """One real encode through the tee, as the service's processes run it: level, profile,
    keyframes every segment, no tags."""
    src = make_clip(tmp_path / "in.mp4", seconds=3, size="320x240", rate=30,
                    extra=("-metadata", "title=secret place"))
    limits = TranscodeLimits(segment_s=1, threads=1)
    fps = Fraction(30)
    source = source_info(width=320, height=240, fps=fps, audio_stream=1)
    out = tmp_path / "out"
    (out / SMALL.name).mkdir(parents=True)
    ffmpeg("-i", str(src), "-map", "0:v", *encoding.STRIP_METADATA,
           *encoding.video_args(SMALL, source, fps, limits, 0),
           *encoding.audio_args(source, SMALL),
           *encoding.renditions_output([SMALL], limits, has_audio=True), cwd=out)

    mp4 = out / encoding.MP4
    info = ffprobe(mp4)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    assert (video["profile"], video["level"], video["pix_fmt"]) == ("High", 30, "yuv420p")
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
    assert "secret" not in str(info["format"].get("tags", {}))
    assert keyframe_times(mp4) == pytest.approx([0.0, 1.0, 2.0], abs=0.02)

    playlist = parse_media_playlist(out / SMALL.name / encoding.PLAYLIST)
    assert playlist.ended and "#EXT-X-PLAYLIST-TYPE:VOD" in playlist.tags
    assert [name for _, name in playlist.segments] == ["seg_000.ts", "seg_001.ts", "seg_002.ts"]
    assert [round(d, 1) for d, _ in playlist.segments] == [1.0, 1.0, 1.0]
