"""The control loop: one VideoJob -> probe once -> one worker Job per target -> status back.

:class:`VideoJobReconciler.step` is called by a short kopf timer for every unfinished
VideoJob. It derives everything from the world (the database row, the Jobs and Pods, the
progress files), never from memory alone, so an operator killed at any point resumes where it
was: Job names are deterministic and creation is create-or-get, so no Job is ever duplicated.

:class:`VideoJobCreator` closes the other gap: a job committed while the Kubernetes API was
unreachable has no VideoJob; it creates the missing ones from the database periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from atproto_video.config import VideoConfig
from atproto_video.executor.delivery import deliver
from atproto_video.jobs import Job, JobStore, utcnow
from atproto_video.ladder import RUNG_NAMES, Variant, plan_ladder
from atproto_video.lexicon import FailureCode, JobState
from atproto_video.operator.crd import videojob_for
from atproto_video.operator.failures import Failure, failed_job, job_outcome, stuck_pod
from atproto_video.operator.kube import KubeAPI
from atproto_video.operator.progress import aggregate, read_progress, targets_for
from atproto_video.operator.status import merge_renditions, mirror
from atproto_video.operator.templates import (
    LABEL_TARGET,
    Target,
    job_manifest,
    job_name,
    progress_relpath,
    selector,
)
from atproto_video.storage import LocalStorage
from atproto_video.transcoder.errors import ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.master import write_master
from atproto_video.transcoder.pipeline import plan_for
from atproto_video.transcoder.probe import probe

log = logging.getLogger(__name__)

_BEFORE_ENCODED = (JobState.CREATED, JobState.ENCODING)


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


class VideoJobReconciler:
    def __init__(
        self,
        cfg: VideoConfig,
        store: JobStore,
        storage: LocalStorage,
        kube: KubeAPI,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self.kube = kube
        self.clock = clock
        self.limits = TranscodeLimits.from_config(cfg)
        # Highest per-target progress seen by this process: the body kopf hands a timer can
        # lag one patch behind, and a retried pod's progress file restarts at 0.
        self._seen: dict[str, dict[str, dict[str, Any]]] = {}
        self._attempted: set[str] = set()

    # -- the step ------------------------------------------------------------------------------

    async def step(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Advance one VideoJob as far as the world allows; returns its new status."""
        spec = body.get("spec") or {}
        meta = body.get("metadata") or {}
        previous: Mapping[str, Any] = body.get("status") or {}
        generation = int(meta.get("generation") or 1)
        job_id = str(spec.get("jobId") or "")
        job = await asyncio.to_thread(self.store.get, job_id) if job_id else None
        if job is None:
            return {
                "state": JobState.FAILED.value,
                "failureCode": FailureCode.GENERIC.value,
                "error": f"no job {job_id!r} in the database",
                "observedGeneration": generation,
            }
        extra = {"job_id": job.id, "did": job.did}
        plan = Plan.from_dict(previous.get("plan")) or Plan.from_dict(
            (job.details or {}).get("plan"))
        renditions = merge_renditions(
            (job.details or {}).get("renditions"), previous.get("renditions"),
            self._seen.get(job.id))
        failure: Failure | None = None

        if not job.state.terminal:
            if job.id not in self._attempted:
                self._attempted.add(job.id)
                attempt = await asyncio.to_thread(self.store.start_attempt, job.id)
                log.info("reconciling job", extra={**extra, "attempt": attempt})
            age = (self.clock() - job.created_at).total_seconds()
            if age > self.cfg.job_timeout_s:
                failure = Failure(FailureCode.GENERIC, "Timeout",
                                  f"processing did not finish within {self.cfg.job_timeout_s} s")
            elif plan is None:
                plan, failure = await self._plan(job, spec)
            if failure is None and plan is not None and job.state in _BEFORE_ENCODED:
                targets = targets_for(plan.variants())
                failure, renditions = await asyncio.to_thread(
                    self._sync_targets, job, body, targets, renditions)
                self._seen[job.id] = renditions
                if failure is None:
                    await self._progress(job, plan, targets, renditions)
            if failure is not None:
                await self._fail(job, failure, renditions)
            elif plan is not None and _all_succeeded(plan, renditions):
                await self._deliver(job, plan, renditions)
            job = await asyncio.to_thread(self.store.get, job.id) or job

        if job.state.terminal:
            await asyncio.to_thread(self._cleanup, job, body)
        return mirror(job, previous=previous, generation=generation, now=self.clock(),
                      plan=plan.to_dict() if plan else None, renditions=renditions,
                      failure_reason=failure.reason if failure else None)

    async def _plan(
        self, job: Job, spec: Mapping[str, Any]
    ) -> tuple[Plan | None, Failure | None]:
        """Probe the source once (ffprobe, bounded by time and memory) and fix the ladder."""
        source = self._source(spec)
        if source is None or not source.is_file():
            return None, Failure(FailureCode.GENERIC, "SourceMissing",
                                 "the uploaded file is missing")
        try:
            info = await asyncio.to_thread(probe, source, self.limits)
        except ValidationFailure as exc:
            return None, Failure(FailureCode.VALIDATION, "ValidationFailed", exc.message)
        chosen = choose_variants(plan_for(info, self.limits), spec.get("renditions"))
        plan = Plan(info.width, info.height, str(info.output_fps(self.limits.max_fps)),
                    info.has_audio, tuple(v.name for v in chosen))
        details = {
            **(job.details or {}),
            "source": {"width": info.width, "height": info.height,
                       "duration_s": info.duration_s, "has_audio": info.has_audio},
            "plan": plan.to_dict(),
            "strategy": "kubernetes",
        }
        await asyncio.to_thread(self.store.update_fields, job.id, details=details)
        await asyncio.to_thread(self.store.advance, job.id, JobState.ENCODING, 0)
        log.info("planned job", extra={"job_id": job.id, "did": job.did,
                                       "renditions": ",".join(plan.renditions)})
        return plan, None

    def _source(self, spec: Mapping[str, Any]) -> Path | None:
        """``spec.source`` resolved under the storage root; None if it points outside."""
        raw = str(spec.get("source") or "")
        if not raw:
            return None
        path = (self.storage.root / raw).resolve()
        return path if path.is_relative_to(self.storage.root) else None

    # -- worker Jobs (blocking; runs in a thread) --------------------------------------------------

    def _sync_targets(
        self,
        job: Job,
        body: Mapping[str, Any],
        targets: list[Target],
        renditions: dict[str, dict[str, Any]],
    ) -> tuple[Failure | None, dict[str, dict[str, Any]]]:
        """Create-or-get every target's Job and read its state, pods and progress file."""
        meta = body["metadata"]
        namespace = str(meta["namespace"])
        self._prepare_dirs(job.id)
        jobs = self.kube.list_jobs(namespace, selector(job.id))
        existing = {j["metadata"]["name"]: j for j in jobs}
        pods: dict[str, list[dict[str, Any]]] = {}
        for pod in self.kube.list_pods(namespace, selector(job.id)):
            target = ((pod.get("metadata") or {}).get("labels") or {}).get(LABEL_TARGET, "")
            pods.setdefault(target, []).append(pod)
        failures: list[Failure] = []
        now = self.clock()
        for target in targets:
            rec = renditions.setdefault(target.name, {"progress": 0, "outcome": "Pending"})
            name = job_name(job.id, target.name)
            rec["job"] = name
            if rec.get("outcome") == "Succeeded":
                continue
            k8s_job = existing.get(name)
            if k8s_job is None:
                manifest = job_manifest(
                    self.cfg, job_id=job.id, did=job.did, source=str(body["spec"]["source"]),
                    target=target, owner_name=str(meta["name"]), owner_uid=str(meta["uid"]),
                )
                k8s_job, created = self.kube.create_or_get_job(namespace, manifest)
                log.info("worker Job %s", "created" if created else "found",
                         extra={"job_id": job.id, "did": job.did, "k8s_job": name})
            target_pods = pods.get(target.name.lower(), [])
            outcome = job_outcome(k8s_job)
            failure: Failure | None = None
            if outcome == "Succeeded":
                rec.update(outcome="Succeeded", progress=100)
                continue
            if outcome == "Failed":
                failure = failed_job(k8s_job, target_pods, target=target.name,
                                     memory_limit=self.cfg.worker_memory_limit)
            else:
                failure = stuck_pod(target_pods, target=target.name,
                                    image=self.cfg.worker_image, now=now)
            if failure is not None:
                rec.update(outcome="Failed", reason=failure.reason, message=failure.message)
                failures.append(failure)
                continue
            running = any((p.get("status") or {}).get("phase") == "Running" for p in target_pods)
            rec["outcome"] = "Running" if running else "Pending"
            pct = read_progress(self.storage.root / progress_relpath(job.id, target.name))
            if pct is not None:
                rec["progress"] = max(int(rec.get("progress", 0)), min(pct, 99))
        # A rejected video explains every other failure: name it first.
        failures.sort(key=lambda f: f.code is not FailureCode.VALIDATION)
        return (failures[0] if failures else None), renditions

    def _prepare_dirs(self, job_id: str) -> None:
        """``out/`` and ``progress/`` writable by the worker's uid/gid (non-root pods)."""
        for path in (self.storage.output_dir(job_id),
                     self.storage.job_dir(job_id) / "progress"):
            path.mkdir(parents=True, exist_ok=True)
            st = path.stat()
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (
                    self.cfg.worker_uid, self.cfg.worker_gid):
                os.chown(path, self.cfg.worker_uid, self.cfg.worker_gid)
            if st.st_mode & 0o2775 != 0o2775:
                path.chmod(0o2775)

    # -- outcomes ------------------------------------------------------------------------------

    async def _progress(
        self, job: Job, plan: Plan, targets: list[Target], renditions: dict[str, dict[str, Any]]
    ) -> None:
        pct = aggregate(targets, {k: int(v.get("progress", 0)) for k, v in renditions.items()})
        await asyncio.to_thread(self.store.advance, job.id, JobState.ENCODING, min(pct, 99))
        if (job.details or {}).get("renditions") != renditions:
            details = {**(job.details or {}), "plan": plan.to_dict(), "renditions": renditions}
            await asyncio.to_thread(self.store.update_fields, job.id, details=details)

    async def _fail(
        self, job: Job, failure: Failure, renditions: dict[str, dict[str, Any]]
    ) -> None:
        extra = {"job_id": job.id, "did": job.did}
        details = {**(job.details or {}), "renditions": renditions,
                   "failure": {"reason": failure.reason}}
        await asyncio.to_thread(self.store.update_fields, job.id, details=details)
        if await asyncio.to_thread(self.store.fail, job.id, failure.code, failure.message):
            log.info("job failed", extra={**extra, "failure_code": failure.code.value,
                                          "reason": failure.reason, "error": failure.message})

    async def _deliver(
        self, job: Job, plan: Plan, renditions: dict[str, dict[str, Any]]
    ) -> None:
        out_dir = self.storage.output_dir(job.id)
        await asyncio.to_thread(write_master, plan.variants(), out_dir, has_audio=plan.has_audio)
        details = {**(job.details or {}), "plan": plan.to_dict(), "renditions": renditions}
        await asyncio.to_thread(self.store.update_fields, job.id, details=details)
        await deliver(self.store, job, out_dir)

    def _cleanup(self, job: Job, body: Mapping[str, Any]) -> None:
        """Once terminal: stop leftover workers, drop the source and scratch files."""
        namespace = str(body["metadata"]["namespace"])
        if job.state is JobState.FAILED:
            for k8s_job in self.kube.list_jobs(namespace, selector(job.id)):
                if job_outcome(k8s_job) is None:
                    self.kube.delete_job(namespace, k8s_job["metadata"]["name"])
            shutil.rmtree(self.storage.output_dir(job.id), ignore_errors=True)
        self.storage.remove_source(job.id)
        shutil.rmtree(self.storage.job_dir(job.id) / "progress", ignore_errors=True)
        self._seen.pop(job.id, None)
        self._attempted.discard(job.id)

    # -- deletion ------------------------------------------------------------------------------

    async def delete(self, body: Mapping[str, Any]) -> None:
        """The finalizer: a deleted VideoJob ends its job and removes its files.

        Its Jobs and their pods go with it (owner references, garbage collector).
        """
        job_id = str((body.get("spec") or {}).get("jobId") or "")
        if not job_id:
            return
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is not None and not job.state.terminal:
            await asyncio.to_thread(self.store.fail, job_id, FailureCode.GENERIC,
                                    "the job was cancelled (its VideoJob was deleted)")
        try:
            self.storage.remove(job_id)
        except ValueError:
            return
        self._seen.pop(job_id, None)
        self._attempted.discard(job_id)
        log.info("VideoJob deleted; outputs removed", extra={"job_id": job_id})


