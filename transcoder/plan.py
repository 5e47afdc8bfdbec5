"""The ladder decision for one upload: probe once, record the plan in the job's details.

The API makes it right after the upload is committed (cluster mode), so the operator can
create the worker Jobs the moment a VideoJob appears: ffprobe costs about 0.1 s of CPU per call
(Debian's build loads some 200 shared libraries), which on a burst of uploads would otherwise
serialise in the operator before any Job exists. The operator still probes itself when a job
carries no plan (a VideoJob written by hand, or a job planned by an older API).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from atproto_video.core.details import JobDetails, Plan, SourceSummary
from atproto_video.core.jobs import Job, JobStore
from atproto_video.core.ladder import RUNG_NAMES, Variant
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.pipeline import ladder_for
from atproto_video.transcoder.probe import SourceInfo, probe

log = logging.getLogger(__name__)

#: The strategy recorded for jobs run as one Kubernetes Job per target.
CLUSTER_STRATEGY = "kubernetes"


def choose_variants(ladder: list[Variant], wanted: list[str] | None) -> list[Variant]:
    """The ladder limited to the rungs the VideoJob asks for (all when it names none that fit)."""
    names = set(wanted or RUNG_NAMES)
    return [v for v in ladder if v.rung in names] or ladder


def summary(info: SourceInfo) -> SourceSummary:
    return SourceSummary.from_probe(info.to_json())


def probe_plan(
    source: Path, limits: TranscodeLimits, wanted: list[str] | None = None
) -> tuple[Plan, SourceInfo]:
    """Probe ``source`` and fix its ladder; raises ``ValidationFailure`` for a non-video."""
    info = probe(source, limits)
    chosen = choose_variants(ladder_for(info, limits), wanted)
    plan = Plan(info.width, info.height, str(info.output_fps(limits.max_fps)),
                info.has_audio, tuple(v.name for v in chosen))
    return plan, info


def with_plan(details: JobDetails, plan: Plan, info: SourceInfo) -> JobDetails:
    """The job's details with the plan recorded (where the operator looks for it)."""
    return replace(details, source=summary(info), plan=plan, strategy=CLUSTER_STRATEGY)


def plan_job(
    store: JobStore, job: Job, source: Path, limits: TranscodeLimits,
    wanted: list[str] | None = None,
) -> Plan:
    """Probe ``source`` and record the plan in the job row (blocking: call from a thread).

    The one path for the API, the operator's fallback and the benchmark; raises
    ``ValidationFailure`` for a non-video and leaves the row untouched then.
    """
    plan, info = probe_plan(source, limits, wanted)
    store.update_details(job.id, lambda details: with_plan(details, plan, info))
    log.info("planned job", extra={"job_id": job.id, "did": job.did,
                                   "renditions": ",".join(plan.renditions)})
    return plan
