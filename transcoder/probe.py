"""Identify an upload and decide whether we accept it, before any encoder runs."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from atproto_video.transcoder.errors import EncodingFailure, ValidationFailure
from atproto_video.transcoder.formats import (
    ALLOWED_DEMUXERS,
    DESCRIPTIONS,
    demuxer_for_format_name,
    input_args,
    sniff,
)
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.process import clean_message, run

_PROBE_TIMEOUT_S = 60.0
_HDR_TRANSFERS = ("smpte2084", "arib-std-b67")
#: Shorter than this, or a single frame, is a still image rather than a video.
_MIN_FRAMES = 2


@dataclass(frozen=True)
class SourceInfo:
    """What we know about an accepted source; width/height are as displayed (rotation, SAR)."""

    format: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    duration_s: float
    fps: Fraction
    video_stream: int
    video_codec: str
    pix_fmt: str
    color_transfer: str
    audio_stream: int | None

    @property
    def has_audio(self) -> bool:
        return self.audio_stream is not None

    @property
    def hdr(self) -> bool:
        """PQ or HLG transfer: needs tone mapping to look right as 8-bit BT.709."""
        return self.color_transfer in _HDR_TRANSFERS

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON (``fps`` as ``"num/den"``): what the operator hands segment
        workers so they need not probe the same file again."""
        return {**asdict(self), "fps": str(self.fps)}

    @classmethod
    def from_json(cls, data: Any) -> SourceInfo | None:
        """Facts from :meth:`to_json`; None when anything is missing or out of range."""
        if not isinstance(data, dict):
            return None
        try:
            fps = Fraction(str(data["fps"]))
            audio = data["audio_stream"]
            info = cls(
                format=str(data["format"]), width=int(data["width"]),
                height=int(data["height"]), coded_width=int(data["coded_width"]),
                coded_height=int(data["coded_height"]), rotation=int(data["rotation"]) % 360,
                duration_s=float(data["duration_s"]), fps=fps,
                video_stream=int(data["video_stream"]), video_codec=str(data["video_codec"]),
                pix_fmt=str(data["pix_fmt"]), color_transfer=str(data["color_transfer"]),
                audio_stream=None if audio is None else int(audio),
            )
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None
        sizes = (info.width, info.height, info.coded_width, info.coded_height)
        if (info.format not in ALLOWED_DEMUXERS or min(sizes) <= 0 or not 0 < fps <= 1000
                or not math.isfinite(info.duration_s) or info.duration_s <= 0
                or info.video_stream < 0 or (info.audio_stream or 0) < 0):
            return None
        return info

    def output_fps(self, max_fps: int) -> Fraction:
        """Constant output rate: the source rate, or an even fraction of it at most `max_fps`.

        Dropping every 2nd (or Nth) frame keeps motion even (120 -> 60, 100 -> 50, 90 -> 45);
        when that would lose more than a quarter of the allowed rate (75 -> 37.5 with a cap
        of 60) we output exactly the cap instead.
        """
        fps = self.fps
        if fps <= max_fps:
            return fps
        reduced = fps / math.ceil(fps / max_fps)
        return reduced if reduced >= Fraction(3 * max_fps, 4) else Fraction(max_fps)


def probe(path: Path, limits: TranscodeLimits) -> SourceInfo:
    """Sniff, ffprobe and check `path` against `limits`; raises `ValidationFailure`."""
    demuxer = sniff(path)
    argv = [
        limits.ffprobe_path, "-v", "error", "-hide_banner",
        *input_args(path, demuxer, max_frame_pixels=limits.max_frame_pixels),
        "-show_format", "-show_streams", "-of", "json",
    ]
    if demuxer == "gif":
        argv.append("-count_packets")  # GIF has no frame count in its header
    result = run(argv, timeout_s=_PROBE_TIMEOUT_S, max_memory_bytes=limits.max_memory_bytes)
    if result.spawn_error is not None:
        raise EncodingFailure(f"cannot run ffprobe ({result.spawn_error})")
    if result.timed_out:
        raise ValidationFailure("inspecting the upload took too long")
    if result.out_of_resources:
        raise EncodingFailure("ran out of memory while inspecting the upload")
    if any("exceeds specified max pixel count" in line for line in result.stderr_tail):
        raise ValidationFailure("video frames are too large")
    if not result.ok:
        detail = clean_message(result.stderr_tail[-1]) if result.stderr_tail else "unreadable"
        detail = detail.removeprefix("<input>: ")
        raise ValidationFailure(
            f"the upload is not a readable {DESCRIPTIONS[demuxer]} file ({detail})"
        )
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise ValidationFailure("the upload could not be inspected") from None
    return _check(data, demuxer, limits)


