"""The chart's ``helm test`` pods: where they reach the API and when the upload test runs."""

from __future__ import annotations

import subprocess

from tests.charts.test_chart import CHART, VALUES, by_kind, render

LOCAL = ["-f", str(CHART / "values-local.yaml"), "--set", "serviceDid=did:web:video.test",
         "--set", "database.url=postgresql://video:pw@127.0.0.1:5432/video"]  # fmt: skip


def test_by_default_helm_test_checks_readiness_through_the_service(helm: str) -> None:
    pods = by_kind(render(helm, *VALUES), "Pod")
    assert set(pods) == {"rel-atproto-video-test-health"}
    spec = pods["rel-atproto-video-test-health"]["spec"]
    assert "hostNetwork" not in spec and "affinity" not in spec
    assert "http://rel-atproto-video:80/xrpc/_health" in spec["containers"][0]["command"][2]


def test_on_the_loopback_values_helm_test_uploads_a_clip_next_to_the_api(helm: str) -> None:
    pods = by_kind(render(helm, *LOCAL, "--set", "api.port=2999"), "Pod")
    upload = pods["rel-atproto-video-test-upload"]
    notes = upload["metadata"]["annotations"]
    assert notes["helm.sh/hook"] == "test"
    assert notes["helm.sh/hook-output-log-policy"] == "hook-succeeded,hook-failed"
    spec = upload["spec"]
    assert spec["containers"][0]["command"] == [
        "atproto-video", "try-upload", "http://127.0.0.1:2999",
        "--service-did", "did:web:video.test", "--timeout", "600",
    ]  # fmt: skip
    for pod in pods.values():
        # On the host network of a node that runs an API pod: 127.0.0.1 is that API.
        assert pod["spec"]["hostNetwork"] is True
        term = pod["spec"]["affinity"]["podAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"][0]  # fmt: skip
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
        assert pod["spec"]["automountServiceAccountToken"] is False
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "http://127.0.0.1:2999/xrpc/_health" in (
        pods["rel-atproto-video-test-health"]["spec"]["containers"][0]["command"][2]
    )
    # ffmpeg writes the clip under /tmp on a read-only root filesystem.
    assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]


def test_the_upload_test_without_a_host_network_api_fails_the_render(helm: str) -> None:
    out = subprocess.run(
        [helm, "template", "rel", str(CHART), "--kube-version", "1.34.0", *VALUES,
         "--set", "tests.upload.enabled=true"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "tests.upload" in out.stderr and "api.hostNetwork=true" in out.stderr
