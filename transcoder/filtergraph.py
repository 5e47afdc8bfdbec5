"""ffmpeg filter chains shared by both strategies, so outputs are identical either way.

ffmpeg's autorotate runs before these chains, so frames arrive upright at display size.
"""

from __future__ import annotations

from fractions import Fraction

from atproto_video.ladder import Variant
from atproto_video.transcoder.probe import SourceInfo

#: The thumbnail is chosen among frames sampled from the start of the video.
THUMBNAIL_WINDOW_S = 6.0
THUMBNAIL_SAMPLE_FPS = 4
#: Mean luma (8-bit, limited range: black is 16) below which a frame counts as black.
BLACK_LUMA = 24

_TONEMAP = (
    "zscale=t=linear:npl=100,format=gbrpf32le,zscale=p=bt709,"
    "tonemap=tonemap=hable:desat=0,zscale=t=bt709:m=bt709:r=tv"
)


def _rate(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}"


def preprocess(source: SourceInfo, fps: Fraction) -> str:
    """Source-wide filters: HDR to SDR tone mapping, then constant frame rate (VFR, fps cap)."""
    steps = []
    if source.hdr:
        steps.append(_TONEMAP)
    steps.append(f"fps={_rate(fps)}")
    return ",".join(steps)


def scale(variant: Variant) -> str:
    """Exact even size with square pixels, 8-bit 4:2:0 for H.264 High."""
    return f"scale={variant.width}:{variant.height}:flags=bicubic,setsar=1,format=yuv420p"


def thumbnail(variant: Variant, *, skip_black: bool = True) -> str:
    """A representative, non-black frame from the first seconds.

    `trim` ends this branch early so the shared decode is not held back; the `metadata` step
    drops near-black frames (fade-ins, black leaders) before `thumbnail` picks the frame
    closest to the average histogram.
    """
    frames = int(THUMBNAIL_WINDOW_S * THUMBNAIL_SAMPLE_FPS)
    steps = [
        f"trim=duration={THUMBNAIL_WINDOW_S:g}",
        f"fps={THUMBNAIL_SAMPLE_FPS}",
        f"scale={variant.width}:{variant.height}:flags=bicubic,setsar=1,format=yuv420p",
    ]
    if skip_black:
        steps += [
            "signalstats",
            f"metadata=mode=select:key=lavfi.signalstats.YAVG:value={BLACK_LUMA}:function=greater",
        ]
    steps += [f"thumbnail=n={frames}", "format=yuvj420p"]
    return ",".join(steps)
