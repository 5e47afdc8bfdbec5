"""``helm install`` of the chart on the test cluster: the API and the operator as pods from the
project's image, with the loopback values the README documents, a real upload through the
deployed API reaching COMPLETED, and ``kubectl get videojobs`` showing it."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.chart import CHART, ROOT, Release, installed
from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.media import make_clip, play_hls
from tests.support.metrics import sample, scrape
from tests.support.multipart import MultipartClient
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for
from tests.support.xrpc import SERVICE_DID, upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]

@pytest.fixture(scope="module")
def release(
    cluster: Cluster, cluster_worker_image: str, helm: str, postgres: PostgresServer,
    dids: DidServer,
) -> Iterator[Release]:
    with installed(cluster, helm, cluster_worker_image, dids,
                   "--set", f"database.url={postgres.create_database()}") as rel:
        yield rel


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
    pods = release.pods("{.items[*].spec.containers[0].command[1]}")
    assert sorted(pods.split()) == ["operator", "serve"]
    # Both roles export metrics on their ports: the API counted the upload, the operator
    # timed the worker Jobs and a reconcile pass.
    api = scrape(release.metrics["api"])
    assert sample(api, "atproto_video_uploads_total", result="accepted") >= 1
    operator = scrape(release.metrics["operator"])
    assert sample(operator, "atproto_video_encode_seconds_count", rendition="480p") >= 1
    assert sample(operator, "atproto_video_reconcile_seconds_count", result="ok") >= 1
    cid = st["blob"]["ref"]["$link"]
    assert play_hls(f"{release.url}/watch/{quote(who.did, safe='')}/{cid}/playlist.m3u8") == 90
    assert (release.storage / "jobs" / job_id / "out" / "video.mp4").is_file()
    wait_for(lambda: not (release.storage / "jobs" / job_id / "source").exists(), timeout=30,
             what="the upload removed once the job completed")


def test_a_multipart_upload_through_the_deployed_api_completes(
    release: Release, dids: DidServer, tmp_path: Path
) -> None:
    """The app's algorithm (8 MiB parts, three in flight) against the API pod; finishUpload
    hands the job to the operator as uploadVideo does."""
    clip = make_clip(tmp_path / "mp.mp4", seconds=2, size="640x360").read_bytes()
    pad = (20 << 20) - len(clip)  # three parts; an MP4 `free` box keeps the file valid
    data = clip + struct.pack(">I", pad) + b"free" + b"\x00" * (pad - 8)
    who = user(dids)
    up = MultipartClient(release.url, who.did, lambda nsid: who.token(SERVICE_DID, nsid))
    try:
        answer = up.upload(data)
    finally:
        up.close()
    job_id = answer["completedJobId"]
    st, _ = wait_for_job(release, job_id, timeout=400, logs=release.diagnostics)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, release.diagnostics())
    assert release.kubectl("get", "videojob", job_id, "-o", "name").stdout.strip()


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
    return set(release.pods("{.items[*].metadata.uid}").split())


def test_the_readme_try_upload_command_works_against_the_release(
    release: Release, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "tiny.mp4", seconds=1, size="320x240")
    proc = subprocess.run(
        [sys.executable, "-m", "atproto_video.cli", "try-upload", release.url, str(clip),
         "--service-did", SERVICE_DID, "--timeout", "600"],
        capture_output=True, text=True, timeout=700, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr + release.diagnostics()
    assert '"state": "JOB_STATE_COMPLETED"' in proc.stdout


def test_helm_test_uploads_a_clip_through_the_api_and_waits_for_completed(
    release: Release,
) -> None:
    before = set(release.kubectl("get", "videojobs", "-o", "name").stdout.split())
    done = release.helm_run("test", release.name, "--timeout", "10m", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr + release.diagnostics()
    assert "test-upload" in done.stdout and "Succeeded" in done.stdout, done.stdout
    # The pods' logs (hook-output-log-policy), printed by helm before it deletes them.
    assert '"state": "JOB_STATE_COMPLETED"' in done.stderr, done.stderr
    # A real job went through the operator: one more VideoJob, owned by a loopback did:web.
    after = set(release.kubectl("get", "videojobs", "-o", "name").stdout.split())
    (new,) = after - before
    did = release.kubectl("get", new, "-o", "jsonpath={.spec.did}").stdout
    assert did.startswith("did:web:localhost%3A"), did


def test_losing_the_operator_pod_mid_job_the_replacement_finishes_it(
    release: Release, dids: DidServer, tmp_path: Path
) -> None:
    """As far as one node allows: the pod object is force-deleted (what happens to a pod on a
    lost node once its toleration runs out) while a job encodes; the Deployment's new pod
    adopts the running worker Jobs."""
    clip = make_clip(tmp_path / "long.mp4", seconds=12, size="1280x720").read_bytes()
    job_id = upload_as(release, user(dids), clip).json()["jobId"]
    wait_for_job(release, job_id, ("JOB_STATE_ENCODING",), timeout=300, interval=0.2)
    operator = "app.kubernetes.io/component=operator"
    (old,) = release.pods("{.items[*].metadata.name}", operator).split()
    release.kubectl("delete", "pod", old, "--grace-period=0", "--force", "--wait=false")
    wait_for(lambda: release.pods("{.items[*].metadata.name}", operator).split() not in ([], [old]),
             timeout=120, interval=1, what="a replacement operator pod")  # fmt: skip
    st, _ = wait_for_job(release, job_id, timeout=600, logs=release.diagnostics)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, release.diagnostics())


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
