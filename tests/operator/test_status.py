"""The VideoJob status mirror: conditions and per-rendition progress rules."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from atproto_video.core.details import JobDetails, Outcome, Plan, RenditionStatus
from atproto_video.core.jobs import Job
from atproto_video.core.lexicon import JobState
from atproto_video.operator.status import condition, mirror, set_condition, timestamp

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=1)


def make_job(state: JobState, **kw: Any) -> Job:
    base = Job(id="j" * 40, did="did:plc:abc", state=state, progress=0, failure_code=None,
               error=None, message=None, source_size=1, content_hash="h", mime_type=None,
               cid=None, blob=None, executor="kubernetes", attempts=1, details=JobDetails(),
               pds_url=None, upload_token=None, token_expires_at=None, created_at=T0,
               updated_at=T0)
    return replace(base, **kw)


def test_set_condition_keeps_transition_time_while_unchanged() -> None:
    conds = set_condition([], "Encoded", "False", "Encoding", "m", generation=1, now=T0)
    conds = set_condition(conds, "Encoded", "False", "Encoding", "m2", generation=2, now=T1)
    (c,) = conds
    assert c["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert (c["message"], c["observedGeneration"]) == ("m2", 2)
    conds = set_condition(conds, "Encoded", "True", "Done", "m", generation=2, now=T1)
    assert conds[0]["lastTransitionTime"] == "2026-01-01T12:01:00Z"
    with pytest.raises(ValueError):
        set_condition(conds, "Bogus", "True", "r", "m", generation=1, now=T0)


def test_mirror_completed_and_failed() -> None:
    plan = Plan(1280, 720, "30", True, ("720p", "480p"))
    completed_job = make_job(JobState.COMPLETED, progress=100, cid="bafkreiabc")
    done_job_created = completed_job.created_at
    done = mirror(completed_job, previous={},
                  generation=1, now=T0, plan=plan,
                  renditions={"720p": RenditionStatus(100, Outcome.SUCCEEDED)})
    assert done["state"] == "JOB_STATE_COMPLETED" and done["progress"] == 100
    assert done["plan"]["renditions"] == ["720p", "480p"]
    assert done["renditions"] == {"720p": {"progress": 100, "outcome": "Succeeded"}}
    assert done["cid"] == "bafkreiabc"
    assert [c["type"] for c in done["conditions"]] == ["Planned", "Encoded", "Completed",
                                                        "Failed", "Ready"]
    completed = condition(done["conditions"], "Completed")
    assert completed is not None and completed["status"] == "True"
    ready = condition(done["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "Completed")
    assert done["targetsDone"] == "1/4" and "failureReason" not in done
    assert done["completionTime"] == "2026-01-01T12:00:00Z"
    assert done["startTime"] == timestamp(done_job_created)
    failed = mirror(make_job(JobState.FAILED, failure_code="generic_failure", error="boom"),
                    previous=done, generation=1, now=T1, failure_reason="ErrImageNeverPull")
    cond = condition(failed["conditions"], "Failed")
    assert cond is not None
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True", "ErrImageNeverPull", "boom")
    assert failed["failureCode"] == "generic_failure" and failed["error"] == "boom"
    assert failed["failureReason"] == "ErrImageNeverPull"
    ready = condition(failed["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == (
        "False", "ErrImageNeverPull")
    assert failed["completionTime"] == done["completionTime"], "set once, then kept"
    running = mirror(make_job(JobState.ENCODING, progress=40), previous={}, generation=1,
                     now=T0, plan=plan)
    assert running["targetsDone"] == "0/4" and "completionTime" not in running
    ready = condition(running["conditions"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "Encoding")
    # Later mirrors keep the named reason even without a fresh failure.
    again = mirror(make_job(JobState.FAILED, failure_code="generic_failure", error="boom"),
                   previous=failed, generation=1, now=T1)
    cond = condition(again["conditions"], "Failed")
    assert cond is not None and cond["reason"] == "ErrImageNeverPull"


def test_a_failure_reason_recorded_in_the_details_names_the_condition() -> None:
    job = make_job(JobState.FAILED, failure_code="encoding_failure", error="oom",
                   details=JobDetails(failure_reason="OOMKilled"))
    cond = condition(mirror(job, previous={}, generation=1, now=T0)["conditions"], "Failed")
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "OOMKilled")
    bare = make_job(JobState.FAILED, failure_code="encoding_failure", error="x")
    cond = condition(mirror(bare, previous={}, generation=1, now=T0)["conditions"], "Failed")
    assert cond is not None and cond["reason"] == "EncodingFailed"
