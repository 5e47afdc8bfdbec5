"""Cluster fixtures for the operator tests: a namespace with the CRD and RBAC from manifests/,
service-account kubeconfigs (so the operator and API run with exactly their RBAC), and the
API and operator as real processes against a real Postgres.

The cluster and the worker image come from tests/support/cluster.py (same fixtures, so
VIDEO_SKIP_CLUSTER=1 skips loudly here too).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
SERVICE_DID = "did:web:video.test"


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
    """A namespace prepared like a real install, plus kubeconfigs for its service accounts."""

    def __init__(self, kube_cluster: Cluster, workdir: Path) -> None:
        self.cluster = kube_cluster
        self.namespace = f"vt-{secrets.token_hex(4)}"
        self.workdir = workdir

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


class OperatorProcess:
    """``atproto-video operator`` as a real process; ready when its liveness probe answers."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.health_port = free_port()
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "operator.log"

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atproto_video.cli", "operator",
             "--liveness", f"http://127.0.0.1:{self.health_port}/healthz"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited: {self.logs()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{self.health_port}/healthz"
                if httpx.get(url, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"operator not ready in {timeout}s: {self.logs()[-3000:]}")

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


@pytest.fixture(scope="module")
def k8s(cluster: Cluster) -> Iterator[K8sEnv]:
    workdir = Path(tempfile.mkdtemp(prefix="atproto-video-k8s-"))
    env = K8sEnv(cluster, workdir).setup()
    try:
        yield env
    finally:
        env.teardown()


@pytest.fixture(scope="module")
def storage_root() -> Iterator[Path]:
    """On the host disk, traversable by the worker's uid (pytest's tmp dirs are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="atproto-video-storage-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack_env(
    k8s: K8sEnv, postgres: PostgresServer, storage_root: Path, cluster_worker_image: str,
    dids: DidServer,
) -> dict[str, str]:
    """The settings the API and the operator share."""
    return {
        "VIDEO_SERVICE_DID": SERVICE_DID,
        "VIDEO_DID_PLC_URL": dids.url,
        "VIDEO_ALLOW_PRIVATE_ENDPOINTS": "1",
        "VIDEO_EXECUTOR": "kubernetes",
        "VIDEO_TOKEN_KEY": base64.b64encode(os.urandom(32)).decode(),
        "VIDEO_DB_URL": postgres.create_database(),
        "VIDEO_STORAGE_DIR": str(storage_root),
        "VIDEO_K8S_NAMESPACE": k8s.namespace,
        "VIDEO_K8S_RECONCILE_INTERVAL_S": "2",
        "VIDEO_WORKER_IMAGE": cluster_worker_image,
        "VIDEO_WORKER_PULL_POLICY": "Never",
        "VIDEO_WORKER_CPU_REQUEST": "100m",
        "VIDEO_WORKER_MEMORY_REQUEST": "128Mi",
        "VIDEO_WORKER_BACKOFF_LIMIT": "2",
        "VIDEO_LOG_LEVEL": "info",
    }


@pytest.fixture(scope="module")
def api(
    stack_env: dict[str, str], k8s: K8sEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("api"),
                         {**stack_env, "KUBECONFIG": str(k8s.api_kubeconfig)}).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def operator_env(stack_env: dict[str, str], k8s: K8sEnv) -> dict[str, str]:
    return {**stack_env, "KUBECONFIG": str(k8s.operator_kubeconfig),
            "VIDEO_DATA_DIR": str(k8s.workdir / "operator-data")}


@pytest.fixture(scope="module")
def operator(operator_env: dict[str, str], k8s: K8sEnv) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(k8s.workdir, operator_env).start()
    yield proc
    proc.stop()
