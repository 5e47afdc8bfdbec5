"""``helm install`` of the chart on the test cluster: the API and the operator as pods from the
project's image, with the loopback values the README documents, a real upload through the
deployed API reaching COMPLETED, and ``kubectl get videojobs`` showing it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.media import make_clip, play_hls
from tests.support.postgres import PostgresServer
from tests.support.tempdirs import host_tmpdir
from tests.support.waiting import free_port, wait_for
from tests.support.xrpc import SERVICE_DID, upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "atproto-video"
WORKER_UID = 10001


@dataclass
class Release:
    name: str
    namespace: str
    url: str
    storage: Path
    helm: str
    cluster: Cluster

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.run("-n", self.namespace, *args, check=check)

    def helm_run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.helm, *args, "--namespace", self.namespace,
             "--kubeconfig", self.cluster.kubeconfig],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def diagnostics(self) -> str:
        pods = self.kubectl("get", "pods", "-o", "wide", check=False).stdout
        logs = "".join(self.kubectl("logs", f"deploy/{self.name}-atproto-video-{c}",
                                    "--tail=60", check=False).stdout for c in ("api", "operator"))
        return f"{pods}\n{logs}"


@pytest.fixture(scope="module")
def release(
    cluster: Cluster, cluster_worker_image: str, helm: str, postgres: PostgresServer,
    dids: DidServer,
) -> Iterator[Release]:
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    tag = cluster_worker_image.rsplit(":", 1)[1]
    port = free_port()
    with host_tmpdir("atproto-video-chart-") as storage:
        os.chown(storage, WORKER_UID, WORKER_UID)
        rel = Release("video", namespace, f"http://127.0.0.1:{port}", storage, helm, cluster)
        # Helm never upgrades crds/: apply the chart's CRD first, as the README says.
        cluster.run("apply", "-f", str(CHART / "crds" / "videojob.yaml"))
        install = rel.helm_run(
            "install", rel.name, str(CHART), "--create-namespace", "--wait", "--timeout", "5m",
            "-f", str(CHART / "values-local.yaml"),
            "--set", f"image.tag={tag}",
            "--set", f"serviceDid={SERVICE_DID}",
            "--set", f"didPlcUrl={dids.url}",
            "--set", f"database.url={postgres.create_database()}",
            "--set", f"api.port={port}",
            "--set", f"operator.healthPort={free_port()}",
            "--set", f"storage.hostPath={storage}",
        )  # fmt: skip
        try:
            assert install.returncode == 0, install.stderr + rel.diagnostics()
            yield rel
        finally:
            rel.helm_run("uninstall", rel.name, "--wait", "--timeout", "3m")
            cluster.run("delete", "namespace", namespace, "--wait=false", check=False)


def test_an_upload_through_the_deployed_api_completes(
    release: Release, dids: DidServer, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=3, size="854x480").read_bytes()
    who = user(dids)
    resp = upload_as(release, who, clip)
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["jobId"]
    st, _ = wait_for_job(release, job_id, timeout=400, logs=release.diagnostics)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, release.diagnostics())

    listed = release.kubectl("get", "videojobs").stdout
    row = next(line for line in listed.splitlines() if line.startswith(job_id))
    assert "JOB_STATE_COMPLETED" in row and "100" in row, listed

    # The pods are the chart's: API and operator from the project's image, on the host network.
    pods = release.kubectl("get", "pods", "-l", "app.kubernetes.io/instance=video",
                           "-o", "jsonpath={.items[*].spec.containers[0].command[1]}").stdout
    assert sorted(pods.split()) == ["operator", "serve"]
    cid = st["blob"]["ref"]["$link"]
    assert play_hls(f"{release.url}/watch/{quote(who.did, safe='')}/{cid}/playlist.m3u8") == 90
    assert (release.storage / "jobs" / job_id / "out" / "video.mp4").is_file()
    wait_for(lambda: not (release.storage / "jobs" / job_id / "source").exists(), timeout=30,
             what="the upload removed once the job completed")


def test_an_upgrade_that_rolls_both_deployments_mid_job_still_completes(
    release: Release, dids: DidServer, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "long.mp4", seconds=12, size="1280x720").read_bytes()
    job_id = upload_as(release, user(dids), clip).json()["jobId"]
    wait_for_job(release, job_id, ("JOB_STATE_ENCODING",), timeout=300, interval=0.2)
    before = _pod_uids(release)
    upgraded = release.helm_run("upgrade", release.name, str(CHART), "--reuse-values",
                                "--set", "limits.maxFps=50", "--wait", "--timeout", "5m")
    assert upgraded.returncode == 0, upgraded.stderr + release.diagnostics()
    wait_for(lambda: before and not (_pod_uids(release) & before), timeout=120, interval=1,
             what="both Deployments rolled (no pod of before the upgrade left)")
    st, _ = wait_for_job(release, job_id, timeout=600, logs=release.diagnostics)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, release.diagnostics())


def _pod_uids(release: Release) -> set[str]:
    out = release.kubectl("get", "pods", "-l", "app.kubernetes.io/instance=video",
                          "-o", "jsonpath={.items[*].metadata.uid}").stdout
    return set(out.split())


def test_the_readme_upload_script_works_against_the_release(
    release: Release, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "tiny.mp4", seconds=1, size="320x240")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "try_upload.py"), release.url, str(clip),
         "--service-did", SERVICE_DID],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr + release.diagnostics()
    assert '"state": "JOB_STATE_COMPLETED"' in proc.stdout


def test_uninstall_leaves_no_pod_job_or_videojob_and_keeps_the_video(release: Release) -> None:
    """Runs last in the module: the pre-delete hook drains the release's VideoJobs while the
    operator still runs, so nothing hangs on a finalizer."""
    outputs = sorted(release.storage.glob("jobs/*/out/video.mp4"))
    assert outputs, "the tests above published videos"
    done = release.helm_run("uninstall", release.name, "--wait", "--timeout", "3m")
    assert done.returncode == 0, done.stderr
    assert release.kubectl("get", "videojobs", "-o", "name").stdout.split() == []

    def leftovers() -> list[str]:
        return release.kubectl("get", "jobs,pods", "-o", "name").stdout.split()

    wait_for(lambda: not leftovers(), timeout=90, interval=1,
             what=lambda: f"Jobs and pods garbage-collected: {leftovers()}")
    assert all(path.is_file() for path in outputs), "published videos stay"
