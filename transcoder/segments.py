"""Segment-parallel encoding: one rendition encoded as time segments, joined without re-encoding.

A long source's rendition is cut into segments whose boundaries are multiples of the HLS
segment duration, where the encoder forces a keyframe anyway: each segment's encode therefore
starts on an IDR frame and ends exactly where an HLS segment ends, and the joined rendition has
the same HLS segments (names, durations, keyframes) as the single encode. Each segment encode
writes its own ``seg_NNN.ts`` files (numbered from its first HLS segment) and a partial
playlist ``part_KKK.m3u8``; the join concatenates those playlists' entries into
``video.m3u8``: a text operation, no remux, so it can run wherever the playlists can be read
(the operator, through storage).

Timestamps: input seeking (``-ss`` before ``-i``) restarts them at 0; ``-output_ts_offset``
puts them back at the segment's place in the video. A constant lead (``ts_lead_s``) is added
to every segment so no encode starts with negative decode timestamps (B-frame reordering,
AAC priming): ffmpeg would shift such a segment, and only such a segment, forward. With the
lead, all segments are offset alike and the joined streams are continuous; the video as a
whole starts ``ts_lead_s`` minus the encoder's reorder delay later than a single encode does,
which players do not see (HLS timelines are relative to the first segment).

Audio: each segment's AAC encode starts with its own priming frame (1024 samples, 21 ms at
48 kHz), so audio timestamps overlap by that much at a join: under one video frame at up to
46 fps, and decoded as a few milliseconds of near-silence.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from atproto_video.core.atomicfile import atomic_write_text
from atproto_video.transcoder import encoding, filtergraph
from atproto_video.transcoder.errors import EncodingFailure, ValidationFailure
from atproto_video.transcoder.formats import input_args, sniff
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import (
    _base_argv,
    _ffmpeg,
    _outputs_fit,
    find_variant,
    ladder_for,
)
from atproto_video.transcoder.probe import SourceInfo, probe
from atproto_video.transcoder.progress import Progress, ProgressCallback

log = logging.getLogger(__name__)

#: The partial playlist one segment encode writes next to its media segments.
PART_PLAYLIST = "part_{index:03d}.m3u8"
_PART = re.compile(r"part_(\d{3,})\.m3u8")
#: Samples per AAC-LC frame; segments are whole numbers of frames at 48 kHz (8 s multiples).
AAC_FRAME = 1024
_AAC_WHOLE_S = 8
#: x264 ``veryfast`` reorders at most this many frames (3 B-frames plus one).
_REORDER_FRAMES = 4
#: At least the AAC priming delay (1024 samples at 48 kHz is 21.3 ms).
_MIN_LEAD_S = 0.1


@dataclass(frozen=True)
class Segment:
    """One part of a rendition's encode: ``[start_s, start_s + length_s)`` of the source.

    The last segment has ``length_s`` None: it reads to the end of the source (bounded by the
    duration cap), so a container that underestimates its duration loses nothing.
    """

    index: int
    count: int
    start_s: int
    length_s: int | None

    @property
    def is_last(self) -> bool:
        return self.index == self.count - 1

    @property
    def name(self) -> str:
        return f"{self.index}/{self.count}"


def segment_length(setting_s: int, hls_segment_s: int) -> int:
    """The segment length actually used: the setting rounded up to whole HLS segments and
    whole AAC frames (at 48 kHz, every 8 s), so both streams' joins fall on packet edges."""
    if setting_s <= 0:
        return 0
    unit = math.lcm(hls_segment_s, _AAC_WHOLE_S)
    return math.ceil(setting_s / unit) * unit


def plan_segments(
    duration_s: float, setting_s: int, min_source_s: float, hls_segment_s: int
) -> list[Segment]:
    """The segments of one rendition's encode; one segment (the plain encode) when the source
    is shorter than ``min_source_s``, segmenting is off (``setting_s`` 0), or it would make
    only one segment anyway."""
    length = segment_length(setting_s, hls_segment_s)
    if length <= 0 or duration_s < min_source_s:
        return [Segment(0, 1, 0, None)]
    # A last segment under one HLS segment is merged into the one before: nothing to win.
    count = max(1, math.ceil((duration_s - hls_segment_s) / length))
    if count == 1:
        return [Segment(0, 1, 0, None)]
    return [Segment(i, count, i * length, None if i == count - 1 else length)
            for i in range(count)]


