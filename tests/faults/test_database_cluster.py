"""Cluster mode (API and kopf operator as processes, worker Jobs on the test cluster) while
Postgres is stopped for 20 s with a job encoding: uploads get a retryable 503, the API turns
unready, the operator rides it out, and every job completes with one worker Job per target.

A dedicated Postgres server (stopping the suite's shared one would disturb other tests).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import k8s as support
from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.figures import record_figure
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.media import make_clip
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess
from tests.support.tempdirs import host_tmpdir
from tests.support.waiting import wait_for
from tests.support.xrpc import upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.postgres,
              pytest.mark.timeout(1800)]

OUTAGE_S = 20.0
LABEL = "video.atproto.dev/job-id"
TARGETS_720 = {"720p", "480p", "mp4", "thumbnail"}
TARGETS_360 = {"360p", "mp4", "thumbnail"}


@pytest.fixture(scope="module")
def outage_pg() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def k8s(cluster: Cluster) -> Iterator[K8sEnv]:
    with K8sEnv(cluster, Path(tempfile.mkdtemp(prefix="atproto-video-k8s-"))) as env:
        yield env


@pytest.fixture(scope="module")
def stack(
    k8s: K8sEnv, outage_pg: PostgresServer, cluster_worker_image: str, dids: DidServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, OperatorProcess]]:
    with host_tmpdir("atproto-video-storage-") as root:
        env = support.stack_env(k8s, db_url=outage_pg.url, storage_root=root,
                                worker_image=cluster_worker_image, plc_url=dids.url)
        api = ServiceProcess(tmp_path_factory.mktemp("api"),
                             {**env, "KUBECONFIG": str(k8s.api_kubeconfig)}).start()
        try:
            operator = OperatorProcess(k8s.workdir, support.operator_env(k8s, env)).start()
            try:
                yield api, operator
            finally:
                operator.stop()
        finally:
            api.stop()


def health(svc: ServiceProcess) -> int:
    try:
        return httpx.get(f"{svc.url}/xrpc/_health", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def worker_jobs(k8s: K8sEnv, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k8s.get("jobs", "-l", f"{LABEL}={job_id}")["items"]
    return items


def test_postgres_stopped_while_the_cluster_encodes(
    stack: tuple[ServiceProcess, OperatorProcess], k8s: K8sEnv, outage_pg: PostgresServer,
    dids: DidServer, tmp_path: Path,
) -> None:
    api, operator = stack
    long = make_clip(tmp_path / "long.mp4", seconds=20, size="1280x720").read_bytes()
    short = make_clip(tmp_path / "short.mp4", seconds=2, size="640x360").read_bytes()
    who = user(dids)
    resp = upload_as(api, who, long)
    assert resp.status_code == 200, resp.text
    before = resp.json()["jobId"]
    wait_for_job(api, before, ("JOB_STATE_ENCODING",), timeout=300, logs=operator.logs)

    outage_pg.halt()
    down_at = time.monotonic()
    try:
        refused = upload_as(api, who, b"\x00" * 1000)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "NotEnoughResources"
        assert int(refused.headers["retry-after"]) > 0
        wait_for(lambda: health(api) == 503, timeout=10, what="API unready")
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert operator.proc is not None and operator.proc.poll() is None
        assert api.proc is not None and api.proc.poll() is None
    finally:
        outage_pg.resume()
    up_at = time.monotonic()
    wait_for(lambda: health(api) == 200, timeout=60, what="API ready again")
    record_figure("cluster_postgres_outage", "api_ready_after_db_back", time.monotonic() - up_at)
    resp = upload_as(api, who, short)
    assert resp.status_code == 200, resp.text
    after = resp.json()["jobId"]

    status, _ = wait_for_job(api, before, timeout=600, logs=operator.logs)
    assert status["state"] == "JOB_STATE_COMPLETED", (status, operator.logs()[-4000:])
    record_figure("cluster_postgres_outage", "job_encoding_during_outage_completed_after",
                  time.monotonic() - up_at)
    status, _ = wait_for_job(api, after, timeout=300, logs=operator.logs)
    assert status["state"] == "JOB_STATE_COMPLETED", (status, operator.logs()[-4000:])

    # No duplicate worker Jobs: one per target, each succeeded once.
    for job_id, targets in ((before, TARGETS_720), (after, TARGETS_360)):
        jobs = worker_jobs(k8s, job_id)
        assert sorted(j["metadata"]["labels"]["video.atproto.dev/target"] for j in jobs) == \
            sorted(targets), [j["metadata"]["name"] for j in jobs]
        assert all(j["status"].get("succeeded") == 1 for j in jobs)
