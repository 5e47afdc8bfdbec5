"""The control loop: one VideoJob -> probe once -> one worker Job per target -> status back.

:class:`VideoJobReconciler.step` is called for an unfinished VideoJob when it or one of its
worker Jobs changes (:mod:`atproto_video.operator.driver`). It derives everything from the
world (the database row, the Jobs and Pods, the progress files), never from memory alone, so
an operator killed at any point resumes where it was: Job names are deterministic and
creation is create-or-get, so no Job is ever duplicated.

:class:`VideoJobCreator` closes the other gap: a job committed while the Kubernetes API was
unreachable has no VideoJob; it creates the missing ones from the database periodically.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from atproto_video.core import metrics
from atproto_video.core.config import VideoConfig
from atproto_video.core.delivery import deliver
from atproto_video.core.details import (
    JobDetails,
    Outcome,
    Plan,
    Reason,
    Renditions,
    RenditionStatus,
    merge_renditions,
    renditions_from_json,
)
from atproto_video.core.jobs import Job, JobStore, utcnow
from atproto_video.core.kube import KubeAPI, videojob_for
from atproto_video.core.lexicon import FailureCode, JobState
from atproto_video.core.storage import (
    Storage,
    StorageUnavailable,
    local_output,
    local_source,
)
from atproto_video.operator import segments as seg
from atproto_video.operator.failures import (
    Failure,
    failed_job,
    job_outcome,
    parse_time,
    stuck_pod,
)
from atproto_video.operator.periodic import every
from atproto_video.operator.segments import expand, join_rendition, segments_for
from atproto_video.operator.status import mirror
from atproto_video.operator.templates import (
    LABEL_TARGET,
    job_manifest,
    job_name,
    selector,
)
from atproto_video.transcoder import encoding
from atproto_video.transcoder.contract import Target, aggregate, targets_for
from atproto_video.transcoder.errors import EncodingFailure, ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.master import master_playlist
from atproto_video.transcoder.plan import plan_job

log = logging.getLogger(__name__)

_BEFORE_ENCODED = (JobState.CREATED, JobState.ENCODING)


#: A worker Job with no ready pod this long gets its pods read (once per interval) to catch a
#: pod that can never start; watching every pod instead cost the operator more CPU than all
#: its other work on a burst of uploads.
STUCK_CHECK_S = 5.0


@dataclass(frozen=True)
class Observed:
    """One VideoJob's worker Jobs (and Pods, when known) as plain API dicts.

    ``pods`` None: listed from the API server only when needed, that is for a failed Job (to
    name the reason) or one whose pod has not become ready within :data:`STUCK_CHECK_S`.
    """

    jobs: list[dict[str, Any]]
    pods: list[dict[str, Any]] | None = None


class VideoJobReconciler:
    def __init__(
        self,
        cfg: VideoConfig,
        store: JobStore,
        storage: Storage,
        kube: KubeAPI,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self.kube = kube
        self.clock = clock
        self.limits = TranscodeLimits.from_settings(cfg.transcode)
        # Highest per-target progress seen by this process: the body kopf hands a timer can
        # lag one patch behind, and a retried pod's progress file restarts at 0.
        self._seen: dict[str, Renditions] = {}
        self._attempted: set[str] = set()
        self._pods_read: dict[str, dt.datetime] = {}
        # The renditions the master playlist lists, by job (playable early).
        self._listed: dict[str, tuple[str, ...]] = {}
        # The segmented renditions this process has joined, by job (see operator/segments).
        self._joined: dict[str, set[str]] = {}
        #: Worker Jobs this process created, by job and Job name, until the watch shows them:
        #: a step before the watch caught up would create them again (POST, 409, GET).
        self._created: dict[str, dict[str, dict[str, Any]]] = {}
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="create-job")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the step ------------------------------------------------------------------------------

    async def dispatch(
        self, body: Mapping[str, Any], observed: Observed | None = None
    ) -> bool:
        """A new VideoJob's first step: create its worker Jobs, with one database read before
        and no write, no status, no event. True if it created any.

        On a burst of uploads every new VideoJob gets its Jobs before any VideoJob's status
        patch or progress write (:mod:`atproto_video.operator.wakeups` runs these first);
        :meth:`step` does the rest afterwards. Anything unusual (no plan yet, a refused
        source, past the deadline, already encoded) is left to :meth:`step`: False.
        """
        spec = body.get("spec") or {}
        previous: Mapping[str, Any] = body.get("status") or {}
        job_id = str(spec.get("jobId") or "")
        job = await asyncio.to_thread(self.store.get, job_id) if job_id else None
        if job is None or job.state not in _BEFORE_ENCODED:
            return False
        plan = Plan.from_json(previous.get("plan")) or job.details.plan
        if plan is None or self._refused(job, spec) is not None:
            return False
        renditions = merge_renditions(
            job.details.renditions, renditions_from_json(previous.get("renditions")),
            self._seen.get(job.id))
        targets = seg.startable(self._targets(job, plan), self._joined.get(job.id, ()))
        log.info("dispatching job", extra={"job_id": job.id, "did": job.did})

        def create() -> bool:
            listed = observed.jobs if observed is not None else self.kube.list_jobs(
                str(body["metadata"]["namespace"]), selector(job.id))
            return self._create_missing(job, body, targets, renditions,
                                        self._existing(job, listed))

        return await asyncio.to_thread(create)

    async def step(
        self, body: Mapping[str, Any], observed: Observed | None = None
    ) -> dict[str, Any]:
        """Advance one VideoJob as far as the world allows; returns its new status.

        ``observed``: its Jobs and Pods as the operator's watches see them; without it they
        are listed from the API server. Timed for atproto_video_reconcile_seconds.
        """
        started = time.perf_counter()
        result = "error"
        try:
            status = await self._step(body, observed)
            result = "ok"
            return status
        finally:
            metrics.RECONCILE_SECONDS.labels(result=result).observe(
                time.perf_counter() - started)

    async def _step(
        self, body: Mapping[str, Any], observed: Observed | None
    ) -> dict[str, Any]:
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
        plan = Plan.from_json(previous.get("plan")) or job.details.plan
        renditions = merge_renditions(
            job.details.renditions, renditions_from_json(previous.get("renditions")),
            self._seen.get(job.id))
        failure: Failure | None = None
        wrote = False  # re-read the row only then: most ticks change nothing

        if not job.state.terminal:
            # Counted once per process, with this step's progress write if it makes one.
            attempt = job.id not in self._attempted
            failure = self._refused(job, spec)
            if failure is None and plan is None:
                plan, failure = await self._plan(job, spec)
                wrote = True
                if plan is not None:  # the probed source decides the targets (segments)
                    job = await asyncio.to_thread(self.store.get, job.id) or job
            if failure is None and plan is not None and job.state in _BEFORE_ENCODED:
                targets = self._targets(job, plan)
                failure, renditions = await asyncio.to_thread(
                    self._sync_targets, job, body,
                    seg.startable(targets, self._joined.get(job.id, ())), renditions, observed)
                if failure is None:
                    failure, renditions = await self._join_complete(
                        job, body, plan, targets, renditions, observed)
                self._seen[job.id] = renditions
                if failure is None:
                    written = await self._progress(job, plan, targets, renditions,
                                                   attempt=attempt)
                    if written is not None:
                        if attempt:
                            self._attempted.add(job.id)
                            log.info("reconciling job", extra={**extra,
                                                               "attempt": written.attempts})
                        job, attempt = written, False
                    await self._publish_early(job, plan, renditions)
            if attempt:
                count = await asyncio.to_thread(self.store.start_attempt, job.id)
                self._attempted.add(job.id)
                log.info("reconciling job", extra={**extra, "attempt": count})
            if failure is not None:
                await self._fail(job, failure, renditions)
                wrote = True
            elif plan is not None and _all_succeeded(self._targets(job, plan), renditions):
                await self._deliver(job, plan, renditions)
                wrote = True
            if wrote:
                job = await asyncio.to_thread(self.store.get, job.id) or job

        if job.state.terminal:
            await asyncio.to_thread(self._cleanup, job, body)
        return mirror(job, previous=previous, generation=generation, now=self.clock(),
                      plan=plan, renditions=renditions,
                      failure_reason=failure.reason if failure else None)

    def _refused(self, job: Job, spec: Mapping[str, Any]) -> Failure | None:
        """Why an unfinished job must not go on, checked before every step's work."""
        if not self.storage.check_source_ref(job.id, str(spec.get("source") or "")):
            # Workers read the job's own upload; a VideoJob naming anything else (an absolute
            # path, another job's file) is refused, not followed.
            return Failure(FailureCode.GENERIC, Reason.INVALID_SOURCE,
                           "spec.source does not name this job's upload")
        timeout = self.cfg.kube.timeout_s
        if (self.clock() - job.created_at).total_seconds() > timeout:
            return Failure(FailureCode.GENERIC, Reason.TIMEOUT,
                           f"processing did not finish within {timeout} s")
        return None

    async def _plan(
        self, job: Job, spec: Mapping[str, Any]
    ) -> tuple[Plan | None, Failure | None]:
        """Probe the source once (ffprobe, bounded by time and memory) and fix the ladder."""
        wanted = spec.get("renditions")
        try:
            async with local_source(self.storage, job.id) as source:
                plan = await asyncio.to_thread(
                    plan_job, self.store, job, source, self.limits, wanted)
        except FileNotFoundError:
            return None, Failure(FailureCode.GENERIC, Reason.SOURCE_MISSING,
                                 "the uploaded file is missing")
        except ValidationFailure as exc:
            return None, Failure(FailureCode.VALIDATION, Reason.VALIDATION_FAILED, exc.message)
        await asyncio.to_thread(self.store.advance, job.id, JobState.ENCODING, 0)
        return plan, None

    async def _join_complete(
        self, job: Job, body: Mapping[str, Any], plan: Plan, targets: list[Target],
        renditions: Renditions, observed: Observed | None,
    ) -> tuple[Failure | None, Renditions]:
        """Join each segmented rendition as soon as its segments all succeeded (playable
        early), then start what waited for it (the MP4 remux of the top one) in this tick."""
        segments = segments_for(job.details.source, self.cfg.kube, self.limits)
        names = seg.to_join(plan.renditions, segments, renditions, self._joined.get(job.id, ()))
        if not names:
            return None, renditions
        joined = self._joined.setdefault(job.id, set())
        before = seg.startable(targets, joined)
        failure = await self._join(job, names, len(segments))
        if failure is not None:
            return failure, renditions
        new = [t for t in seg.startable(targets, joined) if t not in before]
        if not new:
            return None, renditions
        return await asyncio.to_thread(self._sync_targets, job, body, new, renditions, observed)

    async def _join(self, job: Job, names: list[str], count: int) -> Failure | None:
        """Join the ``count`` segments of each named rendition this process has not joined."""
        joined = self._joined.setdefault(job.id, set())
        try:
            for name in names:
                if name in joined:
                    continue
                await asyncio.to_thread(join_rendition, self.storage, job.id, name, count)
                joined.add(name)
                log.info("joined %d segments of %s", count, name,
                         extra={"job_id": job.id, "did": job.did})
        except EncodingFailure as exc:
            return Failure(FailureCode.ENCODING, Reason.ENCODING_FAILED, exc.message)
        return None

    # -- worker Jobs (blocking; runs in a thread) --------------------------------------------------

    def _targets(self, job: Job, plan: Plan) -> list[Target]:
        """One worker Job per target; a long source's renditions as one per segment."""
        segments = segments_for(job.details.source, self.cfg.kube, self.limits)
        return expand(targets_for(plan.variants()), plan.renditions, segments,
                      seg.source_facts(job.details.source))

    def _sync_targets(
        self,
        job: Job,
        body: Mapping[str, Any],
        targets: list[Target],
        renditions: Renditions,
        observed: Observed | None,
    ) -> tuple[Failure | None, Renditions]:
        """Create-or-get every target's Job and read its state, pods and progress file."""
        meta = body["metadata"]
        namespace = str(meta["namespace"])
        if observed is None:
            observed = Observed(self.kube.list_jobs(namespace, selector(job.id)),
                                self.kube.list_pods(namespace, selector(job.id)))
        existing = self._existing(job, observed.jobs)
        self._create_missing(job, body, targets, renditions, existing)
        known_pods = observed.pods
        now = self.clock()

        def pods_of(target: Target) -> list[dict[str, Any]]:
            nonlocal known_pods
            if known_pods is None:
                known_pods = self.kube.list_pods(namespace, selector(job.id))
                self._pods_read[job.id] = now
            label = target.name.lower()
            return [p for p in known_pods
                    if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_TARGET) == label]

        out = dict(renditions)
        failures: list[Failure] = []
        for target in targets:
            name = job_name(job.id, target.name)
            rec = replace(out.get(target.name) or RenditionStatus(), job=name)
            out[target.name] = rec
            if rec.outcome is Outcome.SUCCEEDED:
                continue
            k8s_job = existing[name]
            outcome = job_outcome(k8s_job)
            if outcome is Outcome.SUCCEEDED:
                out[target.name] = replace(rec, outcome=Outcome.SUCCEEDED, progress=100)
                _observe_encode(target, k8s_job)  # once: SUCCEEDED targets are skipped above
                continue
            failure: Failure | None = None
            ready = int((k8s_job.get("status") or {}).get("ready") or 0) > 0
            if outcome is Outcome.FAILED:
                failure = failed_job(k8s_job, pods_of(target), target=target.name,
                                     memory_limit=self.cfg.kube.worker_memory_limit)
            elif not ready and self._stuck_check_due(job.id, k8s_job, known_pods, now):
                failure = stuck_pod(pods_of(target), target=target.name,
                                    image=self.cfg.kube.worker_image, now=now,
                                    start_timeout_s=self.cfg.kube.worker_start_timeout_s)
            if failure is not None:
                out[target.name] = replace(rec, outcome=Outcome.FAILED, reason=failure.reason,
                                           message=failure.message)
                failures.append(failure)
                continue
            pct = self.storage.read_progress(job.id, target.name)
            progress = rec.progress if pct is None else max(rec.progress, min(pct, 99))
            out[target.name] = replace(rec, progress=progress,
                                       outcome=Outcome.RUNNING if ready else Outcome.PENDING)
        # A rejected video explains every other failure: name it first.
        failures.sort(key=lambda f: f.code is not FailureCode.VALIDATION)
        return (failures[0] if failures else None), out

    def _existing(self, job: Job, listed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The job's worker Jobs by name: as watched or listed, else as this process created
        them (the watch decides once it shows a Job: it may have been deleted since)."""
        existing = {j["metadata"]["name"]: j for j in listed}
        created = self._created.get(job.id)
        if created:  # one step per job at a time: no other thread changes this one's dict
            for name in list(created):
                if name in existing:
                    del created[name]
                else:
                    existing[name] = created[name]
        return existing

    def _create_missing(
        self,
        job: Job,
        body: Mapping[str, Any],
        targets: list[Target],
        renditions: Renditions,
        existing: dict[str, dict[str, Any]],
    ) -> bool:
        """Create the targets' Jobs not in ``existing`` (by name; updated in place); True if
        there were any."""
        missing = [t for t in targets
                   if (renditions.get(t.name) or RenditionStatus()).outcome
                   is not Outcome.SUCCEEDED and job_name(job.id, t.name) not in existing]
        if not missing:
            return False
        # Before any worker can start.
        self.storage.prepare_worker(job.id, self.cfg.kube.worker_uid, self.cfg.kube.worker_gid)
        # All of a job's Jobs at once: on a burst, round trips to a busy API server dominate.
        for name, created in zip(
                (job_name(job.id, t.name) for t in missing),
                self._pool.map(lambda t: self._create(job, body, t), missing), strict=True):
            existing[name] = created
            self._created.setdefault(job.id, {})[name] = created
        return True

    def _stuck_check_due(self, job_id: str, k8s_job: Mapping[str, Any],
                         pods: list[dict[str, Any]] | None, now: dt.datetime) -> bool:
        """Whether to look at the pods of a Job that is not ready yet."""
        if pods is not None:
            return True  # already in hand: free
        created = parse_time(str((k8s_job.get("metadata") or {}).get("creationTimestamp")))
        if created is None or (now - created).total_seconds() < STUCK_CHECK_S:
            return False
        last = self._pods_read.get(job_id)
        return last is None or (now - last).total_seconds() >= STUCK_CHECK_S

    def _create(self, job: Job, body: Mapping[str, Any], target: Target) -> dict[str, Any]:
        """Create-or-get one worker Job (deterministic name: never a duplicate)."""
        meta = body["metadata"]
        manifest = job_manifest(
            self.cfg, job_id=job.id, did=job.did,
            io=self.storage.worker_io(job.id, target.name.lower()),
            target=target, owner_name=str(meta["name"]), owner_uid=str(meta["uid"]),
        )
        k8s_job, created = self.kube.create_or_get_job(str(meta["namespace"]), manifest)
        log.info("worker Job %s", "created" if created else "found",
                 extra={"job_id": job.id, "did": job.did,
                        "k8s_job": manifest["metadata"]["name"]})
        return k8s_job

    # -- outcomes ------------------------------------------------------------------------------

    async def _progress(
        self, job: Job, plan: Plan, targets: list[Target], renditions: Renditions,
        *, attempt: bool = False,
    ) -> Job | None:
        """Write overall and per-target progress where it moved, with the attempt count if
        ``attempt``, in one transaction; the row as written, None if nothing was."""
        pct = min(99, aggregate(targets, {k: v.progress for k, v in renditions.items()}))
        moved = job.state is not JobState.ENCODING or pct > job.progress
        details = job.details.renditions != renditions
        if not (moved or details or attempt):
            return None

        def change(current: JobDetails) -> JobDetails:
            return replace(current, plan=plan or current.plan,
                           renditions=merge_renditions(current.renditions, renditions))

        return await asyncio.to_thread(self.store.record_progress, job.id, pct,
                                       change if details else None, attempt=attempt)

    async def _record(
        self, job: Job, plan: Plan | None, renditions: Renditions,
        failure_reason: str | None = None,
    ) -> None:
        """Merge this tick's view into the stored details (never backwards, no lost writes)."""

        def change(details: JobDetails) -> JobDetails:
            return replace(
                details,
                plan=plan or details.plan,
                renditions=merge_renditions(details.renditions, renditions),
                failure_reason=failure_reason or details.failure_reason,
            )

        await asyncio.to_thread(self.store.update_details, job.id, change)

    async def _fail(self, job: Job, failure: Failure, renditions: Renditions) -> None:
        extra = {"job_id": job.id, "did": job.did}
        await self._record(job, None, renditions, failure.reason)
        if await asyncio.to_thread(self.store.fail, job.id, failure.code, failure.message):
            log.info("job failed", extra={**extra, "failure_code": failure.code.value,
                                          "reason": failure.reason, "error": failure.message})

    async def _publish_early(self, job: Job, plan: Plan, renditions: Renditions) -> None:
        """Playable early: once a rendition's Job succeeded (its files are in place), the
        master playlist lists it, and only complete renditions, while the others encode. A
        restarted operator writes it once more; a store outage only delays it."""
        if not self.cfg.transcode.playable_early:
            return
        variants = plan.variants()
        done = seg.complete([v.name for v in variants], renditions,
                            self._joined.get(job.id, ()))
        if not done or self._listed.get(job.id) == done:
            return
        text = master_playlist([v for v in variants if v.name in done],
                               has_audio=plan.has_audio)
        try:
            await asyncio.to_thread(self.storage.write_output, job.id, encoding.MASTER, text)
        except StorageUnavailable as exc:
            log.warning("could not publish the master playlist early: %s", exc,
                        extra={"job_id": job.id, "did": job.did})
            return
        self._listed[job.id] = done
        log.info("playable: master playlist lists %s", ",".join(done),
                 extra={"job_id": job.id, "did": job.did})

    async def _deliver(self, job: Job, plan: Plan, renditions: Renditions) -> None:
        segments = segments_for(job.details.source, self.cfg.kube, self.limits)
        if len(segments) > 1:  # normally all joined already (_join_complete)
            failure = await self._join(job, list(plan.renditions), len(segments))
            if failure is not None:
                await self._fail(job, failure, renditions)
                return
        text = master_playlist(plan.variants(), has_audio=plan.has_audio)
        await asyncio.to_thread(self.storage.write_output, job.id, encoding.MASTER, text)
        await self._record(job, plan, renditions)
        try:
            async with local_output(self.storage, job.id, encoding.MP4) as mp4:
                await deliver(self.store, job, mp4, cfg=self.cfg)
        except FileNotFoundError:
            await self._fail(job, Failure(FailureCode.GENERIC, Reason.GENERIC_FAILURE,
                                          "the processed video is missing"), renditions)

    def _cleanup(self, job: Job, body: Mapping[str, Any]) -> None:
        """Once terminal: stop leftover workers, drop the source and scratch files."""
        namespace = str(body["metadata"]["namespace"])
        if job.state is JobState.FAILED:
            for k8s_job in self.kube.list_jobs(namespace, selector(job.id)):
                if job_outcome(k8s_job) is None:
                    self.kube.delete_job(namespace, k8s_job["metadata"]["name"])
            self.storage.remove_outputs(job.id)
        self.storage.remove_source(job.id)
        self.storage.remove_scratch(job.id)
        self._forget(job.id)

    def _forget(self, job_id: str) -> None:
        self._created.pop(job_id, None)
        self._seen.pop(job_id, None)
        self._listed.pop(job_id, None)
        self._joined.pop(job_id, None)
        self._pods_read.pop(job_id, None)
        self._attempted.discard(job_id)

    # -- deletion ------------------------------------------------------------------------------

    async def delete(self, body: Mapping[str, Any]) -> None:
        """The finalizer: a deleted VideoJob ends its job and removes its files, except the
        published outputs of a completed job.

        Its Jobs and their pods go with it (owner references, garbage collector).
        """
        job_id = str((body.get("spec") or {}).get("jobId") or "")
        if not job_id:
            return
        job = await asyncio.to_thread(self.store.get, job_id)
        if job is not None and not job.state.terminal:
            await asyncio.to_thread(self.store.fail, job_id, FailureCode.GENERIC,
                                    "the job was cancelled (its VideoJob was deleted)")
            job = await asyncio.to_thread(self.store.get, job_id)
        completed = job is not None and job.state is JobState.COMPLETED
        try:
            if completed:
                # A published video stays playable: the VideoJob is only its processing record.
                await asyncio.to_thread(self.storage.remove_source, job_id)
                await asyncio.to_thread(self.storage.remove_scratch, job_id)
            else:
                await asyncio.to_thread(self.storage.remove, job_id)
        except ValueError:  # not a job id this storage could hold: nothing to remove
            return
        self._forget(job_id)
        log.info("VideoJob deleted; %s", "outputs kept" if completed else "files removed",
                 extra={"job_id": job_id})


def _observe_encode(target: Target, k8s_job: Mapping[str, Any]) -> None:
    """The worker Job's run time (startTime to completionTime, whole seconds: what the API
    server records) as one encode of its rendition; retried pods are included."""
    status = k8s_job.get("status") or {}
    start = parse_time(str(status.get("startTime")))
    end = parse_time(str(status.get("completionTime")))
    if end is None:
        # SuccessCriteriaMet comes before Complete and completionTime (the pods still ending);
        # woken by that event, the step sees success without a completion time.
        end = max((t for c in status.get("conditions") or []
                   if c.get("type") in ("Complete", "SuccessCriteriaMet")
                   and c.get("status") == "True"
                   and (t := parse_time(str(c.get("lastTransitionTime")))) is not None),
                  default=None)
    if start is not None and end is not None:
        metrics.observe_encode(target.cli, (end - start).total_seconds())


def _all_succeeded(targets: list[Target], renditions: Mapping[str, RenditionStatus]) -> bool:
    names = [t.name for t in targets]
    return all(n in renditions and renditions[n].outcome is Outcome.SUCCEEDED for n in names)


#: How long the API has to probe a new job and create its VideoJob itself (the probe, then at
#: most SUBMIT_TIMEOUT_S for the create) before the operator steps in: sooner, it would race the
#: API and make a VideoJob for an upload the probe is about to refuse.
HANDOVER_GRACE = dt.timedelta(seconds=30)


class VideoJobCreator:
    """Creates the VideoJobs the API could not (Kubernetes unreachable at upload time)."""

    def __init__(
        self, cfg: VideoConfig, store: JobStore, storage: Storage, kube: KubeAPI,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self.kube = kube
        self.clock = clock

    def once(self) -> list[str]:
        """One pass; returns the ids of jobs whose VideoJob was created."""
        jobs = self.store.unfinished("kubernetes")
        if not jobs:
            return []
        namespace = self.cfg.kube.namespace
        items = self.kube.list_videojobs(namespace)
        have = {str((vj.get("spec") or {}).get("jobId")) for vj in items}
        created = []
        handed_over_before = self.clock() - HANDOVER_GRACE
        for job in jobs:
            if job.id in have or job.created_at > handed_over_before:
                continue
            if self.kube.create_videojob(namespace, videojob_for(
                    job, self.storage, namespace, instance=self.cfg.kube.instance)):
                created.append(job.id)
                log.info("created missing VideoJob", extra={"job_id": job.id, "did": job.did})
        return created

    async def run(self, stop: asyncio.Event) -> None:
        await every(self.cfg.kube.reconcile_interval_s, stop, self.once,
                    "could not reconcile VideoJobs with the database")
