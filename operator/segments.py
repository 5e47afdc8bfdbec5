"""Segment-parallel encoding in cluster mode: a long source's renditions as one worker Job per
segment, joined by the operator once every segment of a rendition has succeeded.

The split is derived from the plan, the probed duration and the settings alone, so every
reconcile (and a restarted operator) computes the same segment targets, hence the same Job
names: creation stays create-or-get and idempotent like every other worker Job. A segment is
an ordinary :class:`Target` (``<variant>s<k>``, e.g. ``720ps3``) whose worker gets
``--segment k/N --segment-seconds S``, so progress, failures and retries follow the rules of
the other targets; its weight is its share of the rendition's. It also gets the probe's
facts (``--source-info``, from the plan recorded when the upload was probed): a segment worker
then runs no ffprobe of its own, which with its interpreter start was most of the fixed cost
that N segment Jobs pay N times (bench/segments.py).

The join (:func:`join_rendition`) concatenates the segments' partial playlists into the
rendition's ``video.m3u8`` through storage: text only, cheap enough for the operator, and
repeatable (the partial playlists stay), so an operator killed mid-join simply joins again.
A rendition is joined as soon as its own segments have all succeeded (:func:`to_join`), not
when the whole job has: it is then listed in the master playlist (playable early), and the
top rendition's join starts the MP4.

The MP4 of a segmented job is not a second whole encode (that would be the critical path):
its target becomes a remux of the joined top rendition (``--from-rendition``, stream copy,
seconds of work), and its Job is created only once that rendition is joined
(:func:`startable`); the same bits as the ``single`` strategy's tee of the top rendition.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import replace

from atproto_video.core.config import KubeSettings
from atproto_video.core.details import Outcome, Renditions, RenditionStatus, SourceSummary
from atproto_video.core.storage import Storage
from atproto_video.transcoder import encoding
from atproto_video.transcoder.contract import TARGET_MP4, Target
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


SOURCE_INFO_FLAG = "--source-info"


def source_facts(source: SourceSummary | None) -> str | None:
    """The recorded probe result as the one-line JSON a segment worker takes, or None (a job
    planned before it was recorded: its workers probe for themselves)."""
    if source is None or source.probe is None:
        return None
    return json.dumps(dict(source.probe), separators=(",", ":"), sort_keys=True)


def segment_target(target: Target, segment: Segment, length_s: int,
                   facts: str | None = None) -> Target:
    """One segment of a rendition target, as its own worker Job."""
    share = (segment.length_s or length_s) / (length_s * segment.count)
    args: tuple[str, ...] = ("--segment", segment.name, "--segment-seconds", str(length_s))
    if facts is not None:
        args += (SOURCE_INFO_FLAG, facts)
    return replace(target, name=f"{target.name}s{segment.index}", weight=target.weight * share,
                   args=args)


#: A remux moves bytes, it encodes nothing: its share of overall progress (measured: about
#: 1% of the top rendition's encode time, see bench/segments.py).
REMUX_WEIGHT = 0.02
REMUX_FLAG = "--from-rendition"


def remux_target(target: Target, rendition: str) -> Target:
    """The MP4 target made by remuxing the joined ``rendition`` instead of encoding."""
    return replace(target, weight=target.weight * REMUX_WEIGHT, args=(REMUX_FLAG, rendition))


def remux_source(target: Target) -> str | None:
    """The rendition a remux target reads, or None for any other target."""
    if REMUX_FLAG not in target.args:
        return None
    return target.args[target.args.index(REMUX_FLAG) + 1]


def expand(targets: Sequence[Target], rendition_names: Sequence[str],
           segments: Sequence[Segment], facts: str | None = None) -> list[Target]:
    """``targets`` with each rendition replaced by its segments (given the probe's ``facts``,
    see :func:`source_facts`) and the MP4 made a remux of the top (first) rendition;
    unchanged for one segment."""
    if len(segments) <= 1:
        return list(targets)
    length = segments[0].length_s or 0
    top = next(t.name for t in targets if t.name in rendition_names)
    out: list[Target] = []
    for target in targets:
        if target.name in rendition_names:
            out += [segment_target(target, s, length, facts) for s in segments]
        elif target.name == TARGET_MP4:
            out.append(remux_target(target, top))
        else:
            out.append(target)
    return out


def _succeeded(renditions: Renditions, name: str) -> bool:
    return (renditions.get(name) or RenditionStatus()).outcome is Outcome.SUCCEEDED


def to_join(rendition_names: Sequence[str], segments: Sequence[Segment],
            renditions: Renditions, joined: Collection[str]) -> list[str]:
    """The renditions to join now: every segment succeeded, not joined yet (by this process:
    after a restart they are joined again, which rewrites the same playlist)."""
    if len(segments) <= 1:
        return []
    return [name for name in rendition_names if name not in joined
            and all(_succeeded(renditions, f"{name}s{s.index}") for s in segments)]


def startable(targets: Sequence[Target], joined: Collection[str]) -> list[Target]:
    """The targets whose Job may exist now: a remux waits for its rendition's join."""
    return [t for t in targets if (source := remux_source(t)) is None or source in joined]


def complete(rendition_names: Sequence[str], renditions: Renditions,
             joined: Collection[str]) -> tuple[str, ...]:
    """The renditions a master playlist may list: a whole encode succeeded, or joined."""
    return tuple(name for name in rendition_names
                 if name in joined or _succeeded(renditions, name))


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
