"""ffmpeg filter chains shared by both strategies, so outputs are identical either way.

ffmpeg's autorotate runs before these chains, so frames arrive upright at display size.
"""

from __future__ import annotations

from fractions import Fraction

from atproto_video.core.ladder import Variant
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


def thumbnail(source_label: str, out_label: str, variant: Variant) -> str:
    """A filtergraph section choosing a representative, non-black frame from the start.

    `trim` ends this branch early so the shared decode is not held back; the `metadata` step
    drops near-black frames (fade-ins, black leaders) before `thumbnail` picks the frame
    closest to the average histogram. The first frame is emitted immediately and then
    overwritten (image2 `-update 1`) by the chosen one: ffmpeg reports no progress until
    every output has started, and an all-black video still gets its first frame.
    """
    frames = int(THUMBNAIL_WINDOW_S * THUMBNAIL_SAMPLE_FPS)
    sample = ",".join([
        f"trim=duration={THUMBNAIL_WINDOW_S:g}",
        f"fps={THUMBNAIL_SAMPLE_FPS}",
        f"scale={variant.width}:{variant.height}:flags=bicubic,setsar=1,format=yuv420p",
    ])
    choose = ",".join([
        "signalstats",
        f"metadata=mode=select:key=lavfi.signalstats.YAVG:value={BLACK_LUMA}:function=greater",
        f"thumbnail=n={frames}",
        "format=yuvj420p",
    ])
    return (
        f"[{source_label}]{sample},split=2[tfirst_in][tbest_in];"
        "[tfirst_in]trim=end_frame=1,format=yuvj420p[tfirst];"
        f"[tbest_in]{choose}[tbest];"
        f"[tfirst][tbest]concat=n=2:v=1:a=0[{out_label}]"
    )
