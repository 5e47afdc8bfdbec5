"""The operator on a real cluster with S3 storage: no shared volume anywhere.

The API and the operator run as real processes with the credentials in their environment
(what ``envFrom`` gives them in the chart); worker pods get theirs from a Secret, fetch the
source and publish their outputs themselves, with only an ``emptyDir`` as scratch, and
report progress as one object per target. The S3 server is SeaweedFS on loopback, so the
workers use the host network to reach it (the test cluster's pods have no other route).
"""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from tests.support import k8s as support
from tests.support.didserver import DidServer
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.media import make_clip, play_hls
from tests.support.postgres import PostgresServer
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support.service import ServiceProcess, assert_monotonic
from tests.support.waiting import wait_for
from tests.support.xrpc import upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.s3,
              pytest.mark.timeout(1800)]

LABEL = "video.atproto.dev/job-id"
TARGETS_720 = {"720p", "480p", "mp4", "thumbnail"}
SECRET = "video-s3"
PREFIX = "video/"
INSTANCE = "s3-tests"


@pytest.fixture(scope="module")
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture(scope="module")
def stack_env(
    k8s: K8sEnv, postgres: PostgresServer, cluster_worker_image: str, dids: DidServer,
    s3_server: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Cluster mode with S3: no VIDEO_STORAGE_DIR, workers on the host network."""
    env = support.stack_env(k8s, db_url=postgres.create_database(),
                            storage_root=tmp_path_factory.mktemp("unused"),
                            worker_image=cluster_worker_image, plc_url=dids.url)
    del env["VIDEO_STORAGE_DIR"]
    manifest = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": k8s.namespace},
                "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY,
                               "AWS_SECRET_ACCESS_KEY": SECRET_KEY}}
    k8s.cluster.apply(manifest)
    return {**env, **s3_server.env(bucket, prefix=PREFIX),
            "VIDEO_S3_CREDENTIALS_SECRET": SECRET, "VIDEO_WORKER_HOST_NETWORK": "true",
            "VIDEO_K8S_INSTANCE": INSTANCE}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("media") / "c.mp4", seconds=6,
                     size="1280x720").read_bytes()


def _pod_volumes(k8s: K8sEnv, job_id: str) -> list[dict[str, object]]:
    items = k8s.get("jobs", "-l", f"{LABEL}={job_id}")["items"]
    return [v for j in items for v in j["spec"]["template"]["spec"].get("volumes", [])]


def test_a_job_completes_with_no_shared_volume(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    clip: bytes, s3_server: S3Server, bucket: str,
) -> None:
    who = user(dids)
    resp = upload_as(api, who, clip)
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["jobId"]
    st, seen = wait_for_job(api, job_id, timeout=400, interval=0.2, logs=operator.logs)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, operator.logs()[-4000:])
    assert_monotonic(seen)
    # Progress objects reach getJobStatus while the workers encode.
    assert any(s == "JOB_STATE_ENCODING" and 0 < p < 100 for s, p in seen), seen

    items = k8s.get("jobs", "-l", f"{LABEL}={job_id}")["items"]
    assert {j["metadata"]["labels"]["video.atproto.dev/target"] for j in items} == TARGETS_720
    for job in items:
        pod = job["spec"]["template"]["spec"]
        assert job["status"].get("succeeded") == 1
        assert all("hostPath" not in v and "persistentVolumeClaim" not in v
                   for v in pod["volumes"]), pod["volumes"]
        assert {v["name"] for v in pod["volumes"]} == {"scratch", "tmp"}
        container = pod["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": SECRET}}]
        assert not any(e["name"].startswith("AWS_") for e in container["env"])
        assert container["args"][0] == f"s3://{bucket}/{PREFIX}jobs/{job_id}/source"

    out = f"{PREFIX}jobs/{job_id}/out/"
    keys = s3_server.keys(bucket, f"{PREFIX}jobs/{job_id}/")
    for name in ("playlist.m3u8", "720p/video.m3u8", "480p/video.m3u8", "thumbnail.jpg",
                 "video.mp4"):
        assert out + name in keys, keys
    assert not any(k.endswith("/source") or "/progress/" in k for k in keys), keys

    cid = st["blob"]["ref"]["$link"]
    base = f"{api.url}/watch/{quote(who.did, safe='')}/{cid}"
    assert play_hls(f"{base}/playlist.m3u8") == 180  # 6 s at 30 fps, via presigned segments

    # `kubectl describe vj` tells the story: one event per state change.
    def reasons() -> set[str]:
        events = k8s.get("events", "--field-selector",
                         f"involvedObject.kind=VideoJob,involvedObject.name={job_id}")["items"]
        return {e["reason"] for e in events}

    wait_for(lambda: {"Encoding", "Completed"} <= reasons(), timeout=30, interval=0.5,
             what=lambda: f"events on the VideoJob: {reasons()}")

    # Deleting the VideoJob removes the processing record, never the published video.
    k8s.kubectl("delete", "videojob", job_id, "--timeout=60s")
    wait_for(lambda: _pod_volumes(k8s, job_id) == [], timeout=60, interval=0.5,
             what="owner references should garbage-collect the Jobs")
    assert out + "video.mp4" in s3_server.keys(bucket, out)
    assert play_hls(f"{base}/playlist.m3u8") == 180


def test_an_invalid_video_fails_and_leaves_no_objects(
    api: ServiceProcess, operator: OperatorProcess, dids: DidServer, s3_server: S3Server,
    bucket: str,
) -> None:
    resp = upload_as(api, user(dids), b"not a video at all" * 1000)
    job_id = resp.json()["jobId"]
    st, _ = wait_for_job(api, job_id, timeout=300, logs=operator.logs)
    assert (st["state"], st["failureCode"]) == ("JOB_STATE_FAILED", "validation_failure")
    wait_for(lambda: s3_server.keys(bucket, f"{PREFIX}jobs/{job_id}/") == [], timeout=60,
             what="the objects of a failed job are removed")



def test_a_store_outage_while_workers_encode_is_waited_out(
    api: ServiceProcess, operator: OperatorProcess, dids: DidServer, s3_server: S3Server,
    bucket: str, clip: bytes,
) -> None:
    """Workers retry fetching and publishing (VIDEO_S3_RETRY_S), the operator its reads and
    the master playlist: a store that comes back in time costs a delay, not the job."""
    resp = upload_as(api, user(dids), clip + b"\0")  # not a duplicate of the first test
    job_id = resp.json()["jobId"]
    wait_for_job(api, job_id, ("JOB_STATE_ENCODING",), timeout=300, interval=0.1)
    s3_server.kill()
    try:
        time.sleep(10)
    finally:
        s3_server.start(keep_ports=True)
    st, _ = wait_for_job(api, job_id, timeout=400, logs=operator.logs)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, operator.logs()[-4000:])
    assert f"{PREFIX}jobs/{job_id}/out/video.mp4" in s3_server.keys(bucket)


def test_the_operator_leaves_another_releases_videojobs_alone(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer, clip: bytes,
    bucket: str,
) -> None:
    # This release's own VideoJobs carry its instance label...
    job_id = upload_as(api, user(dids), clip + b"\0\0").json()["jobId"]
    labels = k8s.get("videojob", job_id)["metadata"]["labels"]
    assert labels["video.atproto.dev/instance"] == INSTANCE
    # ...and one of another release in the same namespace is never touched: no finalizer,
    # no status, no worker Jobs (this operator would fail it as an unknown job).
    other = "f" * 40
    k8s.cluster.apply({
        "apiVersion": "video.atproto.dev/v1alpha1", "kind": "VideoJob",
        "metadata": {"name": other, "namespace": k8s.namespace,
                     "labels": {"video.atproto.dev/instance": "another-release"}},
        "spec": {"jobId": other, "did": "did:plc:abc",
                 "source": f"s3://{bucket}/{PREFIX}jobs/{other}/source"},
    })
    wait_for_job(api, job_id, timeout=400, logs=operator.logs)
    foreign = k8s.get("videojob", other)
    assert "status" not in foreign and not foreign["metadata"].get("finalizers"), foreign
    k8s.kubectl("delete", "videojob", other, "--timeout=30s")
