"""Encoder and muxer arguments per output; one place so both strategies encode identically."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from atproto_video.core.ladder import Variant
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.probe import SourceInfo

#: x264 speed/quality trade-off: fast enough for CPU-only workers, fine at these bitrates.
X264_PRESET = "veryfast"
AUDIO_SAMPLE_RATE = 48_000
PLAYLIST = "video.m3u8"
SEGMENT_PATTERN = "seg_%03d.ts"
MP4 = "video.mp4"
THUMBNAIL = "thumbnail.jpg"
MASTER = "playlist.m3u8"
#: Phones write GPS location, device and owner names into metadata: never publish them.
STRIP_METADATA = ("-map_metadata", "-1", "-map_chapters", "-1")


def video_args(
    variant: Variant,
    source: SourceInfo,
    fps: Fraction,
    limits: TranscodeLimits,
    stream: int,
) -> list[str]:
    """H.264 High, CRF capped by VBV, IDR frames exactly on segment boundaries.

    Addressed to the output's ``stream``-th video stream (``-crf:v:1``...), so one output can
    carry several renditions (:func:`renditions_output`) and no option reaches its audio
    encoder; :data:`STRIP_METADATA` is the caller's, once per output.
    """
    gop = max(1, round(float(fps) * limits.segment_s))
    spec = f":v:{stream}"
    args = [
        "-c" + spec, "libx264",
        "-preset" + spec, X264_PRESET,
        "-profile" + spec, variant.profile,
        "-level" + spec, variant.level,
        "-crf" + spec, str(variant.crf),
        "-maxrate" + spec, str(variant.video_bitrate),
        "-bufsize" + spec, str(variant.bufsize),
        "-g" + spec, str(gop),
        "-force_key_frames" + spec, f"expr:gte(t,n_forced*{limits.segment_s})",
        "-pix_fmt" + spec, "yuv420p",
    ]
    if source.hdr:
        args += ["-colorspace" + spec, "bt709", "-color_primaries" + spec, "bt709",
                 "-color_trc" + spec, "bt709"]
    if limits.thread_count is not None:
        args += ["-threads" + spec, str(limits.thread_count)]
    return args


def audio_args(source: SourceInfo, variant: Variant) -> list[str]:
    """AAC-LC stereo at 48 kHz; no audio track in means none out (see `pipeline`)."""
    if source.audio_stream is None:
        return ["-an"]
    return [
        "-map", f"0:{source.audio_stream}",
        "-c:a", "aac", "-profile:a", "aac_low",
        "-b:a", str(variant.audio_bitrate),
        "-ac", "2", "-ar", str(AUDIO_SAMPLE_RATE),
    ]


def hls_options(variant: Variant, limits: TranscodeLimits) -> dict[str, str]:
    """VOD playlist of MPEG-TS segments (the most widely playable HLS segment type)."""
    return {
        "hls_time": str(limits.segment_s),
        "hls_playlist_type": "vod",
        "hls_segment_type": "mpegts",
        "hls_flags": "independent_segments",
        "hls_segment_filename": f"{variant.name}/{SEGMENT_PATTERN}",
    }


def hls_output(variant: Variant, limits: TranscodeLimits) -> list[str]:
    """Muxer arguments for one rendition, relative to the output directory (ffmpeg's cwd)."""
    args = ["-f", "hls"]
    for key, value in hls_options(variant, limits).items():
        args += [f"-{key}", value]
    return [*args, f"{variant.name}/{PLAYLIST}"]


def mp4_output() -> list[str]:
    """Web MP4 with the moov atom first so playback starts before the download ends."""
    return ["-f", "mp4", "-movflags", "+faststart", MP4]


def renditions_output(
    plan: Sequence[Variant], limits: TranscodeLimits, *, has_audio: bool
) -> list[str]:
    """One output whose streams are every rendition's video (in plan order) and one audio
    track, split by the tee muxer: each rendition's HLS playlist gets its video and the
    shared audio, and ``video.mp4`` the first rendition's. The audio is encoded once instead
    of once per rendition (0.7 CPU-s per encode of a 30 s stereo track here).

    Variant names are `<digits>p`, so no tee escaping is needed; global headers let the MP4
    carry avcC while the MPEG-TS muxer re-inserts SPS/PPS at every keyframe.
    """
    slaves = []
    for i, variant in enumerate(plan):
        select = f"select=\\'v:{i},a\\'" if has_audio else f"select=\\'v:{i}\\'"
        hls = ":".join(f"{k}={v}" for k, v in hls_options(variant, limits).items())
        slaves.append(f"[{select}:f=hls:{hls}]{variant.name}/{PLAYLIST}")
        if i == 0:
            slaves.append(f"[{select}:f=mp4:movflags=+faststart]{MP4}")
    return ["-flags", "+global_header", "-f", "tee", "|".join(slaves)]


def thumbnail_output() -> list[str]:
    """Each frame overwrites the file; the last one written is the chosen thumbnail."""
    return [*STRIP_METADATA, "-update", "1", "-q:v", "3", "-f", "image2", THUMBNAIL]