def segment_at(index: int, count: int, length_s: int) -> Segment:
    """Segment ``index`` of ``count`` of ``length_s`` seconds (what a worker is told)."""
    if count < 1 or not 0 <= index < count or length_s <= 0:
        raise ValueError(f"bad segment {index}/{count} of {length_s} s")
    return Segment(index, count, index * length_s, None if index == count - 1 else length_s)


def ts_lead_s(fps: Fraction) -> float:
    """The timestamp lead every segment gets (see the module docstring)."""
    return max(_MIN_LEAD_S, _REORDER_FRAMES / float(fps))


def encode_segment(
    src: Path,
    out_dir: Path,
    target: str,
    segment: Segment,
    limits: TranscodeLimits,
    on_progress: ProgressCallback | None = None,
    facts: SourceInfo | None = None,
) -> bool:
    """Encode one segment of rendition ``target`` into ``out_dir/<variant>/``.

    Only this segment's files are replaced, so segments of one rendition may share a
    directory (a shared volume). Returns False when the source is too small for the rung.
    ``facts``: the source as the operator's probe found it; then no ffprobe runs here.
    """
    if segment.start_s % limits.segment_s or (segment.length_s or 0) % limits.segment_s:
        raise ValueError(f"segment {segment.name} is not on HLS segment boundaries")
    source = _given(src, facts) or probe(src, limits)
    variant = find_variant(ladder_for(source, limits), target)
    if variant is None:
        return False
    fps = source.output_fps(limits.max_fps)
    progress = Progress(on_progress)
    rendition = out_dir / variant.name
    first = segment.start_s // limits.segment_s
    part = rendition / PART_PLAYLIST.format(index=segment.index)
    with _outputs_fit(out_dir):
        rendition.mkdir(parents=True, exist_ok=True)
        _remove_own(rendition, part, first, segment, limits)
        seconds = _segment_seconds(source, segment, limits)
        read_s = segment.length_s or max(0.0, limits.max_duration_s - segment.start_s)
        if read_s <= 0:
            raise ValidationFailure("the video is longer than the duration limit")
        extra = ["-ss", str(segment.start_s), "-t", f"{read_s:.3f}"]
        if limits.thread_count is not None:
            extra += ["-threads", str(limits.thread_count)]
        graph = (f"[0:{source.video_stream}]{filtergraph.preprocess(source, fps)},"
                 f"{filtergraph.scale(variant)}[out]")
        hls = encoding.hls_options(variant, limits)
        outputs = ["-map", "[out]", *encoding.STRIP_METADATA,
                   *encoding.video_args(variant, source, fps, limits, 0),
                   *encoding.audio_args(source, variant), *_audio_end(source, segment),
                   "-max_muxing_queue_size", "4096",
                   "-output_ts_offset", f"{segment.start_s + ts_lead_s(fps):.6f}",
                   "-f", "hls"]
        for key, value in hls.items():
            outputs += [f"-{key}", value]
        outputs += ["-start_number", str(first), f"{variant.name}/{part.name}"]
        argv = [*_base_argv(limits),
                *input_args(src, source.format, max_frame_pixels=limits.max_frame_pixels,
                            extra=extra),
                "-filter_complex", graph, *outputs]
        _ffmpeg(argv, out_dir, seconds, limits, progress.update)
        text = part.read_text(encoding="utf-8") if part.exists() else ""
        if "#EXTINF" not in text or "#EXT-X-ENDLIST" not in text:
            raise ValidationFailure("the video contains no decodable frames")
    progress.done()
    return True


def _given(src: Path, facts: SourceInfo | None) -> SourceInfo | None:
    """``facts`` if they can describe ``src``: the file's first bytes must still name the
    container the probe accepted (ffmpeg is then forced to that demuxer, as after a probe of
    its own); otherwise None, and the worker probes."""
    if facts is None:
        return None
    if sniff(src) != facts.format:
        log.warning("the given source facts do not match the file (%s); probing it", facts.format)
        return None
    return facts


