"""The web MP4 of a segment-encoded job: the joined top rendition remuxed, not re-encoded.

In the ``single`` strategy the MP4 is the top rendition's encode teed to a second muxer; for a
job encoded as segments that encode never exists as one process, and encoding the MP4 whole
would put a full encode back on the critical path. The joined rendition already holds those
bits (same encoder settings), so the MP4 is a stream copy of its HLS media: seconds of I/O.

MPEG-TS carries AAC as ADTS; MP4 wants the raw frames plus an AudioSpecificConfig, hence the
``aac_adtstoasc`` bitstream filter. The segments' timestamps start at the segment lead (and
MPEG-TS's own offset); ffmpeg moves the input's start to 0, both streams alike, so the MP4
starts at once with the rendition's own audio/video alignment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from atproto_video.transcoder import encoding
from atproto_video.transcoder.errors import EncodingFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import (
    _base_argv,
    _check_file,
    _ffmpeg,
    _outputs_fit,
)
from atproto_video.transcoder.progress import Progress, ProgressCallback
from atproto_video.transcoder.segments import parse_part


def playlist_seconds(playlist: Path) -> float:
    """The media length a complete playlist lists (the sum of its EXTINF durations)."""
    try:
        text = playlist.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EncodingFailure(f"rendition playlist {playlist.parent.name}/{playlist.name} "
                              "is missing") from None
    return math.fsum(float(duration) for duration, _ in parse_part(text).entries)


def remux_argv(variant_name: str, limits: TranscodeLimits) -> list[str]:
    """ffmpeg arguments, relative to the output directory (its cwd)."""
    return [*_base_argv(limits),
            # Our own playlist, read only from local files (no http, no concat tricks).
            "-protocol_whitelist", "file", "-f", "hls",
            "-i", f"{variant_name}/{encoding.PLAYLIST}",
            "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-bsf:a", "aac_adtstoasc",
            *encoding.STRIP_METADATA,
            *encoding.mp4_output()]


def remux_rendition(
    out_dir: Path,
    variant_name: str,
    limits: TranscodeLimits,
    on_progress: ProgressCallback | None = None,
) -> Path:
    """Write ``out_dir/video.mp4`` from the complete rendition ``out_dir/<variant_name>/``."""
    seconds = playlist_seconds(out_dir / variant_name / encoding.PLAYLIST)
    progress = Progress(on_progress)
    mp4 = out_dir / encoding.MP4
    with _outputs_fit(out_dir):
        mp4.unlink(missing_ok=True)
        _ffmpeg(remux_argv(variant_name, limits), out_dir, max(1.0, seconds), limits,
                progress.update)
        _check_file(mp4)
    progress.done()
    return mp4


def rendition_files(playlist_text: str) -> Sequence[str]:
    """The media segment names a rendition playlist lists (what a remote worker fetches)."""
    return [uri for _, uri in parse_part(playlist_text).entries]
