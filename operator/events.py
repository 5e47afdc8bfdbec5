"""Kubernetes events on a VideoJob, for ``kubectl describe vj``: one per state change and one
(Warning) naming the failure reason. Derived from the old and the new status only, so a
restarted operator or a repeated tick posts nothing twice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atproto_video.core.lexicon import JobState
from atproto_video.operator.status import condition


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def events_for(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Event]:
    """What happened between two statuses of one VideoJob."""
    before, after = old.get("state"), new.get("state")
    if after is None or before == after:
        return []
    if after == JobState.FAILED:
        failed = condition(new.get("conditions") or [], "Failed") or {}
        reason = str(failed.get("reason") or "Failed")
        detail = new.get("error") or failed.get("message") or "failed"
        code = new.get("failureCode")
        return [Event("Warning", reason, f"{code}: {detail}" if code else str(detail))]
    name = JobState(after).name.title()
    if after == JobState.COMPLETED:
        return [Event("Normal", name, f"blob {new['cid']}" if new.get("cid") else "completed")]
    return [Event("Normal", name, f"{before or 'new'} -> {after}")]
