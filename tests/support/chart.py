"""A Helm release of charts/atproto-video on the test cluster, installed with the loopback
values the README documents (charts/atproto-video/values-local.yaml)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.tempdirs import host_tmpdir
from tests.support.waiting import free_port
from tests.support.xrpc import SERVICE_DID

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "atproto-video"
WORKER_UID = 10001


@dataclass
class Release:
    name: str
    namespace: str
    url: str
    storage: Path
    metrics: dict[str, str]
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

    def pods(self, jsonpath: str, *selectors: str) -> str:
        sel = ",".join((f"app.kubernetes.io/instance={self.name}", *selectors))
        return self.kubectl("get", "pods", "-l", sel, "-o", f"jsonpath={jsonpath}").stdout

    def diagnostics(self) -> str:
        pods = self.kubectl("get", "pods", "-o", "wide", check=False).stdout
        logs = "".join(self.kubectl("logs", f"deploy/{self.name}-atproto-video-{c}",
                                    "--tail=60", check=False).stdout for c in ("api", "operator"))
        return f"{pods}\n{logs}"


@contextmanager
def installed(
    cluster: Cluster, helm: str, image: str, dids: DidServer, *values: str, name: str = "video"
) -> Iterator[Release]:
    """``helm install`` into a fresh namespace (``values``: extra ``--set``/``-f`` arguments);
    uninstalled and the namespace deleted afterwards, whatever the tests did."""
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    tag = image.rsplit(":", 1)[1]
    port = free_port()
    metrics_ports = {"api": free_port(), "operator": free_port()}
    metrics = {role: f"http://127.0.0.1:{p}/metrics" for role, p in metrics_ports.items()}
    with host_tmpdir("atproto-video-chart-") as storage:
        os.chown(storage, WORKER_UID, WORKER_UID)
        rel = Release(name, namespace, f"http://127.0.0.1:{port}", storage, metrics, helm, cluster)
        # Helm never upgrades crds/: apply the chart's CRD first, as the README says.
        cluster.run("apply", "-f", str(CHART / "crds" / "videojob.yaml"))
        install = rel.helm_run(
            "install", rel.name, str(CHART), "--create-namespace", "--wait", "--timeout", "5m",
            "-f", str(CHART / "values-local.yaml"),
            "--set", f"image.tag={tag}",
            "--set", f"serviceDid={SERVICE_DID}",
            "--set", f"didPlcUrl={dids.url}",
            "--set", f"api.port={port}",
            "--set", f"operator.healthPort={free_port()}",
            "--set", f"storage.hostPath={storage}",
            "--set", f"metrics.port={metrics_ports['api']}",
            "--set", f"metrics.operatorPort={metrics_ports['operator']}",
            *values,
        )  # fmt: skip
        try:
            assert install.returncode == 0, install.stderr + rel.diagnostics()
            yield rel
        finally:
            rel.helm_run("uninstall", rel.name, "--wait", "--timeout", "3m")
            cluster.run("delete", "namespace", namespace, "--wait=false", check=False)
