"""The rendered chart is accepted by a real API server (schemas, RBAC objects, CRD)."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from tests.charts.test_chart import CHART, VALUES
from tests.support.cluster import Cluster

pytestmark = pytest.mark.cluster


def test_chart_passes_server_side_dry_run(cluster: Cluster, helm: str) -> None:
    namespace = f"chart-{uuid.uuid4().hex[:8]}"
    cluster.run("create", "namespace", namespace)
    try:
        rendered = subprocess.run(
            [helm, "template", "rel", str(CHART), "--kube-version", "1.34.0",
             "--namespace", namespace, *VALUES],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        out = cluster.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=rendered)
        for kind in ("deployment.apps/rel-atproto-video-api", "role.rbac", "secret/", "pod/"):
            assert kind in out.stdout
        crd = (CHART / "crds" / "videojob.yaml").read_text()
        cluster.run("apply", "--dry-run=server", "-f", "-", input=crd)
    finally:
        cluster.run("delete", "namespace", namespace, "--wait=false", check=False)
