"""The operator on a real cluster: API in cluster mode -> VideoJob -> worker Jobs -> COMPLETED.

Real processes (``atproto-video serve`` and ``atproto-video operator``, each with its own
service-account token and the RBAC from manifests/), real Postgres, real worker pods running
the worker image, storage on the host mounted into pods by hostPath.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from atproto_video.core.db import make_engine, video_job
from atproto_video.core.storage import LocalStorage
from tests.support.didserver import DidServer
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.media import make_clip
from tests.support.service import ServiceProcess, assert_monotonic
from tests.support.waiting import wait_for
from tests.support.xrpc import upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]

LABEL = "video.atproto.dev/job-id"
# 1280x720 -> renditions 720p and 480p, plus the MP4 and the thumbnail.
TARGETS_720 = {"720p", "480p", "mp4", "thumbnail"}
FINISHED: dict[str, str] = {}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("media")
    return {
        "short": make_clip(d / "short.mp4", seconds=3, size="1280x720").read_bytes(),
        "long": make_clip(d / "long.mp4", seconds=20, size="1280x720").read_bytes(),
    }


@pytest.fixture(scope="module")
def db(stack_env: dict[str, str]) -> Iterator[Callable[[str], dict[str, Any]]]:
    engine = make_engine(stack_env["VIDEO_DB_URL"])

    def row(job_id: str) -> dict[str, Any]:
        with engine.connect() as conn:
            found = conn.execute(select(video_job).where(video_job.c.id == job_id)).mappings()
            return dict(found.one())

    yield row
    engine.dispose()


def submit(api: ServiceProcess, dids: DidServer, body: bytes, ctype: str = "video/mp4") -> str:
    """Upload as a fresh user; the job id."""
    resp = upload_as(api, user(dids), body, ctype=ctype)
    assert resp.status_code == 200, resp.text
    job_id: str = resp.json()["jobId"]
    return job_id


def worker_jobs(k8s: K8sEnv, job_id: str) -> dict[str, dict[str, Any]]:
    items = k8s.get("jobs", "-l", f"{LABEL}={job_id}")["items"]
    return {j["metadata"]["labels"]["video.atproto.dev/target"]: j for j in items}


def test_rbac_is_least_privilege(k8s: K8sEnv) -> None:
    def can(account: str, *args: str) -> bool:
        proc = k8s.kubectl("auth", "can-i", *args,
                           f"--as=system:serviceaccount:{k8s.namespace}:{account}", check=False)
        return proc.stdout.strip() == "yes"

    op = "atproto-video-operator"
    assert can(op, "create", "jobs.batch")
    assert can(op, "patch", "videojobs.video.atproto.dev/status")
    assert can(op, "list", "pods")
    assert can(op, "watch", "jobs.batch") and not can(op, "watch", "pods")
    assert not can(op, "create", "pods")
    assert not can(op, "delete", "pods")
    assert not can(op, "get", "secrets")
    # Finished VideoJobs expire (VIDEO_K8S_VIDEOJOB_TTL_S); owner references may block deletion.
    assert can(op, "delete", "videojobs.video.atproto.dev")
    assert can(op, "update", "videojobs.video.atproto.dev", "--subresource=finalizers")
    assert not can(op, "create", "jobs.batch", "-n", "default")
    api_sa = "atproto-video-api"
    assert can(api_sa, "create", "videojobs.video.atproto.dev")
    assert not can(api_sa, "create", "jobs.batch")
    assert not can(api_sa, "list", "pods")


def test_upload_completes_with_one_job_per_target(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    clips: dict[str, bytes], db: Callable[[str], dict[str, Any]], storage_root: Path,
) -> None:
    t0 = time.monotonic()
    job_id = submit(api, dids, clips["short"])
    st, seen = wait_for_job(api, job_id, timeout=300, logs=operator.logs)
    elapsed = time.monotonic() - t0
    assert st["state"] == "JOB_STATE_COMPLETED", (st, operator.logs()[-4000:])
    assert st["blob"]["ref"]["$link"].startswith("bafkrei")
    assert_monotonic(seen)
    assert any(s == "JOB_STATE_ENCODING" and 0 < p < 100 for s, p in seen), seen
    print(f"\nupload -> COMPLETED in {elapsed:.1f}s")

    # Exactly one Job per target, each succeeded once, owned by the VideoJob.
    jobs = worker_jobs(k8s, job_id)
    assert set(jobs) == TARGETS_720
    vj = k8s.get("videojob", job_id)
    for target, job in jobs.items():
        assert job["metadata"]["name"] == f"vj-{job_id}-{target}"
        assert job["status"].get("succeeded") == 1
        (owner,) = job["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"]) == ("VideoJob", vj["metadata"]["uid"])
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True

    # The CR mirrors Postgres, with per-rendition progress 100 in both.
    vj_status = vj["status"]
    assert vj_status["state"] == "JOB_STATE_COMPLETED" and vj_status["progress"] == 100
    assert {k: (v["progress"], v["outcome"]) for k, v in vj_status["renditions"].items()} == {
        t: (100, "Succeeded") for t in TARGETS_720}
    conds = {c["type"]: c for c in vj_status["conditions"]}
    assert conds["Completed"]["status"] == "True" and conds["Failed"]["status"] == "False"
    assert all(c["observedGeneration"] == vj["metadata"]["generation"] for c in conds.values())
    row = db(job_id)
    assert row["state"] == "JOB_STATE_COMPLETED" and row["executor"] == "kubernetes"
    assert {k: v["progress"] for k, v in row["details"]["renditions"].items()} == dict.fromkeys(
        TARGETS_720, 100)
    assert row["cid"] == vj_status["cid"] == st["blob"]["ref"]["$link"]

    out = storage_root / "jobs" / job_id / "out"
    master = (out / "playlist.m3u8").read_text()
    assert "720p/video.m3u8" in master and "480p/video.m3u8" in master
    for name in ("720p/video.m3u8", "480p/video.m3u8", "thumbnail.jpg", "video.mp4"):
        assert (out / name).stat().st_size > 0, name
    assert not (storage_root / "jobs" / job_id / "source").exists()

    table = k8s.kubectl("get", "videojobs").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "STATE", "PROGRESS", "DONE", "REASON", "DID", "AGE"], table
    line = next(li for li in table.splitlines() if li.startswith(job_id)).split()
    # REASON is empty for a completed job, so the split row has one field less.
    assert line[1:5] == ["JOB_STATE_COMPLETED", "100", "4/4", row["did"]]
    wide = k8s.kubectl("get", "videojobs", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-2:] == ["STARTED", "COMPLETED"], wide
    assert job_id in k8s.kubectl("get", "vj").stdout
    FINISHED["short"] = job_id


def test_operator_killed_mid_job_creates_no_duplicates(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    clips: dict[str, bytes],
) -> None:
    job_id = submit(api, dids, clips["long"])
    wait_for_job(api, job_id, lambda s: s["state"] == "JOB_STATE_ENCODING"
                 and s.get("progress", 0) > 0, timeout=300, logs=operator.logs)
    before = {t: j["metadata"]["uid"] for t, j in worker_jobs(k8s, job_id).items()}
    assert set(before) == TARGETS_720
    operator.kill()
    time.sleep(3)
    operator.start()
    st, seen = wait_for_job(api, job_id, timeout=300, logs=operator.logs)
    assert st["state"] == "JOB_STATE_COMPLETED", st
    after = {t: j["metadata"]["uid"] for t, j in worker_jobs(k8s, job_id).items()}
    assert after == before, "the restarted operator replaced or duplicated worker Jobs"
    assert_monotonic(seen)


def _worker_pids(job_id: str, target: str) -> list[int]:
    """Host PIDs of the worker container's main process for one target of one job."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (b"transcode" in b" ".join(argv[:3]) and any(job_id.encode() in a for a in argv)
                and target.encode() in argv and b"--target" in argv
                and not argv[0].endswith(b"ffmpeg")):
            pids.append(int(entry.name))
    return pids


