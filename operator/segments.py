"""Segment-parallel encoding in cluster mode: a long source's renditions as one worker Job per
segment, joined by the operator once every segment of a rendition has succeeded.

The split is derived from the plan, the probed duration and the settings alone, so every
reconcile (and a restarted operator) computes the same segment targets, hence the same Job
names: creation stays create-or-get and idempotent like every other worker Job. A segment is
an ordinary :class:`Target` (``<variant>s<k>``, e.g. ``720ps3``) whose worker gets
``--segment k/N --segment-seconds S``, so progress, failures and retries follow the rules of
the other targets; its weight is its share of the rendition's.

The join (:func:`join_rendition`) concatenates the segments' partial playlists into the
rendition's ``video.m3u8`` through storage: text only, cheap enough for the operator, and
repeatable (the partial playlists stay), so an operator killed mid-join simply joins again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from atproto_video.core.config import KubeSettings
from atproto_video.core.details import SourceSummary
from atproto_video.core.storage import Storage
from atproto_video.transcoder import encoding
from atproto_video.transcoder.contract import Target
from atproto_video.transcoder.errors import EncodingFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.segments import (
    Segment,
    join_playlists,
    part_name,
    plan_segments,
)


def segments_for(
    source: SourceSummary | None, kube: KubeSettings, limits: TranscodeLimits
) -> list[Segment]:
    """The segments of each rendition's encode for this source ([one] when it stays whole)."""
    if source is None:
        return plan_segments(0.0, 0, 0, limits.segment_s)
    duration = min(source.duration_s, limits.max_duration_s)
    return plan_segments(duration, kube.segment_s, kube.segment_min_source_s, limits.segment_s)


def segment_target(target: Target, segment: Segment, length_s: int) -> Target:
    """One segment of a rendition target, as its own worker Job."""
    share = (segment.length_s or length_s) / (length_s * segment.count)
    return replace(target, name=f"{target.name}s{segment.index}", weight=target.weight * share,
                   args=("--segment", segment.name, "--segment-seconds", str(length_s)))


def expand(targets: Sequence[Target], rendition_names: Sequence[str],
           segments: Sequence[Segment]) -> list[Target]:
    """``targets`` with each rendition replaced by its segments (unchanged for one segment)."""
    if len(segments) <= 1:
        return list(targets)
    length = segments[0].length_s or 0
    out: list[Target] = []
    for target in targets:
        if target.name in rendition_names:
            out += [segment_target(target, s, length) for s in segments]
        else:
            out.append(target)
    return out


def join_rendition(storage: Storage, job_id: str, variant_name: str, count: int) -> None:
    """Write ``<variant>/video.m3u8`` from its ``count`` segments' partial playlists (blocking).

    Raises :class:`EncodingFailure` if a segment's playlist is missing or the segments do not
    follow on from each other.
    """
    parts = []
    for index in range(count):
        try:
            with storage.open_output(job_id, part_name(variant_name, index)) as path:
                parts.append(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EncodingFailure(f"segment {index} of {variant_name} is missing") from None
    storage.write_output(job_id, f"{variant_name}/{encoding.PLAYLIST}", join_playlists(parts))
