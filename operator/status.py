"""The VideoJob status: a mirror of the database row plus per-rendition detail and conditions.

Pure functions, so the rules (conditions keep their transition time while unchanged, progress
never goes backwards) are unit-tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from atproto_video.core.details import (
    Outcome,
    Plan,
    Reason,
    RenditionStatus,
    renditions_to_json,
)
from atproto_video.core.jobs import Job
from atproto_video.core.lexicon import JobState
from atproto_video.operator.crd import CONDITIONS
from atproto_video.operator.failures import REASON_FOR_CODE


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set; ``lastTransitionTime`` moves only when status changes."""
    if type_ not in CONDITIONS:
        raise ValueError(f"undeclared condition type {type_!r}")
    reason = str(reason)  # a Reason member, or a reason Kubernetes reported
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != status
        out.append({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": timestamp(now) if changed else cond.get(
                "lastTransitionTime", timestamp(now)),
        })
    if not found:
        out.append({
            "type": type_, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": timestamp(now),
        })
    order = list(CONDITIONS)
    return sorted(out, key=lambda c: order.index(c["type"]) if c["type"] in order else 99)


def condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for cond in conditions:
        if cond.get("type") == type_:
            return cond
    return None


def mirror(
    job: Job,
    *,
    previous: Mapping[str, Any],
    generation: int,
    now: dt.datetime,
    plan: Plan | None = None,
    renditions: Mapping[str, RenditionStatus] | None = None,
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """The status to write: the database row's view, per-rendition detail and conditions."""
    conditions: list[dict[str, Any]] = [dict(c) for c in previous.get("conditions") or []]
    state = job.state
    planned = plan is not None or bool(previous.get("plan"))
    if planned:
        names = ", ".join(plan.renditions if plan else previous["plan"].get("renditions") or [])
        conditions = set_condition(conditions, "Planned", "True", Reason.PROBED,
                                   f"renditions {names} + mp4, thumbnail",
                                   generation=generation, now=now)
    elif state is JobState.FAILED:
        conditions = set_condition(conditions, "Planned", "False", Reason.NOT_PLANNED,
                                   "the job failed before a plan was made",
                                   generation=generation, now=now)
    else:
        conditions = set_condition(conditions, "Planned", "Unknown", Reason.PROBING,
                                   "waiting for the source to be probed",
                                   generation=generation, now=now)
    encoded = JobState.ENCODED in _reached(state)
    waiting = Reason.FAILED if state is JobState.FAILED else Reason.ENCODING
    conditions = set_condition(
        conditions, "Encoded", "True" if encoded else "False",
        Reason.ALL_TARGETS_SUCCEEDED if encoded else waiting,
        "every worker Job succeeded" if encoded else "not every worker Job has succeeded",
        generation=generation, now=now)
    done = state is JobState.COMPLETED
    conditions = set_condition(
        conditions, "Completed", "True" if done else "False",
        Reason.COMPLETED if done else state.name.title(),
        f"blob {job.cid}" if done and job.cid else f"state {state.value}",
        generation=generation, now=now)
    failed = state is JobState.FAILED
    reason = failure_reason or job.details.failure_reason or ""
    if failed and not reason:
        old = condition(previous.get("conditions") or [], "Failed")
        reason = str(old.get("reason")) if old and old.get("status") == "True" else ""
    conditions = set_condition(
        conditions, "Failed", "True" if failed else "False",
        (reason or REASON_FOR_CODE.get(job.failure_code or "", Reason.GENERIC_FAILURE))
        if failed else Reason.NO_FAILURE,
        (job.error or "failed") if failed else "no failure so far",
        generation=generation, now=now)
    if done:
        ready_reason = str(Reason.COMPLETED)
    elif failed:
        ready_reason = str((condition(conditions, "Failed") or {}).get("reason") or Reason.FAILED)
    else:
        ready_reason = str(Reason.PROBING if state is JobState.CREATED else Reason.ENCODING)
    conditions = set_condition(
        conditions, "Ready", "True" if done else "False", ready_reason,
        "the video is published" if done else (job.error or "failed") if failed
        else f"state {state.value}", generation=generation, now=now)
    status: dict[str, Any] = {
        "state": state.value,
        "progress": int(job.progress),
        "observedGeneration": generation,
        "conditions": conditions,
    }
    if failed:
        status["failureReason"] = ready_reason
    if plan is not None or previous.get("plan"):
        rungs = plan.renditions if plan else previous["plan"].get("renditions") or []
        planned_targets = len(rungs) + 2  # + mp4, thumbnail
        if renditions:
            succeeded = sum(r.outcome is Outcome.SUCCEEDED for r in renditions.values())
        else:
            succeeded = sum(r.get("outcome") == Outcome.SUCCEEDED.value
                            for r in (previous.get("renditions") or {}).values())
        status["targetsDone"] = f"{min(succeeded, planned_targets)}/{planned_targets}"
    status["startTime"] = previous.get("startTime") or timestamp(job.created_at)
    if state.terminal:
        status["completionTime"] = previous.get("completionTime") or timestamp(now)
    if job.failure_code:
        status["failureCode"] = job.failure_code
    if job.error:
        status["error"] = job.error
    if job.message:
        status["message"] = job.message
    if job.cid:
        status["cid"] = job.cid
    if plan is not None:
        status["plan"] = plan.to_json()
    if renditions:
        status["renditions"] = renditions_to_json(renditions)
    return status


def _reached(state: JobState) -> set[JobState]:
    """States at or before ``state`` in the lexicon order (FAILED reaches nothing)."""
    if state is JobState.FAILED:
        return set()
    order = list(JobState)
    return set(order[: order.index(state) + 1])