def test_killed_worker_pod_is_retried(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    clips: dict[str, bytes], storage_root: Path,
) -> None:
    job_id = submit(api, dids, clips["long"])
    storage = LocalStorage(storage_root)

    def encoding_worker() -> list[int] | None:
        pids = _worker_pids(job_id, "720p")
        return pids if pids and (storage.read_progress(job_id, "720p") or 0) > 0 else None

    pids = wait_for(encoding_worker, timeout=180, interval=0.2,
                    what=lambda: f"a running 720p worker\n{operator.logs()[-3000:]}")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    st, seen = wait_for_job(api, job_id, timeout=300, logs=operator.logs)
    assert st["state"] == "JOB_STATE_COMPLETED", st
    job = worker_jobs(k8s, job_id)["720p"]
    assert job["status"].get("failed", 0) >= 1 and job["status"].get("succeeded") == 1
    assert_monotonic(seen)


def test_non_video_fails_validation(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    db: Callable[[str], dict[str, Any]],
) -> None:
    """The API probes before it hands a job to the cluster: a non-video never gets a
    VideoJob or a pod (the operator's own ValidationFailed path is in test_reconcile)."""
    job_id = submit(api, dids, b"this is not a video\n" * 200, ctype="text/plain")
    st, _ = wait_for_job(api, job_id, timeout=60, logs=operator.logs)
    assert st["state"] == "JOB_STATE_FAILED"
    assert st["failureCode"] == "validation_failure" and st["error"]
    assert worker_jobs(k8s, job_id) == {}, "a rejected upload must not start workers"
    names = {vj["metadata"]["name"] for vj in k8s.get("videojobs")["items"]}
    assert job_id not in names
    assert db(job_id)["failure_code"] == "validation_failure"


