"""The worker contract: what ``atproto-video transcode`` is asked to make and how it answers.

The in-process pipeline and the operator both read it from here: the targets of one job, the
variant the MP4 and thumbnail are made from, how much each target weighs in overall progress,
and the exit codes that tell the operator whether retrying could help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from atproto_video.core.ladder import RUNG_NAMES, Variant
from atproto_video.core.lexicon import FailureCode

EXIT_OK = 0
EXIT_USAGE = 2
#: validation_failure: the input is not an acceptable video; retrying cannot help.
EXIT_VALIDATION = 10
#: encoding_failure: ffmpeg failed or timed out.
EXIT_ENCODING = 11
EXIT_FOR_FAILURE: Mapping[str, int] = {
    FailureCode.VALIDATION.value: EXIT_VALIDATION,
    FailureCode.ENCODING.value: EXIT_ENCODING,
}

TARGET_THUMBNAIL = "thumbnail"
TARGET_MP4 = "mp4"
TARGET_MASTER = "master"
#: Targets a caller may ask for; variant names of small sources (e.g. "240p") work too.
TARGETS: tuple[str, ...] = (*RUNG_NAMES, TARGET_THUMBNAIL, TARGET_MP4)
#: The thumbnail is one frame: nearly free next to a rendition.
THUMBNAIL_WEIGHT = 0.02


@dataclass(frozen=True)
class Target:
    """One unit of worker work: ``name`` keys the status and the Job name; ``cli`` is what
    ``atproto-video transcode --target`` gets (a ladder rung, "thumbnail" or "mp4")."""

    name: str
    cli: str
    weight: float
    #: More worker arguments (a segment of a rendition: ``--segment K/N ...``).
    args: tuple[str, ...] = ()


def reference_variant(plan: Sequence[Variant]) -> Variant:
    """The variant the MP4 and the thumbnail are made from: the top rendition (at most 1080p)."""
    if not plan:
        raise ValueError("a plan needs at least one rendition")
    return plan[0]


def targets_for(plan: Sequence[Variant]) -> list[Target]:
    """One target per rendition, then the MP4 and the thumbnail; weights are encoded pixels."""
    top = reference_variant(plan)
    pixels = float(top.width * top.height)
    targets = [Target(v.name, v.rung, float(v.width * v.height)) for v in plan]
    targets.append(Target(TARGET_MP4, TARGET_MP4, pixels))
    targets.append(Target(TARGET_THUMBNAIL, TARGET_THUMBNAIL, THUMBNAIL_WEIGHT * pixels))
    return targets


def aggregate(targets: Sequence[Target], progress: Mapping[str, int]) -> int:
    """Weighted overall percentage; 100 only when every target is at 100."""
    total = sum(t.weight for t in targets)
    if total <= 0:
        return 0
    if all(progress.get(t.name, 0) >= 100 for t in targets):
        return 100
    done = sum(t.weight * max(0, min(100, progress.get(t.name, 0))) for t in targets) / total
    return min(99, int(done))