def _audio_end(source: SourceInfo, segment: Segment) -> list[str]:
    """End a segment's audio one AAC frame early, where the next segment's priming frame
    starts: audio packets then follow on exactly (no repeated timestamp) across the join."""
    if source.audio_stream is None or segment.length_s is None:
        return []
    end = segment.length_s * encoding.AUDIO_SAMPLE_RATE - AAC_FRAME
    return ["-af", f"aresample={encoding.AUDIO_SAMPLE_RATE},atrim=end_sample={end}"]


def _segment_seconds(source: SourceInfo, segment: Segment, limits: TranscodeLimits) -> float:
    """Expected media length of this segment, for progress and the timeout."""
    end = min(source.duration_s, limits.max_duration_s)
    if segment.length_s is not None:
        end = min(end, segment.start_s + segment.length_s)
    return max(1.0, end - segment.start_s)


def _remove_own(
    rendition: Path, part: Path, first: int, segment: Segment, limits: TranscodeLimits
) -> None:
    """An earlier attempt's files for this segment (never another segment's)."""
    part.unlink(missing_ok=True)
    last = None if segment.length_s is None else first + segment.length_s // limits.segment_s
    for path in rendition.glob("seg_*.ts"):
        match = re.fullmatch(r"seg_(\d+)\.ts", path.name)
        if match and int(match.group(1)) >= first and (last is None or int(match.group(1)) < last):
            path.unlink(missing_ok=True)


# -- the join ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartPlaylist:
    """The entries of one segment's partial playlist: (EXTINF duration, segment URI)."""

    version: int
    target_duration: int
    entries: tuple[tuple[str, str], ...]


def parse_part(text: str) -> PartPlaylist:
    """A partial playlist as ffmpeg's HLS muxer writes it; EncodingFailure if incomplete."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U" or "#EXT-X-ENDLIST" not in lines:
        raise EncodingFailure("a segment's playlist is incomplete")
    version, target, entries = 3, 1, []
    pending: str | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-VERSION:"):
            version = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            pending = line[len("#EXTINF:"):].split(",", 1)[0]
        elif not line.startswith("#"):
            if pending is None:
                raise EncodingFailure("a segment's playlist has a URI without #EXTINF")
            entries.append((pending, line))
            pending = None
    if not entries:
        raise EncodingFailure("a segment's playlist lists no media")
    return PartPlaylist(version, target, tuple(entries))


def join_playlists(parts: Sequence[str]) -> str:
    """The rendition's ``video.m3u8`` from its segments' partial playlists, in order.

    Media segment numbers must run on without a gap or repeat across parts (each segment
    encode numbers its files from its own first HLS segment), so a missing or duplicated
    segment encode is an error rather than a playlist that skips or replays.
    """
    parsed = [parse_part(text) for text in parts]
    entries = [entry for part in parsed for entry in part.entries]
    numbers = [_number(uri) for _, uri in entries]
    if numbers != list(range(numbers[0], numbers[0] + len(numbers))) or numbers[0] != 0:
        raise EncodingFailure("the segments' media do not follow on from each other")
    target = max(max(part.target_duration for part in parsed),
                 max(math.ceil(float(duration)) for duration, _ in entries), 1)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{max(part.version for part in parsed)}",
             f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for duration, uri in entries:
        lines += [f"#EXTINF:{duration},", uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _number(uri: str) -> int:
    match = re.fullmatch(r"seg_(\d+)\.ts", uri)
    if match is None:
        raise EncodingFailure(f"unexpected media segment name {uri!r}")
    return int(match.group(1))


def part_name(variant_name: str, index: int) -> str:
    """A partial playlist's path relative to the output root."""
    return f"{variant_name}/{PART_PLAYLIST.format(index=index)}"


def join_segments(out_dir: Path, variant_name: str, count: int) -> Path:
    """Join a rendition's segments on a local (or shared) output directory; the partial
    playlists are removed once ``video.m3u8`` names their media."""
    rendition = out_dir / variant_name
    parts = [rendition / PART_PLAYLIST.format(index=i) for i in range(count)]
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise EncodingFailure(f"segments missing: {', '.join(missing)}")
    playlist = rendition / encoding.PLAYLIST
    atomic_write_text(playlist, join_playlists([p.read_text(encoding="utf-8") for p in parts]))
    for path in parts:
        path.unlink(missing_ok=True)
    return playlist


def is_part_playlist(name: str) -> bool:
    return _PART.fullmatch(Path(name).name) is not None
