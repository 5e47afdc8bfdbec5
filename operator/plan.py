"""The ladder decision for one upload: probe once, keep the result as a small plain record.

The API makes it right after the upload is committed (:func:`plan_upload`, in cluster mode),
so the operator can create the worker Jobs the moment a VideoJob appears: ffprobe costs about
0.1 s of CPU per call (Debian's build loads some 200 shared libraries), which on a burst of
uploads would otherwise serialise in the operator before any Job exists. The operator still
probes itself when a job carries no plan (a VideoJob written by hand, or a job planned by an
older API).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from atproto_video.jobs import Job, JobStore
from atproto_video.ladder import RUNG_NAMES, Variant, plan_ladder
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import plan_for
from atproto_video.transcoder.probe import SourceInfo, probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What the probe decided, enough to rebuild the ladder without probing again."""

    width: int
    height: int
    fps: str
    has_audio: bool
    renditions: tuple[str, ...]

    def variants(self) -> list[Variant]:
        ladder = plan_ladder(self.width, self.height, Fraction(self.fps))
        return [v for v in ladder if v.name in self.renditions]

    def to_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "fps": self.fps,
                "hasAudio": self.has_audio, "renditions": list(self.renditions)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Plan | None:
        if not data or not data.get("renditions"):
            return None
        try:
            return cls(int(data["width"]), int(data["height"]), str(data["fps"]),
                       bool(data["hasAudio"]), tuple(str(r) for r in data["renditions"]))
        except (KeyError, TypeError, ValueError):
            return None


def choose_variants(ladder: list[Variant], wanted: list[str] | None) -> list[Variant]:
    """The ladder limited to the rungs the VideoJob asks for (all when it names none that fit)."""
    names = set(wanted or RUNG_NAMES)
    return [v for v in ladder if v.rung in names] or ladder


def plan_source(
    source: Path, limits: TranscodeLimits, wanted: list[str] | None = None
) -> tuple[Plan, SourceInfo]:
    """Probe ``source`` and fix its ladder; raises ``ValidationFailure`` for a non-video."""
    info = probe(source, limits)
    chosen = choose_variants(plan_for(info, limits), wanted)
    plan = Plan(info.width, info.height, str(info.output_fps(limits.max_fps)),
                info.has_audio, tuple(v.name for v in chosen))
    return plan, info


def plan_details(details: Mapping[str, Any] | None, plan: Plan, info: SourceInfo) -> dict[str, Any]:
    """The job's ``details`` with the plan recorded (where the operator looks for it)."""
    return {
        **(details or {}),
        "source": {"width": info.width, "height": info.height,
                   "duration_s": info.duration_s, "has_audio": info.has_audio},
        "plan": plan.to_dict(),
        "strategy": "kubernetes",
    }


def plan_job(
    store: JobStore, job: Job, source: Path, limits: TranscodeLimits,
    wanted: list[str] | None = None,
) -> Plan:
    """Probe ``source`` and record the plan in the job row (blocking: call from a thread).

    The one path for the API, the operator's fallback and the benchmark; raises
    ``ValidationFailure`` for a non-video and leaves the row untouched then.
    """
    plan, info = plan_source(source, limits, wanted)
    store.update_fields(job.id, details=plan_details(job.details, plan, info))
    log.info("planned job", extra={"job_id": job.id, "did": job.did,
                                   "renditions": ",".join(plan.renditions)})
    return plan
