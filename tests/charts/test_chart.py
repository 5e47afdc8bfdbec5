"""The Helm chart: lint, schema, and what the rendered manifests promise operators."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "atproto-video"
VALUES = [
    "--set", "serviceDid=did:web:video.example.com",
    "--set", "database.url=postgresql://video:pw@db:5432/video",
]  # fmt: skip


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm, "template", "rel", str(CHART), "--namespace", "video", "--include-crds",
         "--kube-version", "1.34.0", *args],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_lint(helm: str) -> None:
    ok = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *VALUES], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_schema_refuses_bad_values(helm: str) -> None:
    for bad in (
        [],  # no serviceDid, no database
        ["--set", "serviceDid=video.example.com", "--set", "database.url=postgresql://x"],
        [*VALUES, "--set", "image.pullPolicy=Sometimes"],
        [*VALUES, "--set", "limits.maxFps=1000"],
    ):
        out = subprocess.run(
            [helm, "template", "rel", str(CHART), *bad], capture_output=True, text=True
        )
        assert out.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in out.stderr or (
            "required" in out.stderr
        )


def test_rendered_manifests(helm: str) -> None:
    docs = render(helm, *VALUES)
    crds = by_kind(docs, "CustomResourceDefinition")
    assert list(crds) == ["videojobs.video.atproto.dev"]
    assert (CHART / "crds" / "videojob.yaml").read_text() == (
        ROOT / "manifests" / "crd.yaml"
    ).read_text(), "charts/atproto-video/crds is a copy of manifests/crd.yaml"

    deployments = by_kind(docs, "Deployment")
    operator = deployments["rel-atproto-video-operator"]["spec"]
    assert operator["replicas"] == 1 and operator["strategy"] == {"type": "Recreate"}
    api = deployments["rel-atproto-video-api"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in api["containers"][0]["env"]}
    assert env["VIDEO_EXECUTOR"]["value"] == "kubernetes"
    assert env["VIDEO_SERVICE_DID"]["value"] == "did:web:video.example.com"
    assert env["VIDEO_DB_URL"]["valueFrom"]["secretKeyRef"]["name"] == "rel-atproto-video-db"
    assert "value" not in env["VIDEO_TOKEN_KEY"]  # secrets only by reference
    assert api["initContainers"][0]["command"] == ["atproto-video", "migrate"]

    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/storage", "/tmp"} <= mounts

    secrets = by_kind(docs, "Secret")
    assert set(secrets) == {"rel-atproto-video-db", "rel-atproto-video-token-key"}
    roles = by_kind(docs, "Role")
    api_rules = roles["rel-atproto-video-api"]["rules"]
    assert api_rules == [
        {"apiGroups": ["video.atproto.dev"], "resources": ["videojobs"], "verbs": ["create"]}
    ]
    pods = by_kind(docs, "Pod")
    test_pod = pods["rel-atproto-video-test-health"]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert by_kind(docs, "PersistentVolumeClaim")


def test_single_node_settings(helm: str) -> None:
    docs = render(
        helm, *VALUES,
        "--set", "storage.hostPath=/var/lib/video",
        "--set", "kubernetesServiceOverride.host=127.0.0.1",
        "--set", "kubernetesServiceOverride.port=6443",
        "--set", "worker.nodeSelector.disk=fast",
    )  # fmt: skip
    assert not by_kind(docs, "PersistentVolumeClaim")
    operator = by_kind(docs, "Deployment")["rel-atproto-video-operator"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in operator["containers"][0]["env"]}
    assert env["VIDEO_WORKER_STORAGE_HOSTPATH"] == "/var/lib/video"
    assert (
        env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "6443"
    )
    assert env["VIDEO_WORKER_NODE_SELECTOR"] == "disk=fast"
    assert operator["volumes"][0]["hostPath"]["path"] == "/var/lib/video"