def test_missing_image_fails_with_a_named_reason(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    clips: dict[str, bytes],
) -> None:
    image = operator.env["VIDEO_WORKER_IMAGE"]
    operator.stop()
    operator.env["VIDEO_WORKER_IMAGE"] = "localhost/atproto-video-worker:does-not-exist"
    operator.start()
    try:
        job_id = submit(api, dids, clips["short"] + b"\0")  # distinct bytes, same video
        st, _ = wait_for_job(api, job_id, timeout=120, logs=operator.logs)
    finally:
        operator.stop()
        operator.env["VIDEO_WORKER_IMAGE"] = image
        operator.start()
    assert st["state"] == "JOB_STATE_FAILED"
    assert st["failureCode"] == "generic_failure"
    assert "ErrImageNeverPull" in st["error"] and "does-not-exist" in st["error"]
    conds = {c["type"]: c for c in k8s.get("videojob", job_id)["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "ErrImageNeverPull"
    # Leftover workers of a failed job are removed.
    wait_for(lambda: worker_jobs(k8s, job_id) == {}, timeout=30, interval=0.5,
             what="leftover worker Jobs removed")


def test_out_of_memory_worker_fails_with_a_named_reason(
    api: ServiceProcess, operator: OperatorProcess, k8s: K8sEnv, dids: DidServer,
    clips: dict[str, bytes],
) -> None:
    saved = {k: operator.env[k] for k in ("VIDEO_WORKER_MEMORY_REQUEST",
                                          "VIDEO_WORKER_BACKOFF_LIMIT")}
    operator.stop()
    # Far below what ffmpeg needs to encode 720p: the kernel's OOM killer ends the container.
    operator.env.update(VIDEO_WORKER_MEMORY_REQUEST="24Mi", VIDEO_WORKER_MEMORY_LIMIT="24Mi",
                        VIDEO_WORKER_BACKOFF_LIMIT="0")
    operator.start()
    try:
        job_id = submit(api, dids, clips["short"] + b"\0oom")  # distinct bytes, same video
        st, _ = wait_for_job(api, job_id, timeout=240, logs=operator.logs)
    finally:
        operator.stop()
        operator.env.pop("VIDEO_WORKER_MEMORY_LIMIT", None)
        operator.env.update(saved)
        operator.start()
    assert st["state"] == "JOB_STATE_FAILED", st
    assert st["failureCode"] == "encoding_failure"
    assert "OOMKilled" in st["error"] or "memory" in st["error"].lower(), st["error"]
    conds = {c["type"]: c for c in k8s.get("videojob", job_id)["status"]["conditions"]}
    assert conds["Failed"]["reason"] == "OOMKilled", conds["Failed"]


def test_job_is_not_lost_when_the_api_cannot_reach_kubernetes(
    stack_env: dict[str, str], operator: OperatorProcess, dids: DidServer,
    clips: dict[str, bytes], k8s: K8sEnv, tmp_path: Path,
) -> None:
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: "
        "{server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: "
        "{cluster: c, user: u}}]\ncurrent-context: c\n")
    api = ServiceProcess(tmp_path / "api", {**stack_env, "KUBECONFIG": str(dead)}).start()
    try:
        job_id = submit(api, dids, clips["short"])
        st, _ = wait_for_job(api, job_id, timeout=300, logs=operator.logs)
        assert st["state"] == "JOB_STATE_COMPLETED", st
        assert "could not create the VideoJob" in api.logs()
        assert "created missing VideoJob" in operator.logs()
        assert set(worker_jobs(k8s, job_id)) == TARGETS_720
    finally:
        api.stop()


def test_deleting_a_completed_videojob_removes_its_jobs_but_keeps_the_video(
    k8s: K8sEnv, operator: OperatorProcess, storage_root: Path,
) -> None:
    job_id = FINISHED.get("short")
    if job_id is None:
        pytest.skip("needs the completed job of test_upload_completes_with_one_job_per_target")
    out = storage_root / "jobs" / job_id / "out"
    assert (out / "video.mp4").exists()
    k8s.kubectl("delete", "videojob", job_id, "--timeout=60s")
    # The published video stays playable; only the processing record goes.
    assert (out / "video.mp4").exists() and (out / "playlist.m3u8").exists()
    assert not (storage_root / "jobs" / job_id / "source").exists()
    wait_for(lambda: worker_jobs(k8s, job_id) == {}, timeout=60, interval=0.5,
             what="owner references should garbage-collect the Jobs")
