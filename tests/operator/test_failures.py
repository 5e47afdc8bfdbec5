"""Naming failures from Job and Pod status as the API server reports them."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from atproto_video.core.lexicon import FailureCode
from atproto_video.operator.failures import (
    failed_job,
    job_outcome,
    pod_failure,
    stuck_pod,
    termination_json,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def job(cond_type: str | None, reason: str = "", deadline: int = 60) -> dict[str, Any]:
    conds = [{"type": cond_type, "status": "True", "reason": reason, "message": "m"}] if (
        cond_type) else []
    return {"spec": {"activeDeadlineSeconds": deadline}, "status": {"conditions": conds}}


def pod(*, exit_code: int | None = None, reason: str = "Error", message: str = "",
        waiting: str | None = None, created: str = "2026-01-01T11:59:00Z",
        status_reason: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if exit_code is not None:
        state["terminated"] = {"exitCode": exit_code, "reason": reason, "message": message}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": "details here"}
    status: dict[str, Any] = {"containerStatuses": [{"name": "transcode", "state": state}]}
    if status_reason:
        status.update(reason=status_reason, message="The node was low on resource: memory.")
    return {"metadata": {"creationTimestamp": created}, "status": status}


def test_job_outcome() -> None:
    assert job_outcome(job(None)) is None
    assert job_outcome(job("Complete")) == "Succeeded"
    assert job_outcome(job("SuccessCriteriaMet")) == "Succeeded"
    assert job_outcome(job("Failed", "BackoffLimitExceeded")) == "Failed"
    assert job_outcome(job("FailureTarget", "PodFailurePolicy")) == "Failed"
    assert job_outcome({"status": {"conditions": [{"type": "Failed", "status": "False"}]}}) is None


def test_termination_json_takes_the_last_json_line() -> None:
    line = json.dumps({"failureCode": "encoding_failure", "error": "ffmpeg failed"})
    assert termination_json(f"log line\n{{broken\n{line}\n") == {
        "failureCode": "encoding_failure", "error": "ffmpeg failed"}
    assert termination_json("no json here") is None
    assert termination_json(None) is None


def test_exit_codes() -> None:
    msg = json.dumps({"failureCode": "validation_failure", "error": "not a video"})
    f = pod_failure(pod(exit_code=10, message=msg), target="720p", memory_limit="2Gi")
    assert f is not None and (f.code, f.reason, f.message) == (
        FailureCode.VALIDATION, "ValidationFailed", "not a video")
    msg = json.dumps({"failureCode": "encoding_failure", "error": "ffmpeg failed: x"})
    f = pod_failure(pod(exit_code=11, message=msg), target="720p", memory_limit="2Gi")
    assert f is not None and f.code is FailureCode.ENCODING
    assert f.message == "720p: ffmpeg failed: x"
    f = pod_failure(pod(exit_code=3, message="Traceback...\nBoom"), target="mp4",
                    memory_limit="2Gi")
    assert f is not None and f.code is FailureCode.ENCODING and "code 3" in f.message
    f = pod_failure(pod(exit_code=137), target="mp4", memory_limit="2Gi")
    assert f is not None and "signal 9" in f.message
    assert pod_failure(pod(exit_code=0, reason="Completed"), target="mp4",
                       memory_limit="2Gi") is None
    assert pod_failure(pod(), target="mp4", memory_limit="2Gi") is None


def test_oom_and_eviction() -> None:
    f = pod_failure(pod(exit_code=137, reason="OOMKilled"), target="1080p", memory_limit="2Gi")
    assert f is not None and (f.code, f.reason) == (FailureCode.ENCODING, "OOMKilled")
    assert "2Gi" in f.message
    f = pod_failure(pod(status_reason="Evicted"), target="480p", memory_limit="2Gi")
    assert f is not None and (f.code, f.reason) == (FailureCode.GENERIC, "Evicted")
    assert "low on resource" in f.message


def test_failed_job_uses_the_latest_pod_and_the_deadline() -> None:
    older = pod(exit_code=137, created="2026-01-01T11:00:00Z")
    newer = pod(exit_code=137, reason="OOMKilled", created="2026-01-01T11:30:00Z")
    f = failed_job(job("Failed", "BackoffLimitExceeded"), [older, newer], target="720p",
                   memory_limit="1Gi")
    assert f.reason == "OOMKilled"
    f = failed_job(job("Failed", "DeadlineExceeded", deadline=42), [older], target="720p",
                   memory_limit="1Gi")
    assert (f.code, f.reason) == (FailureCode.GENERIC, "DeadlineExceeded")
    assert "42 s" in f.message
    f = failed_job(job("Failed", "BackoffLimitExceeded"), [], target="720p", memory_limit="1Gi")
    assert (f.code, f.reason) == (FailureCode.GENERIC, "BackoffLimitExceeded")


def test_stuck_pods() -> None:
    never = pod(waiting="ErrImageNeverPull", created="2026-01-01T11:59:59Z")
    f = stuck_pod([never], target="720p", image="localhost/w:1", now=NOW)
    assert f is not None and (f.code, f.reason) == (FailureCode.GENERIC, "ErrImageNeverPull")
    assert "localhost/w:1" in f.message
    young = pod(waiting="ImagePullBackOff", created="2026-01-01T11:59:30Z")
    assert stuck_pod([young], target="720p", image="i", now=NOW) is None
    old = pod(waiting="ImagePullBackOff", created="2026-01-01T11:50:00Z")
    f = stuck_pod([old], target="720p", image="i", now=NOW)
    assert f is not None and f.reason == "ImagePullBackOff"
    assert stuck_pod([pod(waiting="ContainerCreating")], target="720p", image="i",
                     now=NOW) is None


def test_pods_that_never_start_fail_after_the_start_timeout() -> None:
    unschedulable = pod(created="2026-01-01T11:49:00Z")
    unschedulable["status"]["conditions"] = [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient cpu."}]
    f = stuck_pod([unschedulable], target="720p", image="i", now=NOW, start_timeout_s=600)
    assert f is not None and (f.code, f.reason) == (FailureCode.GENERIC, "Unschedulable")
    assert "3 Insufficient cpu" in f.message and "660 s" in f.message
    assert stuck_pod([unschedulable], target="720p", image="i", now=NOW,
                     start_timeout_s=900) is None, "not before the timeout"
    mounting = pod(waiting="ContainerCreating", created="2026-01-01T11:49:00Z")
    f = stuck_pod([mounting], target="480p", image="i", now=NOW, start_timeout_s=600)
    assert f is not None and f.reason == "ContainerCreating" and "480p" in f.message
