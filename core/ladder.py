"""The HLS rendition ladder: which variants a source gets and how each is encoded.

Rungs are measured on the SHORT side so that portrait video stays portrait at the same quality
as landscape ("1080p" means 1080 pixels on the short side). We never upscale: a source whose
short side is below the smallest rung gets exactly one variant at its own (even) size.

Everything here is pure arithmetic, so the operator can plan Jobs and write the master playlist
without running ffmpeg, and both encoding strategies agree on the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

#: (short side, peak video bitrate in bit/s at <= 30 fps). Higher frame rates get 1.5x.
RUNGS: tuple[tuple[int, int], ...] = (
    (1080, 5_000_000),
    (720, 2_800_000),
    (480, 1_200_000),
)
#: AAC-LC stereo bitrate for every variant that carries audio.
AUDIO_BITRATE = 128_000
#: x264 constant-quality target; the peak bitrate above caps it (VBV).
CRF = 23
#: Floor for tiny sources, where bitrate scaled by area would starve the encoder.
MIN_VIDEO_BITRATE = 300_000
#: Multiplier from codec bitrate to BANDWIDTH: MPEG-TS/PES overhead plus VBV burst headroom.
BANDWIDTH_OVERHEAD = 1.25

# H.264 Annex A levels: (level, MaxMBPS, MaxFS, MaxBR for High profile in bit/s).
_LEVELS: tuple[tuple[str, int, int, int], ...] = (
    ("3.0", 40_500, 1_620, 12_500_000),
    ("3.1", 108_000, 3_600, 17_500_000),
    ("3.2", 216_000, 5_120, 25_000_000),
    ("4.0", 245_760, 8_192, 25_000_000),
    ("4.1", 245_760, 8_192, 62_500_000),
    ("4.2", 522_240, 8_704, 62_500_000),
    ("5.0", 589_824, 22_080, 168_750_000),
    ("5.1", 983_040, 36_864, 300_000_000),
    ("5.2", 2_073_600, 36_864, 300_000_000),
)


@dataclass(frozen=True)
class Variant:
    """One HLS rendition; `name` is also its directory under the output (`<name>/video.m3u8`).

    `rung` is the ladder target this variant fulfils ("1080p", "720p", "480p"). It equals
    `name` except for sources below the smallest rung, whose single variant is named after
    its real short side (e.g. "240p") but is still produced by the "480p" target, so a
    cluster that always schedules one Job per rung never loses it.
    """

    name: str
    rung: str
    width: int
    height: int
    video_bitrate: int
    level: str
    profile: str = "high"
    crf: int = CRF
    audio_bitrate: int = AUDIO_BITRATE

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def bufsize(self) -> int:
        """VBV buffer: one second at peak keeps 4 s segments close to the advertised rate."""
        return self.video_bitrate

    def bandwidth(self, *, has_audio: bool = True) -> int:
        """Peak BANDWIDTH for the master playlist, derived from the plan (deterministic)."""
        audio = self.audio_bitrate if has_audio else 0
        return int((self.video_bitrate + audio) * BANDWIDTH_OVERHEAD)

    def codecs(self, *, has_audio: bool = True) -> str:
        """RFC 6381 CODECS string: avc1.<profile><constraints><level> (+ AAC-LC)."""
        major, minor = self.level.split(".")
        avc = f"avc1.6400{int(major) * 10 + int(minor):02x}"
        return f"{avc},mp4a.40.2" if has_audio else avc


def even(value: float) -> int:
    """Round to the nearest even integer >= 2 (4:2:0 chroma needs even dimensions)."""
    return max(2, 2 * round(value / 2))


def even_floor(value: int) -> int:
    """Largest even integer <= value (at least 2): used where rounding up would upscale."""
    return max(2, value - value % 2)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Exact even dimensions with the given short side, preserving the aspect ratio.

    Never larger than the source in either dimension (rounding could otherwise add a pixel).
    """
    if width <= height:
        w, h = even(short_side), even(height * short_side / width)
    else:
        w, h = even(width * short_side / height), even(short_side)
    return min(w, even_floor(width)), min(h, even_floor(height))


def h264_level(width: int, height: int, fps: float, bitrate: int) -> str:
    """Lowest High-profile level whose frame size, macroblock rate and bitrate fit."""
    frame_mbs = math.ceil(width / 16) * math.ceil(height / 16)
    mbps = frame_mbs * max(fps, 1.0)
    for level, max_mbps, max_fs, max_br in _LEVELS:
        if frame_mbs <= max_fs and mbps <= max_mbps and bitrate <= max_br:
            return level
    return _LEVELS[-1][0]


def _bitrate(short_side: int, width: int, height: int, fps: float) -> int:
    """Peak bitrate of the nearest rung, scaled by area for sizes between rungs."""
    for rung, rate in RUNGS:
        if short_side >= rung:
            base = rate
            break
    else:
        rung, rate = RUNGS[-1]
        base = max(MIN_VIDEO_BITRATE, int(rate * (width * height) / (rung * rung * 16 / 9)))
    return int(base * 1.5) if fps > 30.5 else base


def build_ladder(width: int, height: int, fps: float | Fraction = 30.0) -> list[Variant]:
    """Variants for a source of the given DISPLAY size (after rotation), largest first.

    Only rungs at or below the source's short side are produced; a source smaller than the
    smallest rung gets one variant at its own even size, named after its short side.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid source size {width}x{height}")
    rate = float(fps)
    short = min(width, height)
    sizes: list[tuple[int, int]] = []
    for rung, _ in RUNGS:
        if short >= rung:
            sizes.append(scaled_size(width, height, rung))
    if not sizes:
        sizes.append((even_floor(width), even_floor(height)))
    variants = []
    smallest = RUNGS[-1][0]
    for w, h in sizes:
        s = min(w, h)
        bitrate = _bitrate(s, w, h, rate)
        variants.append(
            Variant(
                name=f"{s}p",
                rung=rung_name(max(s, smallest)),
                width=w,
                height=h,
                video_bitrate=bitrate,
                level=h264_level(w, h, rate, bitrate),
            )
        )
    return variants


def rung_name(short_side: int) -> str:
    return f"{short_side}p"


RUNG_NAMES: tuple[str, ...] = tuple(rung_name(r) for r, _ in RUNGS)

