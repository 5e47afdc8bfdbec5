"""The operator's world on the test cluster, shared by tests/operator and bench/.

A namespace with the CRD and RBAC from manifests/, service-account kubeconfigs (so the
operator and API run with exactly their RBAC), the settings both share, and the operator as a
real process.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import Cluster
from tests.support.waiting import free_port, wait_healthy
from tests.support.xrpc import SERVICE_DID

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"


def load_manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def rbac_for(namespace: str) -> list[dict[str, Any]]:
    """manifests/rbac.yaml moved to ``namespace`` (cluster-scoped names get a suffix)."""
    docs = load_manifests("rbac.yaml")
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{namespace}"
        else:
            meta["namespace"] = namespace
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{namespace}"
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return docs


class K8sEnv:
    """A namespace prepared like a real install, plus kubeconfigs for its service accounts.

    As a context manager it sets up on entry and removes everything on exit, including what
    a setup that failed halfway had already created.
    """

    def __init__(self, kube_cluster: Cluster, workdir: Path) -> None:
        self.cluster = kube_cluster
        self.namespace = f"vt-{secrets.token_hex(4)}"
        self.workdir = workdir

    def __enter__(self) -> K8sEnv:
        try:
            return self.setup()
        except BaseException:
            self.teardown()
            raise

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.run("-n", self.namespace, *args, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def setup(self) -> K8sEnv:
        self.cluster.run("apply", "-f", str(MANIFESTS / "crd.yaml"))
        self.cluster.run("wait", "--for=condition=Established", "--timeout=60s",
                         "crd/videojobs.video.atproto.dev")
        self.cluster.run("create", "namespace", self.namespace)
        for doc in rbac_for(self.namespace):
            self.cluster.apply(doc)
        self.operator_kubeconfig = self._kubeconfig("atproto-video-operator")
        self.api_kubeconfig = self._kubeconfig("atproto-video-api")
        return self

    def _kubeconfig(self, account: str) -> Path:
        token = self.kubectl("create", "token", account, "--duration=3h").stdout.strip()
        admin = json.loads(self.cluster.run("config", "view", "--raw", "--minify",
                                            "-o", "json").stdout)
        cluster_entry = admin["clusters"][0]["cluster"]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": cluster_entry}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": account,
                                                      "namespace": self.namespace}}],
            "current-context": "test",
        }
        path = self.workdir / f"{account}.kubeconfig"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def teardown(self) -> None:
        try:
            self._teardown()
        except (AssertionError, subprocess.SubprocessError) as exc:
            print(f"namespace {self.namespace} not cleaned up: {exc}", file=sys.stderr)

    def _teardown(self) -> None:
        # Finalizers need the operator; whatever is left after it stopped is released here.
        for vj in self.get("videojobs").get("items", []):
            self.kubectl("patch", "videojob", vj["metadata"]["name"], "--type=merge",
                         "-p", '{"metadata":{"finalizers":null}}', check=False)
        self.cluster.run("delete", "namespace", self.namespace, "--wait=true",
                         "--timeout=120s", check=False)
        for doc in rbac_for(self.namespace):
            if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                self.cluster.run("delete", doc["kind"].lower(), doc["metadata"]["name"],
                                 "--ignore-not-found", check=False)


def stack_env(
    k8s: K8sEnv, *, db_url: str, storage_root: Path, worker_image: str, plc_url: str
) -> dict[str, str]:
    """The settings the API and the operator share in cluster mode."""
    return {
        "VIDEO_SERVICE_DID": SERVICE_DID,
        "VIDEO_DID_PLC_URL": plc_url,
        "VIDEO_ALLOW_PRIVATE_ENDPOINTS": "1",
        "VIDEO_EXECUTOR": "kubernetes",
        "VIDEO_TOKEN_KEY": base64.b64encode(os.urandom(32)).decode(),
        "VIDEO_DB_URL": db_url,
        "VIDEO_STORAGE_DIR": str(storage_root),
        "VIDEO_K8S_NAMESPACE": k8s.namespace,
        "VIDEO_K8S_RECONCILE_INTERVAL_S": "2",
        "VIDEO_WORKER_IMAGE": worker_image,
        "VIDEO_WORKER_PULL_POLICY": "Never",
        "VIDEO_WORKER_CPU_REQUEST": "100m",
        "VIDEO_WORKER_MEMORY_REQUEST": "128Mi",
        "VIDEO_WORKER_BACKOFF_LIMIT": "2",
        "VIDEO_LOG_LEVEL": "info",
    }


def operator_env(k8s: K8sEnv, shared: dict[str, str]) -> dict[str, str]:
    """``shared`` plus what only the operator gets: its own RBAC and data dir."""
    return {**shared, "KUBECONFIG": str(k8s.operator_kubeconfig),
            "VIDEO_DATA_DIR": str(k8s.workdir / "operator-data")}


class OperatorProcess:
    """``atproto-video operator`` as a real process; ready when its liveness probe answers."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.health_port = free_port()
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "operator.log"

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atproto_video.cli", "operator", "--liveness", url],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        wait_healthy(self.proc, url, timeout=timeout, logs=self.logs, interval=0.2)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
