"""The cluster executor: hands each committed job to the operator as a VideoJob resource.

The API commits the job row before calling :meth:`KubernetesExecutor.submit`, so the database
already holds the job. Submit first probes the upload and records the ladder in the job row
(:mod:`atproto_video.transcoder.plan`), so the operator can create every worker Job as soon as
the VideoJob appears; a non-video fails here, with no VideoJob and no pod. If the Kubernetes
API cannot be reached now, submit logs and returns and the operator's reconciler creates the
missing VideoJob from the database later
(:class:`atproto_video.operator.reconcile.VideoJobCreator`). Nothing is lost, nothing blocks
the upload answer for long.
"""

from __future__ import annotations

import asyncio
import logging

from atproto_video.core.config import VideoConfig
from atproto_video.core.jobs import Job, JobStore
from atproto_video.core.kube import Kube, videojob_for
from atproto_video.core.lexicon import FailureCode
from atproto_video.core.storage import Storage, local_source
from atproto_video.transcoder.errors import TranscodeError, ValidationFailure
from atproto_video.transcoder.limits import TranscodeLimits
from atproto_video.transcoder.plan import plan_job

log = logging.getLogger(__name__)

#: Longest an upload answer waits for the VideoJob to be created.
SUBMIT_TIMEOUT_S = 10.0


class KubernetesExecutor:
    def __init__(self, cfg: VideoConfig, store: JobStore, storage: Storage) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self._kube: Kube | None = None
        self.limits = TranscodeLimits.from_settings(cfg.transcode)

    async def start(self) -> None:
        await self._connect()

    async def stop(self) -> None:
        kube, self._kube = self._kube, None
        if kube is not None:
            await asyncio.to_thread(kube.close)

    async def _connect(self) -> Kube | None:
        if self._kube is None:
            try:
                self._kube = await asyncio.to_thread(Kube.from_environment)
            except Exception as exc:
                log.warning("no Kubernetes client (VideoJobs are created later by the "
                            "operator's reconciler): %s", exc)
        return self._kube

    async def submit(self, job: Job) -> None:
        extra = {"job_id": job.id, "did": job.did}
        if not await self._plan(job):
            return
        kube = await self._connect()
        if kube is None:
            return
        body = videojob_for(job, self.storage, self.cfg.kube.namespace,
                            instance=self.cfg.kube.instance)
        try:
            created = await asyncio.wait_for(
                asyncio.to_thread(kube.create_videojob, self.cfg.kube.namespace, body),
                SUBMIT_TIMEOUT_S,
            )
        except Exception as exc:
            log.warning("could not create the VideoJob now; the operator will create it from "
                        "the database: %s", exc, extra=extra)
            return
        log.info("VideoJob %s", "created" if created else "already exists",
                 extra={**extra, "videojob": body["metadata"]["name"]})

    async def _plan(self, job: Job) -> bool:
        """Probe and record the ladder; False when the upload is not a usable video."""
        extra = {"job_id": job.id, "did": job.did}
        try:
            async with local_source(self.storage, job.id) as source:
                await asyncio.to_thread(plan_job, self.store, job, source, self.limits)
        except ValidationFailure as exc:
            if await asyncio.to_thread(self.store.fail, job.id, FailureCode.VALIDATION,
                                       exc.message):
                await asyncio.to_thread(self.storage.remove, job.id)
                log.info("job failed", extra={**extra, "failure_code":
                                              FailureCode.VALIDATION.value, "error": exc.message})
            return False
        except FileNotFoundError:  # the operator fails it as SourceMissing
            log.warning("the upload is missing; not planning", extra=extra)
        except TranscodeError as exc:  # ffprobe could not run here: the operator probes again
            log.warning("could not plan the job now; the operator will: %s", exc, extra=extra)
        return True
