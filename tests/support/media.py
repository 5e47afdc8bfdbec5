"""Test clips generated with ffmpeg (nothing binary is committed)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

#: What most tests want: H.264 High 4:2:0 and AAC in MP4, fast to make.
H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
AAC = ("-c:a", "aac")


def ffmpeg(*args: str, cwd: Path | None = None, timeout: float = 120) -> None:
    """Run ffmpeg quietly (errors only), overwriting outputs, never reading stdin."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=timeout,
        cwd=cwd,
    )


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "320x240",
    rate: float | Fraction = 30,
    audio: bool = True,
    source: str = "testsrc2",
    video: Sequence[str] = H264,
    audio_codec: Sequence[str] = AAC,
    extra: Sequence[str] = (),
) -> Path:
    """A synthetic clip with moving content and, unless ``audio=False``, a 440 Hz tone.

    ``source`` is any lavfi video source (``"color=black"`` for a black clip); ``video`` and
    ``audio_codec`` pick the encoders (and may add ``-f`` for the container); ``extra`` goes
    just before the output path (filters, metadata, muxer flags).
    """
    joiner = ":" if "=" in source else "="
    args = ["-f", "lavfi", "-i", f"{source}{joiner}size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
        args += [*audio_codec, "-shortest"]
    # Generation runs faster than real time; the bound only stops a hung ffmpeg.
    ffmpeg(*args, *video, *extra, str(path), timeout=120 + 10 * seconds)
    return path


def cached(media_dir: Path, name: str, build: Callable[[Path], object]) -> Path:
    """``media_dir/name``, made by ``build`` unless an earlier test (same session) made it."""
    path = media_dir / name
    if not path.exists():
        build(path)
    return path
