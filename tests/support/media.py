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


def play_hls(url: str, timeout: float = 120) -> int:
    """Play an HLS stream the way a player does (master playlist, variant, segments, over
    HTTP, following redirects) and return the number of video packets read."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", url],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if out.returncode != 0:
        raise AssertionError(f"ffprobe could not play {url}: {out.stderr[-2000:]}")
    return int(out.stdout.strip().splitlines()[0].strip(","))
