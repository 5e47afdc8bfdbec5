"""The operator process: kopf plus the database-to-VideoJob reconciler, one event loop.

Single-active by design: kopf runs ``standalone`` (no peering objects, no peering RBAC) and
the Deployment uses ``replicas: 1`` with the ``Recreate`` strategy, so an old pod is gone
before a new one starts. Two operators at once would still be safe for correctness (Job
creation is create-or-get by deterministic name; JobStore transitions only move forward) but
would double the API traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

import kopf

from atproto_video.core import metrics
from atproto_video.core.config import VideoConfig
from atproto_video.core.db import make_engine
from atproto_video.core.jobs import JobStore
from atproto_video.core.kube import Kube
from atproto_video.core.migrate import upgrade
from atproto_video.core.quota import QuotaLedger
from atproto_video.core.sessions import SessionStore
from atproto_video.core.storage import Storage, open_storage
from atproto_video.core.upload_expiry import UploadSweeper
from atproto_video.operator.driver import VideoJobDriver
from atproto_video.operator.expiry import VideoJobExpiry
from atproto_video.operator.handlers import API_ERROR_BACKOFFS, build_registry
from atproto_video.operator.jobwatch import JobWatch
from atproto_video.operator.periodic import every
from atproto_video.operator.reconcile import VideoJobCreator, VideoJobReconciler

log = logging.getLogger(__name__)

#: Threads for blocking calls (database, API server, files); they mostly wait on I/O.
THREADS = 32


class OperatorService:
    def __init__(self, cfg: VideoConfig, store: JobStore, storage: Storage, kube: Kube,
                 *, liveness: str | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.storage = storage
        self.kube = kube
        self.liveness = liveness
        self.reconciler = VideoJobReconciler(cfg, store, storage, kube)
        self.driver = VideoJobDriver(self.reconciler, kube, poll_s=cfg.kube.poll_interval_s,
                                     resync_s=cfg.kube.resync_interval_s)
        self.jobs = JobWatch(kube, cfg.kube.namespace, self.driver.job_event,
                             backoffs=API_ERROR_BACKOFFS)
        self.driver.jobs = self.jobs.index
        self.creator = VideoJobCreator(cfg, store, storage, kube)
        self.expiry = VideoJobExpiry(cfg, kube)
        # Cluster mode: abandoned multipart sessions and stale reservations end here.
        self.uploads = UploadSweeper(SessionStore(store.engine), QuotaLedger(store.engine),
                                     store, storage)
        self.registry = build_registry(cfg, self.driver)
        self.metrics = metrics.MetricsServer(cfg.metrics.host, cfg.metrics.port)
        self._stop = asyncio.Event()

    @classmethod
    def create(cls, cfg: VideoConfig, *, liveness: str | None = None) -> OperatorService:
        engine = make_engine(cfg.database_url)
        upgrade(engine)
        storage = open_storage(cfg)
        storage.prepare()
        return cls(cfg, JobStore(engine), storage, Kube.from_environment(), liveness=liveness)

    async def run(self) -> None:
        """Until SIGTERM/SIGINT (kopf handles the signals and stops gracefully)."""
        log.info("operator starting", extra={"namespace": self.cfg.kube.namespace,
                                             "image": self.cfg.kube.worker_image})
        # Every step blocks on Postgres and the API server in threads; the default pool (cpus
        # + 4 threads) queued a burst of new VideoJobs behind a handful of round trips.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="operator"))
        # In cluster mode the operator owns the jobs: it exports their counts, not each API
        # replica (their sums would multiply them).
        metrics.watch_jobs(self.store.engine)
        self.metrics.start()
        creator = asyncio.create_task(self.creator.run(self._stop), name="videojob-creator")
        jobs = asyncio.create_task(self.jobs.run(self._stop), name="worker-job-watch")
        driver = asyncio.create_task(self.driver.run(self._stop, ready=self.jobs.synced),
                                     name="videojob-steps")
        expiry = asyncio.create_task(self.expiry.run(self._stop), name="videojob-expiry")
        uploads = asyncio.create_task(
            every(self.cfg.service.upload_sweep_interval_s, self._stop, self.uploads.once,
                  "could not sweep expired uploads"), name="upload-sweep")
        try:
            await kopf.operator(
                registry=self.registry,
                standalone=True,
                clusterwide=False,
                namespaces=[self.cfg.kube.namespace],
                liveness_endpoint=self.liveness or None,
            )
        finally:
            await self.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await creator
                await jobs
                await driver
                await expiry
                await uploads

    async def stop(self) -> None:
        self._stop.set()
        self.metrics.stop()
        metrics.unwatch_jobs(self.store.engine)
        self.reconciler.close()
        self.kube.close()
        self.storage.close()
        self.store.engine.dispose()

