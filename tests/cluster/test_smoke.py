"""End to end on the real cluster: the Job controller runs the worker image for one rendition."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.rendition import WORKER_UID, check_hls_rendition, prepare_workdir
from tests.support.cluster import Cluster
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(3600)]


def transcode_job(name: str, image: str, work: Path, target: str) -> dict[str, Any]:
    """A Job shaped like the operator's: hostNetwork, no pulls, non-root, read-only root."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "smoke"}},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": "smoke"}},
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "Default",
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": WORKER_UID,
                        "runAsGroup": WORKER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "transcode",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "args": [
                                "/work/in/clip.mp4",
                                "/work/out",
                                "--target",
                                target,
                                "--progress-file",
                                "/work/out/progress.json",
                                "--termination-log",
                                "/dev/termination-log",
                            ],
                            "securityContext": {
                                "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "resources": {
                                "limits": {"memory": "1Gi"},
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                            },
                            "volumeMounts": [
                                {"name": "work", "mountPath": "/work"},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "work", "hostPath": {"path": str(work), "type": "Directory"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                    ],
                },
            },
        },
    }


def wait_finished(cluster: Cluster, name: str, timeout: float = 600) -> dict[str, Any]:
    """The Kubernetes Job ``name`` once Complete or Failed."""
    last: dict[str, Any] = {}

    def finished() -> dict[str, Any] | None:
        last.update(cluster.get_json("job", name))
        for cond in last.get("status", {}).get("conditions", []):
            if cond["status"] == "True" and cond["type"] in ("Complete", "Failed"):
                return last
        return None

    return wait_for(finished, timeout=timeout, interval=1,
                    what=lambda: f"job {name} finished: {last.get('status')}")


def test_worker_job_transcodes_480p(
    cluster: Cluster, cluster_worker_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    node = cluster.get_json("node", "127.0.0.1")
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"

    work = prepare_workdir(tmp_path_factory, "cluster-480p")
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    cluster.apply(transcode_job(name, cluster_worker_image, work, "480p"))
    try:
        job = wait_finished(cluster, name)
        pods = cluster.get_json("pods", "-l", f"job-name={name}")["items"]
        conditions = {c["type"]: c for c in job["status"].get("conditions", [])}
        if "Complete" not in conditions:
            logs = cluster.run("logs", f"job/{name}", check=False).stdout
            states = [p["status"].get("containerStatuses") for p in pods]
            raise AssertionError(f"job {name} failed: {conditions}\nlogs:\n{logs}\n{states}")
        assert job["status"]["succeeded"] == 1
        # The pod was created by the Job controller and ran on our node as the worker uid.
        assert len(pods) == 1
        pod = pods[0]
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
        assert pod["spec"]["nodeName"] == "127.0.0.1"
        assert pod["status"]["phase"] == "Succeeded"
        state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert state["exitCode"] == 0
        check_hls_rendition(work / "out", "480p", 480)
        assert (work / "out" / "480p" / "video.m3u8").stat().st_uid == WORKER_UID
    finally:
        cluster.run(
            "delete",
            "job",
            name,
            "--wait=true",
            "--cascade=foreground",
            "--timeout=120s",
            check=False,
        )
