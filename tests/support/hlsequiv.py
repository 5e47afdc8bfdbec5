"""Is a rendition joined from segment encodes equivalent to the single encode? Measured with
ffprobe/ffmpeg: frame counts, timestamp continuity per stream, a clean decode, PSNR.

Shared by the transcoder test, the cluster test and the benchmark, so all three hold the
joined output to the same checks.
"""

from __future__ import annotations

import itertools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TIMEOUT = 300


def media_segments(playlist: Path) -> list[Path]:
    """The media files a VOD media playlist names, in order."""
    lines = playlist.read_text(encoding="utf-8").splitlines()
    return [playlist.parent / line.strip() for line in lines
            if line.strip() and not line.startswith("#")]


def playlist_seconds(playlist: Path) -> float:
    """The sum of the playlist's #EXTINF durations."""
    text = playlist.read_text(encoding="utf-8")
    return sum(float(m) for m in re.findall(r"#EXTINF:([0-9.]+)", text))


def frame_count(path: Path) -> int:
    """Decoded video frames (``ffprobe -count_frames``) of a file or playlist."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True, timeout=_TIMEOUT,
    ).stdout
    return int(out.strip().splitlines()[0].strip(","))


def _packets(ts: Path, kind: str) -> list[tuple[float, float]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", kind, "-show_entries",
         "packet=pts_time,duration_time", "-of", "csv=p=0", str(ts)],
        check=True, capture_output=True, text=True, timeout=_TIMEOUT,
    ).stdout
    packets = []
    for line in out.splitlines():
        fields = line.strip().strip(",").split(",")
        if len(fields) >= 2 and fields[0] not in ("", "N/A"):
            packets.append((float(fields[0]), float(fields[1])))
    return packets


@dataclass(frozen=True)
class Continuity:
    """Across the whole rendition (every media segment, in playlist order): the largest gap
    and the largest overlap between one packet's end and the next one's start, in seconds."""

    packets: int
    max_gap_s: float
    max_overlap_s: float
    #: (last pts of one media segment, first pts of the next): where the joins are.
    boundaries: tuple[tuple[float, float], ...]


def continuity(playlist: Path, kind: str) -> Continuity:
    """``kind``: "v" or "a". Packets are ordered by presentation time within the rendition."""
    packets: list[tuple[float, float]] = []
    boundaries = []
    previous_last: float | None = None
    for ts in media_segments(playlist):
        these = sorted(_packets(ts, kind))
        if not these:
            continue
        if previous_last is not None:
            boundaries.append((previous_last, these[0][0]))
        previous_last = these[-1][0]
        packets += these
    packets.sort()
    gap = overlap = 0.0
    for (pts, duration), (next_pts, _) in itertools.pairwise(packets):
        delta = next_pts - (pts + duration)
        gap = max(gap, delta)
        overlap = max(overlap, -delta)
    return Continuity(len(packets), gap, overlap, tuple(boundaries))


def decode_errors(playlist: Path) -> str:
    """What ffmpeg complains about while decoding every segment of the playlist (or a whole
    file such as an MP4); "" if none."""
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-i", str(playlist),
         "-f", "null", "-"],
        capture_output=True, text=True, timeout=_TIMEOUT,
    )
    return result.stderr.strip() or ("" if result.returncode == 0 else f"exit {result.returncode}")


def psnr(reference: Path, encoded: Path, width: int, height: int, fps: str) -> float:
    """Average PSNR (dB) of ``encoded`` against ``reference`` brought to the same size and
    rate; both timelines start at 0, so a constant timestamp offset does not misalign them."""
    graph = (f"[0:v]fps={fps},scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p,"
             "setpts=PTS-STARTPTS[ref];"
             "[1:v]setsar=1,format=yuv420p,setpts=PTS-STARTPTS[enc];"
             "[enc][ref]psnr")
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-v", "info", "-i", str(reference),
         "-i", str(encoded), "-lavfi", graph, "-f", "null", "-"],
        capture_output=True, text=True, timeout=_TIMEOUT, check=True,
    )
    match = re.search(r"PSNR .*? average:([0-9.]+|inf)", result.stderr)
    if match is None:
        raise AssertionError(f"no PSNR in ffmpeg output: {result.stderr[-500:]}")
    return float(match.group(1))


def top_level_boxes(mp4: Path) -> list[str]:
    """The MP4's top-level box types in file order (faststart: ``moov`` before ``mdat``)."""
    boxes = []
    with mp4.open("rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                break
            size, kind = int.from_bytes(header[:4], "big"), header[4:].decode("latin-1")
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            elif size == 0:
                boxes.append(kind)
                break
            boxes.append(kind)
            f.seek(size - 8, 1)
    return boxes


def stream_seconds(path: Path, kind: str = "v") -> float:
    """Decoded length of one stream: last frame's end minus first frame's start."""
    packets = _packets(path, kind)
    if not packets:
        return 0.0
    start = min(pts for pts, _ in packets)
    return max(pts + duration for pts, duration in packets) - start


def start_seconds(path: Path) -> float:
    """The container's start time (an MP4 made to start at once reads 0)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=start_time", "-of", "csv=p=0",
         str(path)], check=True, capture_output=True, text=True, timeout=_TIMEOUT,
    ).stdout
    return float(out.strip().strip(","))