def _check(data: dict[str, Any], sniffed: str, limits: TranscodeLimits) -> SourceInfo:
    fmt = data.get("format") or {}
    demuxer = demuxer_for_format_name(str(fmt.get("format_name", "")))
    if demuxer != sniffed:
        raise ValidationFailure("the upload's container format is not supported")
    streams: list[dict[str, Any]] = data.get("streams") or []
    videos = [
        s for s in streams
        if s.get("codec_type") == "video"
        and not (s.get("disposition") or {}).get("attached_pic")
        and int(s.get("width") or 0) > 0
        and int(s.get("height") or 0) > 0  # a header may claim 16x0: no picture to scale
    ]
    if not videos:
        raise ValidationFailure("the upload has no video track (audio-only or empty container)")
    video = videos[0]
    audios = [
        s for s in streams if s.get("codec_type") == "audio" and int(s.get("channels") or 0) > 0
    ]
    codec = str(video.get("codec_name") or "")
    if not codec or codec == "none":
        raise ValidationFailure("the upload's video codec is not supported")

    coded_w, coded_h = int(video["width"]), int(video["height"])
    if coded_w > limits.max_width or coded_h > limits.max_height:
        raise ValidationFailure(
            f"video is {coded_w}x{coded_h}; the maximum is {limits.max_width}x{limits.max_height}"
        )
    if coded_w * coded_h > limits.max_frame_pixels:
        raise ValidationFailure(f"video frames of {coded_w}x{coded_h} are too large")

    rotation = _rotation(video)
    sar = _fraction(video.get("sample_aspect_ratio"), separator=":")
    width, height = coded_w, coded_h
    if sar is not None and sar > 0 and sar != 1:
        width = max(2, round(coded_w * sar))
    if rotation % 180 == 90:
        width, height = height, width

    duration = _duration(fmt, video)
    frames = _int(video.get("nb_read_packets")) or _int(video.get("nb_frames"))
    if frames is not None and frames < _MIN_FRAMES:
        raise ValidationFailure("the upload is a still image, not a video")
    if duration is None or duration <= 0:
        raise ValidationFailure("the upload has no playable duration (still image or empty)")
    if duration > limits.max_duration_s + 0.5:
        raise ValidationFailure(
            f"video is {duration:.0f} s long; the maximum is {limits.max_duration_s:.0f} s"
        )

    fps = _frame_rate(video, frames, duration)
    if coded_w * coded_h * fps * Fraction(duration) > limits.max_total_pixels:  # exact
        raise ValidationFailure("video is too large to process (resolution x frame rate x length)")

    return SourceInfo(
        format=sniffed,
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=rotation,
        duration_s=duration,
        fps=fps,
        video_stream=int(video["index"]),
        video_codec=codec,
        pix_fmt=str(video.get("pix_fmt") or ""),
        color_transfer=str(video.get("color_transfer") or ""),
        audio_stream=int(audios[0]["index"]) if audios else None,
    )


def _rotation(video: dict[str, Any]) -> int:
    """Clockwise display rotation in degrees from the display matrix or legacy `rotate` tag."""
    for side in video.get("side_data_list") or []:
        if "rotation" in side:
            return _degrees(side["rotation"])
    tag = (video.get("tags") or {}).get("rotate")
    return _degrees(tag) if tag is not None else 0


def _degrees(raw: object) -> int:
    """A rotation as 0-359; anything else (text, nan, or a tag saying "inf") is none at all."""
    try:
        return round(float(str(raw))) % 360
    except (ValueError, OverflowError):
        return 0


def _duration(fmt: dict[str, Any], video: dict[str, Any]) -> float | None:
    for raw in (video.get("duration"), fmt.get("duration")):
        try:
            value = float(str(raw))
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def _frame_rate(video: dict[str, Any], frames: int | None, duration: float) -> Fraction:
    """Average rate (right for variable-frame-rate phone video), else the stream's base rate."""
    for key in ("avg_frame_rate", "r_frame_rate"):
        rate = _fraction(video.get(key), separator="/")
        if rate is not None and 0 < rate <= 1000:
            rate = rate.limit_denominator(1001)
            if rate > 0:  # 1/1000000000 rounds to 0: no rate at all
                return rate
    if frames:  # exact: a float quotient overflows for a header's 2**62 frames in 1e-300 s
        return (Fraction(frames) / Fraction(duration)).limit_denominator(1001)
    return Fraction(30)


def _fraction(raw: object, *, separator: str) -> Fraction | None:
    if not isinstance(raw, str) or separator not in raw:
        return None
    num, _, den = raw.partition(separator)
    try:
        n, d = int(num), int(den)
    except ValueError:
        return None
    return Fraction(n, d) if d > 0 and n >= 0 else None


def _int(raw: object) -> int | None:
    try:
        return int(str(raw))
    except ValueError:
        return None
