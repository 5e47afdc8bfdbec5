"""Events on a VideoJob: one per state change, a Warning naming the failure reason."""

from __future__ import annotations

from atproto_video.operator.events import Event, events_for


def test_state_changes_make_one_event_each() -> None:
    assert events_for({}, {"state": "JOB_STATE_CREATED"}) == [
        Event("Normal", "Created", "new -> JOB_STATE_CREATED")]
    assert events_for({"state": "JOB_STATE_CREATED"}, {"state": "JOB_STATE_ENCODING"}) == [
        Event("Normal", "Encoding", "JOB_STATE_CREATED -> JOB_STATE_ENCODING")]
    assert events_for({"state": "JOB_STATE_ENCODING", "progress": 10},
                      {"state": "JOB_STATE_ENCODING", "progress": 50}) == []
    assert events_for({"state": "JOB_STATE_UPLOADED"},
                      {"state": "JOB_STATE_COMPLETED", "cid": "bafkrei123"}) == [
        Event("Normal", "Completed", "blob bafkrei123")]


def test_a_failure_is_a_warning_with_its_reason() -> None:
    new = {"state": "JOB_STATE_FAILED", "failureCode": "encoding_failure",
           "error": "the worker was killed: out of memory",
           "conditions": [{"type": "Failed", "status": "True", "reason": "OOMKilled",
                           "message": "x"}]}
    assert events_for({"state": "JOB_STATE_ENCODING"}, new) == [
        Event("Warning", "OOMKilled", "encoding_failure: the worker was killed: out of memory")]
    assert events_for(new, new) == [], "a repeated tick posts nothing twice"
