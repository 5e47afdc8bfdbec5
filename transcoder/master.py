"""The HLS master playlist, written from the plan alone (deterministic, no ffmpeg needed).

Writing it from the plan lets the operator produce it after per-rendition Jobs finish
without inspecting their output, and keeps BANDWIDTH/CODECS identical for both strategies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from atproto_video.core.atomicfile import atomic_write_text
from atproto_video.core.ladder import Variant
from atproto_video.transcoder.encoding import MASTER, PLAYLIST


def master_playlist(plan: Sequence[Variant], *, has_audio: bool = True) -> str:
    """Variants best-first, which is also the order most players try first."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for variant in plan:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={variant.bandwidth(has_audio=has_audio)},"
            f"RESOLUTION={variant.width}x{variant.height},"
            f'CODECS="{variant.codecs(has_audio=has_audio)}"'
        )
        lines.append(f"{variant.name}/{PLAYLIST}")
    return "\n".join(lines) + "\n"


def write_master(plan: Sequence[Variant], out_dir: Path, *, has_audio: bool = True) -> Path:
    """Atomically write `out_dir/playlist.m3u8` so players never see a partial file."""
    if not plan:
        raise ValueError("cannot write a master playlist without variants")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / MASTER
    atomic_write_text(target, master_playlist(plan, has_audio=has_audio))
    return target
