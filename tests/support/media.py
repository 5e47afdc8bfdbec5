"""Test clips generated with ffmpeg (nothing binary is committed)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "640x360",
    rate: int = 30,
    audio: bool = True,
    extra: list[str] | None = None,
) -> Path:
    argv = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}:duration={seconds}",
    ]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    argv += [
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        *(extra or []),
        str(path),
    ]
    subprocess.run(argv, check=True)
    return path
