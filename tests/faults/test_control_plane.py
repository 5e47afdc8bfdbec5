"""Cluster mode (API and kopf operator as host processes, worker Jobs on the test cluster)
while one control-plane component crashes mid-job: kube-apiserver, etcd or kubelet is
SIGKILLed, kept down for a few seconds, and started again exactly as cluster/up.sh starts it
(cluster/restart.sh). Every job, the one encoding and one uploaded during the outage, must
complete with exactly one worker Job per target, and the cluster must be healthy afterwards so
the following cluster tests are not disturbed.

SIGKILL, not SIGTERM: a crash gives no graceful shutdown (the apiserver does not close its
watches, etcd does not step down, kubelet does not say goodbye), which is the harder case for
the operator's watches and the API's client.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from tests.support import k8s as support
from tests.support.cluster import REPO, Cluster
from tests.support.didserver import DidServer
from tests.support.figures import record_figure
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.media import make_clip
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess
from tests.support.tempdirs import host_tmpdir
from tests.support.waiting import wait_for
from tests.support.xrpc import job_status, upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.postgres,
              pytest.mark.timeout(1200)]

RESTART = REPO / "cluster" / "restart.sh"
UP = REPO / "cluster" / "up.sh"
DOWN_S = 8.0
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
              "kubelet")
LABEL = "video.atproto.dev/job-id"
TARGETS_720 = {"720p", "480p", "mp4", "thumbnail"}
TARGETS_360 = {"360p", "mp4", "thumbnail"}


@pytest.fixture(scope="module")
def k8s(cluster: Cluster) -> Iterator[K8sEnv]:
    with K8sEnv(cluster, Path(tempfile.mkdtemp(prefix="atproto-video-k8s-"))) as env:
        yield env


@pytest.fixture(scope="module")
def stack(
    k8s: K8sEnv, postgres: PostgresServer, cluster_worker_image: str, dids: DidServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServiceProcess, OperatorProcess, str]]:
    with host_tmpdir("atproto-video-storage-") as root:
        db_url = postgres.create_database()
        env = support.stack_env(k8s, db_url=db_url, storage_root=root,
                                worker_image=cluster_worker_image, plc_url=dids.url)
        api = ServiceProcess(tmp_path_factory.mktemp("api"),
                             {**env, "KUBECONFIG": str(k8s.api_kubeconfig)}).start()
        try:
            operator = OperatorProcess(k8s.workdir, support.operator_env(k8s, env)).start()
            try:
                yield api, operator, db_url
            finally:
                operator.stop()
        finally:
            api.stop()


def restart(*args: str) -> None:
    """cluster/restart.sh ARGS; its log on failure."""
    proc = subprocess.run(["bash", str(RESTART), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"cluster/restart.sh {' '.join(args)}: {proc.stderr}"


def cluster_healthy() -> bool:
    """Every component alive, the API server ready, the node Ready (up.sh --status)."""
    return subprocess.run(["bash", str(UP), "--status"], capture_output=True,
                          timeout=60).returncode == 0


def component_alive(name: str) -> bool:
    pid = Path(f"/var/lib/atproto-video/cluster/pid/{name}")
    try:
        return Path(f"/proc/{int(pid.read_text())}").exists()
    except (OSError, ValueError):
        return False


def worker_jobs(k8s: K8sEnv, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = k8s.get("jobs", "-l", f"{LABEL}={job_id}")["items"]
    return items


def running_pods(k8s: K8sEnv, job_id: str) -> int:
    pods = k8s.get("pods", "-l", f"{LABEL}={job_id}")["items"]
    return sum(1 for p in pods if p.get("status", {}).get("phase") == "Running")


def db_state(db_url: str, job_id: str) -> str:
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.connect() as conn:
            state = conn.execute(sqlalchemy.text("SELECT state FROM video_job WHERE id = :id"),
                                 {"id": job_id}).scalar_one()
    finally:
        engine.dispose()
    return str(state)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd", "kubelet"])
def test_component_crash_mid_job(
    component: str, stack: tuple[ServiceProcess, OperatorProcess, str], k8s: K8sEnv,
    dids: DidServer, tmp_path: Path,
) -> None:
    api, operator, db_url = stack
    long = make_clip(tmp_path / "long.mp4", seconds=12, size="1280x720").read_bytes()
    short = make_clip(tmp_path / "short.mp4", seconds=2, size="640x360").read_bytes()
    who = user(dids)
    resp = upload_as(api, who, long)
    assert resp.status_code == 200, resp.text
    before = resp.json()["jobId"]
    wait_for(lambda: running_pods(k8s, before) > 0, timeout=300, interval=0.5,
             what="a worker pod running")

    restart("stop", component, "KILL")
    back_at: float | None = None
    try:
        # An upload while the component is down is accepted: the job row is committed first
        # and the operator creates the VideoJob the API could not hand over (never lost, no
        # 503 needed). With etcd down the API server hangs the create, so the answer waits
        # for the executor's submit timeout (10 s).
        sent = time.monotonic()
        resp = upload_as(api, who, short)
        record_figure(f"cluster_{component}_crash", "upload_answer_while_down",
                      time.monotonic() - sent)
        assert resp.status_code == 200, resp.text
        during = resp.json()["jobId"]
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - sent)))
        assert operator.proc is not None and operator.proc.poll() is None, operator.logs()[-4000:]
        assert api.proc is not None and api.proc.poll() is None
        back_at = time.monotonic()
        restart("start", component)
    finally:
        if not component_alive(component):  # the test failed while it was down
            restart("start", component)
    assert back_at is not None
    record_figure(f"cluster_{component}_crash", "component_answering_after_start",
                  time.monotonic() - back_at)
    wait_for(cluster_healthy, timeout=180, interval=0.5, what="cluster healthy again")
    record_figure(f"cluster_{component}_crash", "cluster_healthy_after_start",
                  time.monotonic() - back_at)

    status, _ = wait_for_job(api, before, timeout=600, logs=operator.logs)
    assert status["state"] == "JOB_STATE_COMPLETED", (status, operator.logs()[-4000:])
    record_figure(f"cluster_{component}_crash", "job_encoding_during_crash_completed_after_start",
                  time.monotonic() - back_at)
    status, _ = wait_for_job(api, during, timeout=300, logs=operator.logs)
    assert status["state"] == "JOB_STATE_COMPLETED", (status, operator.logs()[-4000:])
    record_figure(f"cluster_{component}_crash", "job_uploaded_during_crash_completed_after_start",
                  time.monotonic() - back_at)

    for job_id, targets in ((before, TARGETS_720), (during, TARGETS_360)):
        jobs = worker_jobs(k8s, job_id)
        assert sorted(j["metadata"]["labels"]["video.atproto.dev/target"] for j in jobs) == \
            sorted(targets), [j["metadata"]["name"] for j in jobs]
        # Succeeded once, no pod failed or restarted: the crash cost no encoding work.
        assert all(j["status"].get("succeeded") == 1 for j in jobs), jobs
        assert not any(j["status"].get("failed") for j in jobs), jobs
        # The VideoJob's mirrored status is the database's (the operator patches it last).
        wait_for(functools.partial(states_agree, k8s, db_url, job_id), timeout=60,
                 interval=0.5, what="VideoJob status = database state")
        assert db_state(db_url, job_id) == job_status(api, job_id)["state"]
    assert all(component_alive(c) for c in COMPONENTS), COMPONENTS


def videojob_state(k8s: K8sEnv, job_id: str) -> str:
    items = [vj for vj in k8s.get("videojobs")["items"] if vj["spec"].get("jobId") == job_id]
    assert len(items) == 1, [vj["metadata"]["name"] for vj in items]
    return str(items[0].get("status", {}).get("state", ""))


def states_agree(k8s: K8sEnv, db_url: str, job_id: str) -> bool:
    return videojob_state(k8s, job_id) == db_state(db_url, job_id)