def _all_succeeded(plan: Plan, renditions: Mapping[str, Mapping[str, Any]]) -> bool:
    names = [t.name for t in targets_for(plan.variants())]
    return all((renditions.get(n) or {}).get("outcome") == "Succeeded" for n in names)


class VideoJobCreator:
    """Creates the VideoJobs the API could not (Kubernetes unreachable at upload time)."""

    def __init__(
        self, cfg: VideoConfig, store: JobStore, storage: LocalStorage, kube: KubeAPI
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self.kube = kube

    def once(self) -> list[str]:
        """One pass; returns the ids of jobs whose VideoJob was created."""
        jobs = self.store.unfinished("kubernetes")
        if not jobs:
            return []
        namespace = self.cfg.k8s_namespace
        items = self.kube.list_videojobs(namespace)
        have = {str((vj.get("spec") or {}).get("jobId")) for vj in items}
        created = []
        for job in jobs:
            if job.id in have:
                continue
            if self.kube.create_videojob(namespace, videojob_for(job, self.storage, namespace)):
                created.append(job.id)
                log.info("created missing VideoJob", extra={"job_id": job.id, "did": job.did})
        return created

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.once)
            except Exception as exc:
                log.warning("could not reconcile VideoJobs with the database: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.k8s_reconcile_interval_s)
