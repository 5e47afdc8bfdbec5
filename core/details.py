"""The typed vocabulary of a job's ``details``: plan, per-rendition status, outcome, reasons.

The same shape in embedded and cluster mode. The row's ``details`` column holds
:meth:`JobDetails.to_json`; :class:`~atproto_video.core.jobs.JobStore` updates it with
:meth:`~atproto_video.core.jobs.JobStore.update_details` (read and write under one row lock),
so concurrent writers never lose each other's changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fractions import Fraction
from typing import Any

from atproto_video.core.ladder import Variant, build_ladder


class Outcome(StrEnum):
    """Where one target (rendition, MP4, thumbnail) stands."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Reason(StrEnum):
    """Reasons in VideoJob conditions and failures. Kubernetes may report others (a container
    ``reason`` we do not know): those pass through as text."""

    # Planned
    PROBED = "Probed"
    PROBING = "Probing"
    NOT_PLANNED = "NotPlanned"
    # Encoded
    ALL_TARGETS_SUCCEEDED = "AllTargetsSucceeded"
    ENCODING = "Encoding"
    FAILED = "Failed"
    # Completed
    COMPLETED = "Completed"
    # Failed
    NO_FAILURE = "NoFailure"
    VALIDATION_FAILED = "ValidationFailed"
    ENCODING_FAILED = "EncodingFailed"
    PDS_UPLOAD_FAILED = "PdsUploadFailed"
    GENERIC_FAILURE = "GenericFailure"
    OOM_KILLED = "OOMKilled"
    EVICTED = "Evicted"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    TIMEOUT = "Timeout"
    SOURCE_MISSING = "SourceMissing"
    INVALID_SOURCE = "InvalidSource"
    WORKER_ERROR = "Error"


@dataclass(frozen=True)
class SourceSummary:
    """The source as the plan saw it.

    Jobs planned now record the whole probe result (``SourceInfo.to_json``), which segment
    workers take so each need not run ffprobe again; the four figures are read from it
    (:meth:`from_probe`), so a row holds them once. Rows planned before the probe was recorded
    hold the four figures alone, and ``probe`` is None.
    """

    width: int
    height: int
    duration_s: float
    has_audio: bool
    probe: Mapping[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def from_probe(cls, probe: Mapping[str, Any]) -> SourceSummary:
        """Raises KeyError, TypeError or ValueError when ``probe`` lacks a figure."""
        return cls(int(probe["width"]), int(probe["height"]), float(probe["duration_s"]),
                   probe["audio_stream"] is not None, dict(probe))

    def to_json(self) -> dict[str, Any]:
        if self.probe is not None:
            return {"probe": dict(self.probe)}
        return {"width": self.width, "height": self.height, "duration_s": self.duration_s,
                "has_audio": self.has_audio}

    @classmethod
    def from_json(cls, data: Any) -> SourceSummary | None:
        if not isinstance(data, Mapping):
            return None
        try:
            probe = data.get("probe")
            if isinstance(probe, Mapping):
                return cls.from_probe(probe)
            return cls(int(data["width"]), int(data["height"]), float(data["duration_s"]),
                       bool(data["has_audio"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Plan:
    """What the probe decided, enough to rebuild the ladder without probing again."""

    width: int
    height: int
    fps: str
    has_audio: bool
    renditions: tuple[str, ...]

    def variants(self) -> list[Variant]:
        ladder = build_ladder(self.width, self.height, Fraction(self.fps))
        return [v for v in ladder if v.name in self.renditions]

    def to_json(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "fps": self.fps,
                "hasAudio": self.has_audio, "renditions": list(self.renditions)}

    @classmethod
    def from_json(cls, data: Any) -> Plan | None:
        if not isinstance(data, Mapping) or not data.get("renditions"):
            return None
        try:
            return cls(int(data["width"]), int(data["height"]), str(data["fps"]),
                       bool(data["hasAudio"]), tuple(str(r) for r in data["renditions"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class RenditionStatus:
    """One target's progress and outcome; ``job`` is its Kubernetes Job in cluster mode."""

    progress: int = 0
    outcome: Outcome = Outcome.PENDING
    job: str | None = None
    reason: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"progress": self.progress, "outcome": self.outcome.value}
        for key in ("job", "reason", "message"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, data: Any) -> RenditionStatus:
        if not isinstance(data, Mapping):
            return cls()
        try:
            outcome = Outcome(data.get("outcome") or Outcome.PENDING)
        except ValueError:
            outcome = Outcome.PENDING
        progress = data.get("progress")
        return cls(
            progress=max(0, min(100, int(progress))) if isinstance(progress, int | float) else 0,
            outcome=outcome,
            job=_text(data.get("job")),
            reason=_text(data.get("reason")),
            message=_text(data.get("message")),
        )

    def merged(self, later: RenditionStatus) -> RenditionStatus:
        """``later`` wins, except that progress never goes backwards (a retried pod's progress
        file restarts at 0; a status read can lag one write behind)."""
        out = replace(
            later,
            progress=max(self.progress, later.progress),
            job=later.job or self.job,
        )
        return replace(out, progress=100) if out.outcome is Outcome.SUCCEEDED else out


Renditions = dict[str, RenditionStatus]


def merge_renditions(*sources: Mapping[str, RenditionStatus] | None) -> Renditions:
    """Combine per-target records, later sources winning (see :meth:`RenditionStatus.merged`)."""
    out: Renditions = {}
    for source in sources:
        for name, rec in (source or {}).items():
            out[name] = out[name].merged(rec) if name in out else rec.merged(rec)
    return out


def renditions_from_json(data: Any) -> Renditions:
    if isinstance(data, list):  # rows written before the typed details: names of finished ones
        return {str(name): RenditionStatus(100, Outcome.SUCCEEDED) for name in data}
    if not isinstance(data, Mapping):
        return {}
    return {str(k): RenditionStatus.from_json(v) for k, v in data.items()}


def renditions_to_json(renditions: Mapping[str, RenditionStatus]) -> dict[str, Any]:
    return {k: v.to_json() for k, v in renditions.items()}


@dataclass(frozen=True)
class JobDetails:
    """Everything a job records besides its state: the same shape whichever executor ran it."""

    source: SourceSummary | None = None
    plan: Plan | None = None
    #: "single" or "per_rendition" (in-process), "kubernetes" (one Job per target).
    strategy: str | None = None
    renditions: Renditions = field(default_factory=dict)
    encode_seconds: float | None = None
    failure_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.source is not None:
            out["source"] = self.source.to_json()
        if self.plan is not None:
            out["plan"] = self.plan.to_json()
        if self.strategy is not None:
            out["strategy"] = self.strategy
        if self.renditions:
            out["renditions"] = renditions_to_json(self.renditions)
        if self.encode_seconds is not None:
            out["encode_seconds"] = self.encode_seconds
        if self.failure_reason is not None:
            out["failure"] = {"reason": self.failure_reason}
        return out

    @classmethod
    def from_json(cls, data: Any) -> JobDetails:
        if not isinstance(data, Mapping):
            return cls()
        seconds = data.get("encode_seconds")
        failure = data.get("failure")
        return cls(
            source=SourceSummary.from_json(data.get("source")),
            plan=Plan.from_json(data.get("plan")),
            strategy=_text(data.get("strategy")),
            renditions=renditions_from_json(data.get("renditions")),
            encode_seconds=float(seconds) if isinstance(seconds, int | float) else None,
            failure_reason=_text(failure.get("reason")) if isinstance(failure, Mapping) else None,
        )


def _text(value: Any) -> str | None:
    return str(value) if value is not None and value != "" else None
