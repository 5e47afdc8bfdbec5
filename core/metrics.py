"""Prometheus metrics: every metric the service exports is defined here, and nowhere else.

One dedicated registry per process (:data:`REGISTRY`), not the client library's global one, so
nothing another library registers leaks into ``/metrics``. The metric objects are module-level
and created once per process; services only *use* them, so several services started in one
process (tests) never register a name twice. The job counts read from the database are one
collector whose engine a service attaches with :func:`watch_jobs` (the last one wins).

Labels are bounded sets (results, error names, renditions, HTTP statuses, states): never a
DID or a job id. The API, the operator and the in-process executor serve the same registry
from :class:`MetricsServer` on ``VIDEO_METRICS_HOST:VIDEO_METRICS_PORT``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select, text

from atproto_video.core.db import video_job
from atproto_video.core.ladder import RUNG_NAMES
from atproto_video.core.lexicon import JobState

log = logging.getLogger(__name__)

PREFIX = "atproto_video_"

# Counters' ``_created`` series double the output and no dashboard here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
# The standard process metrics (CPU, memory, file descriptors, GC) beside ours.
for _standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_standard)

# -- uploads (api/upload.py) -------------------------------------------------------------------

#: Every uploadVideo request by result: ``accepted``, ``already_exists`` (a duplicate answered
#: with the earlier job) or the XRPC error name it was refused with.
UPLOADS = Counter(
    "atproto_video_uploads", "uploadVideo requests by result (accepted, already_exists, "
    "or the XRPC error name)", ["result"], registry=REGISTRY)
UPLOADS.labels(result="accepted")  # present (0) before the first upload: rates start at once
UPLOAD_BYTES = Counter(
    "atproto_video_upload_bytes", "Bytes of uploads accepted as new jobs", registry=REGISTRY)

# -- jobs (core/jobs.py and the collector below) ---------------------------------------------

#: Terminal transitions, counted by the process that made them (each happens once).
JOBS_FINISHED = Counter(
    "atproto_video_jobs_finished", "Jobs that reached a terminal state, by outcome "
    "(completed, or the failure code)", ["outcome"], registry=REGISTRY)

# -- encoding (executor/local.py, operator/reconcile.py) -------------------------------------

#: rendition: a ladder rung (1080p, 720p, 480p), ``mp4``, ``thumbnail``, or ``all`` for the
#: ``single`` strategy, which encodes every output in one ffmpeg process.
ENCODE_SECONDS = Histogram(
    "atproto_video_encode_seconds", "Wall-clock seconds to encode one rendition (all: every "
    "output in one ffmpeg process)", ["rendition"], registry=REGISTRY,
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf")))
RENDITION_LABELS = frozenset((*RUNG_NAMES, "mp4", "thumbnail", "all"))

# -- delivery to the user's PDS (core/delivery.py) -------------------------------------------

PDS_UPLOAD_RETRIES = Counter(
    "atproto_video_pds_upload_retries", "uploadBlob attempts to a user's PDS that failed "
    "transiently and were retried", registry=REGISTRY)

# -- the operator and Kubernetes (operator/reconcile.py, core/kube.py) -----------------------

RECONCILE_SECONDS = Histogram(
    "atproto_video_reconcile_seconds", "Seconds for one reconcile pass of one VideoJob, "
    "by result (ok, error)", ["result"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")))
#: code: the HTTP status the API server answered, or ``network`` when there was no answer.
KUBE_API_ERRORS = Counter(
    "atproto_video_kube_api_errors", "Failed Kubernetes API calls by operation and HTTP status "
    "(network: no answer)", ["operation", "code"], registry=REGISTRY)

_ERROR_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


def upload_result(name: str, fallback: str) -> str:
    """The ``result`` label for a refused upload: the XRPC error name when it is a name.

    Quota errors carry a sentence as their name (social-app matches it, SPEC section 1); those
    are counted under the error class's own name (``fallback``), keeping the label set small.
    """
    return name if _ERROR_NAME.match(name) else fallback


def rendition_label(name: str) -> str:
    """A bounded ``rendition`` label: a rung, mp4, thumbnail, all, or ``other``."""
    return name if name in RENDITION_LABELS else "other"


def observe_encode(rendition: str, seconds: float) -> None:
    if seconds >= 0:
        ENCODE_SECONDS.labels(rendition=rendition_label(rendition)).observe(seconds)


def kube_error(operation: str, status: int | None) -> None:
    """Count one failed API call; ``status`` None or 0 means no HTTP answer."""
    code = str(status) if status and 100 <= status <= 599 else "network"
    KUBE_API_ERRORS.labels(operation=operation, code=code).inc()


# -- job counts, read from the database at scrape time ---------------------------------------

_UNFINISHED = tuple(s for s in JobState if not s.terminal)
#: Seconds a scrape may spend counting jobs on Postgres before the query is cancelled.
COUNT_TIMEOUT_MS = 2000


def state_label(state: JobState | str) -> str:
    """``JOB_STATE_ENCODING`` -> ``encoding``."""
    return str(state).removeprefix("JOB_STATE_").lower()


class _JobCounts(Collector):
    """Unfinished jobs by state and the queue of jobs not started yet, one grouped COUNT.

    Only unfinished states: their rows are few and the query walks ``ix_video_job_state``;
    finished jobs are counted by :data:`JOBS_FINISHED` as they finish. A failed query (the
    database is down) leaves the gauges out of that scrape and counts the failure in the
    same scrape; the rest of ``/metrics`` is still served.
    """

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._errors = 0
        self._lock = threading.Lock()

    def watch(self, engine: Engine) -> None:
        with self._lock:
            self._engine = engine

    def unwatch(self, engine: Engine) -> None:
        with self._lock:
            if self._engine is engine:
                self._engine = None

    def describe(self) -> Iterable[Metric]:
        return [*self._families(), self._error_family()]

    def _error_family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            "atproto_video_job_count_errors", "Scrapes whose job count query failed (the job "
            "gauges are missing from those scrapes)", value=self._errors)

    def _families(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "atproto_video_jobs", "Unfinished jobs by state (from the database)",
            labels=["state"])
        yield GaugeMetricFamily(
            "atproto_video_queue_depth",
            "Jobs waiting for an encoder: created, not started (from the database)")

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            engine = self._engine
        if engine is None:
            return [self._error_family()]
        try:
            counts = _count_unfinished(engine)
        except Exception as exc:  # the database is down: /metrics must still answer
            with self._lock:
                self._errors += 1
            log.warning("cannot count jobs for metrics: %s", exc)
            return [self._error_family()]
        jobs, queue = self._families()
        for state in _UNFINISHED:
            jobs.add_metric([state_label(state)], counts.get(state.value, 0))
        queue.add_metric([], counts.get(JobState.CREATED.value, 0))
        return [jobs, queue, self._error_family()]


def _count_unfinished(engine: Engine) -> dict[str, int]:
    c = video_job.c
    query = (select(c.state, func.count()).where(c.state.in_([s.value for s in _UNFINISHED]))
             .group_by(c.state))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"SET LOCAL statement_timeout = {COUNT_TIMEOUT_MS}"))
        return {str(state): int(n) for state, n in conn.execute(query).all()}


_JOB_COUNTS = _JobCounts()
REGISTRY.register(_JOB_COUNTS)


def watch_jobs(engine: Engine) -> None:
    """Export job counts from this database: the process that owns the jobs calls it (the
    embedded service, or the operator in cluster mode) so API replicas do not repeat them."""
    _JOB_COUNTS.watch(engine)


def unwatch_jobs(engine: Engine) -> None:
    _JOB_COUNTS.unwatch(engine)


# -- the listener ------------------------------------------------------------------------------


class MetricsServer:
    """prometheus_client's own HTTP server in a thread; ``stop`` frees the port."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.port != 0

    def start(self) -> None:
        if not self.enabled or self._server is not None:
            return
        self._server, self._thread = start_http_server(self.port, addr=self.host,
                                                       registry=REGISTRY)
        log.info("metrics listening", extra={"host": self.host, "port": self.port})

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

