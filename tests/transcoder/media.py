"""Generate test inputs with ffmpeg and inspect outputs with ffprobe (nothing binary committed)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        timeout=120,
    )


def clip(
    path: Path,
    *,
    size: str = "320x240",
    rate: float = 30,
    seconds: float = 2.0,
    audio: bool = True,
    source: str = "testsrc2",
    video: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    audio_codec: tuple[str, ...] = ("-c:a", "aac"),
    extra: tuple[str, ...] = (),
) -> Path:
    """A synthetic clip with moving content (and a tone unless `audio=False`)."""
    joiner = ":" if "=" in source else "="
    args = ["-f", "lavfi", "-i", f"{source}{joiner}size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
        args += [*audio_codec, "-shortest"]
    ffmpeg(*args, *video, *extra, str(path))
    return path


def ffprobe(path: Path, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", *extra,
         str(path)],
        check=True, capture_output=True, timeout=60,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def stream(path: Path, kind: str) -> dict[str, Any] | None:
    for s in ffprobe(path)["streams"]:
        if s["codec_type"] == kind:
            return s  # type: ignore[no-any-return]
    return None


def mean_luma(image: Path) -> float:
    """Average 8-bit luma of an image, decoded by ffmpeg."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(image), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    return sum(raw) / max(len(raw), 1)


def top_level_atoms(mp4: Path) -> list[str]:
    data = mp4.read_bytes()
    atoms, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[offset + 8:offset + 16], "big")
        atoms.append(kind)
        if size < 8:
            break
        offset += size
    return atoms


@dataclass
class MediaPlaylist:
    target_duration: int
    segments: list[tuple[float, str]]
    ended: bool
    tags: list[str] = field(default_factory=list)


def parse_media_playlist(path: Path) -> MediaPlaylist:
    lines = path.read_text().splitlines()
    assert lines[0] == "#EXTM3U"
    target, ended, duration = -1, False, None
    segments: list[tuple[float, str]] = []
    for line in lines[1:]:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line and not line.startswith("#"):
            assert duration is not None, f"segment {line} without EXTINF"
            segments.append((duration, line))
            duration = None
    return MediaPlaylist(target, segments, ended, [x for x in lines if x.startswith("#")])


@dataclass
class StreamInf:
    attributes: dict[str, str]
    uri: str


def parse_master_playlist(path: Path) -> list[StreamInf]:
    lines = path.read_text().splitlines()
    assert lines[0] == "#EXTM3U"
    out, pending = [], None
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = dict(
                (k, v.strip('"'))
                for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])
            )
            pending = attrs
        elif line and not line.startswith("#"):
            assert pending is not None, f"URI {line} without EXT-X-STREAM-INF"
            out.append(StreamInf(pending, line))
            pending = None
    return out
