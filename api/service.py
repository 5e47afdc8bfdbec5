"""The service object: ``create`` wires it all, ``start`` serves, ``stop`` shuts down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import uvicorn

from atproto_video.api.app import build_app
from atproto_video.api.auth import ServiceAuthVerifier
from atproto_video.api.context import AppContext
from atproto_video.api.identity import DidResolver
from atproto_video.api.upload import drain_background
from atproto_video.core import metrics
from atproto_video.core.config import ConfigError, VideoConfig
from atproto_video.core.db import make_engine
from atproto_video.core.jobs import JobStore
from atproto_video.core.migrate import upgrade
from atproto_video.core.quota import QuotaLedger
from atproto_video.core.sessions import SessionStore
from atproto_video.core.storage import Storage, open_storage
from atproto_video.core.upload_expiry import SweepResult, UploadSweeper
from atproto_video.executor import Executor

log = logging.getLogger(__name__)


class VideoService:
    def __init__(self, cfg: VideoConfig, ctx: AppContext, resolver: DidResolver) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.resolver = resolver
        self.app = build_app(ctx)
        self._server: uvicorn.Server | None = None
        self.metrics = metrics.MetricsServer(cfg.metrics.host, cfg.metrics.port)
        # Embedded mode sweeps abandoned uploads itself; in cluster mode the operator does.
        self.sweeper: UploadSweeper | None = None
        if cfg.service.executor == "local":
            self.sweeper = UploadSweeper(ctx.sessions, ctx.ledger, ctx.store, ctx.storage)
        self._sweep_stop = asyncio.Event()
        self._sweep: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, cfg: VideoConfig) -> VideoService:
        if cfg.service.executor == "kubernetes" and cfg.secrets.token_key is None:
            # Replicas and the operator must share the key that encrypts forwarded tokens.
            raise ConfigError("VIDEO_TOKEN_KEY is required when VIDEO_EXECUTOR=kubernetes")
        cfg.service.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(cfg.database_url)
        upgrade(engine)
        # Embedded mode: this process is the only writer of job rows, so it may cache statuses.
        store = JobStore(engine, single_writer=cfg.service.executor == "local")
        storage = open_storage(cfg)
        storage.prepare()
        resolver = DidResolver(
            cfg.service.did_plc_url,
            allow_private=cfg.service.allow_private_endpoints,
            refresh_interval=cfg.service.did_refresh_interval_s,
        )
        verifier = ServiceAuthVerifier(cfg.service.did, resolver)
        executor = _make_executor(cfg, store, storage)
        ctx = AppContext(
            cfg=cfg, store=store, storage=storage, verifier=verifier, executor=executor,
            ledger=QuotaLedger(engine), sessions=SessionStore(engine),
        )
        return cls(cfg, ctx, resolver)

    async def start(self) -> None:
        if self.sweeper is not None:
            # Embedded: this is the only uploading process, so whatever a killed predecessor
            # left in flight is orphaned; end it before serving (jobs resume below).
            swept = await asyncio.to_thread(self.sweeper.after_crash)
            if swept != SweepResult():
                log.info("swept uploads left by the previous process", extra={
                    "released": swept.released, "interrupted": swept.interrupted,
                    "orphans": swept.orphans})
        if self.cfg.service.executor == "local":
            # Embedded: this process owns the jobs. In cluster mode the operator exports
            # their counts once, instead of every API replica repeating them.
            metrics.watch_jobs(self.ctx.store.engine)
        self.metrics.start()
        await self.ctx.executor.start()
        if self.sweeper is not None:
            self._sweep = asyncio.create_task(self.sweeper.run(
                self.cfg.service.upload_sweep_interval_s, self._sweep_stop), name="upload-sweep")
        config = uvicorn.Config(
            self.app,
            host=self.cfg.service.host,
            port=self.cfg.service.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=30,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        log.info(
            "atproto-video listening",
            extra={"host": self.cfg.service.host, "port": self.cfg.service.port,
                   "executor": self.cfg.service.executor},
        )
        await self._server.serve()

    async def stop(self) -> None:
        """Stop accepting requests, let in-flight ones finish, then stop the executor."""
        if self._server is not None:
            self._server.should_exit = True
        self._sweep_stop.set()
        if self._sweep is not None:
            await self._sweep
        # Before the executor stops: a settled upload may still hand it its job.
        await drain_background(timeout_s=5)
        await self.ctx.executor.stop()
        self.metrics.stop()
        metrics.unwatch_jobs(self.ctx.store.engine)
        await self.resolver.aclose()
        await asyncio.to_thread(self.ctx.storage.close)
        await asyncio.to_thread(self.ctx.hashes.close)
        self.ctx.store.engine.dispose()

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, on uvloop when it is installed."""
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(self.run_forever())

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        serve = asyncio.create_task(self.start())
        stop_requested = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_requested.set)
        waiter = asyncio.create_task(stop_requested.wait())
        done, _ = await asyncio.wait({serve, waiter}, return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down")
        if self._server is not None:
            self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serve
        waiter.cancel()
        await self.stop()
        if serve in done and serve.exception() is not None:
            raise serve.exception()  # type: ignore[misc]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    # uvicorn's loop="auto" only applies to uvicorn.run(); serve() runs on the caller's loop.
    # uvloop (from uvicorn[standard]) cut the server's CPU per uploaded byte by ~10%.
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _make_executor(cfg: VideoConfig, store: JobStore, storage: Storage) -> Executor:
    if cfg.service.executor == "kubernetes":
        from atproto_video.executor.kubernetes import KubernetesExecutor

        executor: Executor = KubernetesExecutor(cfg, store, storage)
        return executor
    from atproto_video.executor.local import LocalExecutor

    return LocalExecutor(cfg, store, storage)
