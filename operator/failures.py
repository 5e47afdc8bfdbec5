"""Naming why a worker Job failed, from the Job and Pod status the API server reports.

The user sees ``failureCode`` and ``error``; SREs see the ``reason`` in the VideoJob's
``Failed`` condition. Exit 10 of ``atproto-video transcode`` is validation_failure, any other
failure of the transcoder is encoding_failure, and failures of the platform (image missing,
eviction, deadline) are generic_failure.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atproto_video.core.details import Outcome, Reason
from atproto_video.core.lexicon import FailureCode
from atproto_video.operator.templates import CONTAINER
from atproto_video.transcoder.contract import EXIT_ENCODING, EXIT_VALIDATION

#: Waiting reasons that never resolve by themselves.
FATAL_WAITING = ("ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError")
#: Waiting reasons that might resolve (a registry blip): fatal after a grace period.
SLOW_WAITING = ("ErrImagePull", "ImagePullBackOff", "CreateContainerError")
PULL_GRACE_S = 120.0

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Failure:
    code: FailureCode
    #: A :class:`Reason`, or the reason Kubernetes gave when it is not one of ours.
    reason: str
    message: str


def job_outcome(job: Obj) -> Outcome | None:
    """SUCCEEDED, FAILED, or None while the Job is still running."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return Outcome.SUCCEEDED
        if cond.get("type") in ("Failed", "FailureTarget"):
            return Outcome.FAILED
    return None


def _failed_condition(job: Obj) -> Obj:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Failed", "FailureTarget") and cond.get("status") == "True":
            return dict(cond)
    return {}


def termination_json(message: str | None) -> dict[str, str] | None:
    """The transcoder's ``{"failureCode", "error"}`` line from a termination message.

    With ``FallbackToLogsOnError`` the message may be the log tail, so the last JSON line with
    both keys wins.
    """
    for line in reversed((message or "").strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            code = data.get("failureCode")
            return {"failureCode": code if isinstance(code, str) else "", "error": data["error"]}
    return None


def _container(pod: Obj) -> Obj:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return dict(status)
    return {}


def _terminated(pod: Obj) -> Obj:
    status = _container(pod)
    return dict((status.get("state") or {}).get("terminated") or (
        status.get("lastState") or {}).get("terminated") or {})


def _created(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def parse_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def pod_failure(pod: Obj, *, target: str, memory_limit: str) -> Failure | None:
    """Why one finished pod failed, or None if it did not."""
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        detail = status.get("message") or "no details"
        return Failure(FailureCode.GENERIC, Reason.EVICTED,
                       f"{target}: the worker pod was evicted: {detail}")
    term = _terminated(pod)
    if not term:
        return None
    exit_code = int(term.get("exitCode") or 0)
    reason = str(term.get("reason") or "")
    if exit_code == 0 and reason != "OOMKilled":
        return None
    if reason == "OOMKilled":
        return Failure(FailureCode.ENCODING, Reason.OOM_KILLED,
                       f"{target}: the worker ran out of memory (limit {memory_limit})")
    parsed = termination_json(term.get("message"))
    if exit_code == EXIT_VALIDATION:
        error = parsed["error"] if parsed else "the video was rejected"
        return Failure(FailureCode.VALIDATION, Reason.VALIDATION_FAILED, error)
    if parsed:
        code = FailureCode.ENCODING
        if parsed["failureCode"] == FailureCode.VALIDATION.value:
            code = FailureCode.VALIDATION
        name = (Reason.VALIDATION_FAILED if code is FailureCode.VALIDATION
                else Reason.ENCODING_FAILED)
        return Failure(code, name, f"{target}: {parsed['error']}")
    if exit_code == EXIT_ENCODING:
        return Failure(FailureCode.ENCODING, Reason.ENCODING_FAILED, f"{target}: encoding failed")
    detail = " ".join(str(term.get("message") or "").split())[-300:]
    text = f"{target}: the worker exited with code {exit_code}" + (f": {detail}" if detail else "")
    if exit_code >= 128:
        text = f"{target}: the worker was killed by signal {exit_code - 128}"
    return Failure(FailureCode.ENCODING, reason or Reason.WORKER_ERROR, text)


def failed_job(job: Obj, pods: Sequence[Obj], *, target: str, memory_limit: str) -> Failure:
    """Why a Job with a Failed condition failed: the Job's reason, refined by its last pod."""
    cond = _failed_condition(job)
    reason = str(cond.get("reason") or "Failed")
    if reason == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return Failure(FailureCode.GENERIC, Reason.DEADLINE_EXCEEDED,
                       f"{target}: the worker did not finish within {deadline} s")
    for pod in sorted(pods, key=_created, reverse=True):
        failure = pod_failure(pod, target=target, memory_limit=memory_limit)
        if failure is not None:
            return failure
    message = str(cond.get("message") or "the worker Job failed")
    return Failure(FailureCode.GENERIC, reason, f"{target}: {message}")


#: A container still creating (volume mounts, sandbox) or a pod the scheduler cannot place.
NOT_STARTED_WAITING = ("ContainerCreating", "PodInitializing")


def stuck_pod(
    pods: Sequence[Obj], *, target: str, image: str, now: dt.datetime,
    start_timeout_s: float = 600.0,
) -> Failure | None:
    """A pod that can never start (image missing) is a failure now, not at the deadline; one
    that has not started within ``start_timeout_s`` (Unschedulable, a volume that never
    mounts) is a failure then, named after what Kubernetes reported."""
    for pod in pods:
        created = parse_time(_created(pod))
        age = (now - created).total_seconds() if created is not None else 0.0
        unscheduled = _unschedulable(pod)
        if unscheduled is not None and age > start_timeout_s:
            return Failure(
                FailureCode.GENERIC, "Unschedulable",
                f"{target}: the worker could not be scheduled for {int(age)} s: {unscheduled}")
        waiting_reason = str(((_container(pod).get("state") or {}).get("waiting") or {})
                             .get("reason") or "")
        if waiting_reason in NOT_STARTED_WAITING and age > start_timeout_s:
            return Failure(
                FailureCode.GENERIC, waiting_reason,
                f"{target}: the worker's container did not start within {int(age)} s "
                f"({waiting_reason}: a volume that cannot mount, or the node's runtime); "
                "see kubectl describe pod")
        waiting = (_container(pod).get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        fatal = reason in FATAL_WAITING
        if reason in SLOW_WAITING:
            created = parse_time(_created(pod))
            fatal = created is not None and (now - created).total_seconds() > PULL_GRACE_S
        if fatal:
            detail = " ".join(str(waiting.get("message") or "").split())[:300]
            return Failure(
                FailureCode.GENERIC,
                reason,
                f"{target}: the worker cannot start ({reason}) with image {image}"
                + (f": {detail}" if detail else ""),
            )
    return None


REASON_FOR_CODE = {
    FailureCode.VALIDATION.value: Reason.VALIDATION_FAILED,
    FailureCode.ENCODING.value: Reason.ENCODING_FAILED,
    FailureCode.PDS_UPLOAD.value: Reason.PDS_UPLOAD_FAILED,
    FailureCode.PDS_UPLOAD_SIZE.value: Reason.PDS_UPLOAD_FAILED,
    FailureCode.GENERIC.value: Reason.GENERIC_FAILURE,
}


def _unschedulable(pod: Obj) -> str | None:
    """The scheduler's message for a pod it cannot place, or None."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"):
            return " ".join(str(cond.get("message") or "unschedulable").split())[:300]
    return None
