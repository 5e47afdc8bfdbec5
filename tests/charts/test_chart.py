"""The Helm chart: lint, schema, and what the rendered manifests promise operators."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from atproto_video.core.config import VideoConfig
from atproto_video.core.storage import open_storage
from atproto_video.operator.rbac import API_RULES, CLUSTER_RULES, OPERATOR_RULES
from atproto_video.operator.templates import job_manifest, worker_selector
from atproto_video.transcoder.contract import Target

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "atproto-video"
VALUES = [
    "--set", "serviceDid=did:web:video.example.com",
    "--set", "database.url=postgresql://video:pw@db:5432/video",
    "--set", "image.repository=registry.example.com/atproto-video",
    "--set", "storage.storageClassName=nfs",
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


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod the chart runs: the Deployments' templates and the helm test pods."""
    specs = {n: d["spec"]["template"]["spec"] for n, d in by_kind(docs, "Deployment").items()}
    specs.update({n: d["spec"] for n, d in by_kind(docs, "Pod").items()})
    return specs


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


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

    # Local storage: the claim on both Deployments and handed to the workers, nothing of S3.
    for name in ("rel-atproto-video-api", "rel-atproto-video-operator"):
        pod = deployments[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        claim = volumes["storage"]["persistentVolumeClaim"]["claimName"]
        assert claim == "rel-atproto-video-storage", name
        env = env_of(pod["containers"][0])
        assert env["VIDEO_STORAGE"] == "local" and env["VIDEO_STORAGE_DIR"] == "/storage", name
        assert not [k for k in env if k.startswith(("VIDEO_S3_", "VIDEO_PLAYBACK"))], name
        assert "envFrom" not in pod["containers"][0], name
    operator_env = env_of(
        deployments["rel-atproto-video-operator"]["spec"]["template"]["spec"]["containers"][0]
    )
    assert operator_env["VIDEO_WORKER_STORAGE_PVC"] == "rel-atproto-video-storage"


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


S3 = [
    *VALUES,
    "--set", "storage.type=s3",
    "--set", "storage.s3.bucket=videos",
    "--set", "storage.s3.prefix=video/",
    "--set", "storage.s3.endpoint=http://minio.minio:9000",
    "--set", "storage.s3.region=eu-west-1",
    "--set", "storage.s3.forcePathStyle=true",
    "--set", "playback.mode=proxy",
    "--set", "playback.baseUrl=https://cdn.example.com",
]  # fmt: skip
API = "rel-atproto-video-api"
OPERATOR = "rel-atproto-video-operator"


def test_s3_mode_has_no_shared_storage(helm: str) -> None:
    docs = render(helm, *S3, "--set", "storage.s3.existingSecret=video-s3")
    assert not by_kind(docs, "PersistentVolumeClaim")
    pods = pod_specs(docs)
    assert {API, OPERATOR, "rel-atproto-video-test-health"} <= set(pods)
    for name, pod in pods.items():
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume and "persistentVolumeClaim" not in volume, name
    for name in (API, OPERATOR):
        pod = pods[name]
        assert {v["name"]: v for v in pod["volumes"]} == {
            "scratch": {"name": "scratch", "emptyDir": {}},
            "tmp": {"name": "tmp", "emptyDir": {}},
        }, name
        container = pod["containers"][0]
        env = env_of(container)
        # The S3 backend stages under $VIDEO_DATA_DIR/scratch: that must be the scratch volume.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[f"{env['VIDEO_DATA_DIR']}/scratch"] == "scratch", name
        assert "storage" not in mounts.values(), name
        assert {k: env.get(k) for k in (
            "VIDEO_STORAGE", "VIDEO_S3_BUCKET", "VIDEO_S3_PREFIX", "VIDEO_S3_ENDPOINT",
            "VIDEO_S3_REGION", "VIDEO_S3_FORCE_PATH_STYLE", "VIDEO_PLAYBACK",
            "VIDEO_PLAYBACK_BASE_URL",
        )} == {
            "VIDEO_STORAGE": "s3",
            "VIDEO_S3_BUCKET": "videos",
            "VIDEO_S3_PREFIX": "video/",
            "VIDEO_S3_ENDPOINT": "http://minio.minio:9000",
            "VIDEO_S3_REGION": "eu-west-1",
            "VIDEO_S3_FORCE_PATH_STYLE": "true",
            "VIDEO_PLAYBACK": "proxy",
            "VIDEO_PLAYBACK_BASE_URL": "https://cdn.example.com",
        }, name  # fmt: skip
        assert "VIDEO_STORAGE_DIR" not in env, name
        assert not [k for k in env if k.startswith("VIDEO_WORKER_STORAGE_")], name
        assert container["envFrom"] == [{"secretRef": {"name": "video-s3"}}], name
    assert env_of(pods[OPERATOR]["containers"][0])["VIDEO_S3_CREDENTIALS_SECRET"] == "video-s3"
    # An existing Secret is used as is: the chart makes none.
    assert "rel-atproto-video-s3" not in by_kind(docs, "Secret")


def test_s3_keys_become_a_chart_secret(helm: str) -> None:
    docs = render(
        helm, *S3,
        "--set", "storage.s3.accessKeyId=AKIDEXAMPLE",
        "--set", "storage.s3.secretAccessKey=wJalrXUtnFEMI",
    )  # fmt: skip
    secret = by_kind(docs, "Secret")["rel-atproto-video-s3"]
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
    }
    pods = pod_specs(docs)
    for name in (API, OPERATOR):
        container = pods[name]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "rel-atproto-video-s3"}}], name
        env = env_of(container)
        assert "AKIDEXAMPLE" not in env.values() and "wJalrXUtnFEMI" not in env.values()
    operator_env = env_of(pods[OPERATOR]["containers"][0])
    assert operator_env["VIDEO_S3_CREDENTIALS_SECRET"] == "rel-atproto-video-s3"

    # existingSecret wins over plain keys.
    docs = render(
        helm, *S3,
        "--set", "storage.s3.existingSecret=video-s3",
        "--set", "storage.s3.accessKeyId=AKIDEXAMPLE",
        "--set", "storage.s3.secretAccessKey=wJalrXUtnFEMI",
    )  # fmt: skip
    assert "rel-atproto-video-s3" not in by_kind(docs, "Secret")
    operator = pod_specs(docs)[OPERATOR]["containers"][0]
    assert operator["envFrom"] == [{"secretRef": {"name": "video-s3"}}]


def test_s3_web_identity(helm: str) -> None:
    """No Secret: boto3's chain, with the IRSA role on the API and operator service accounts."""
    role = "arn:aws:iam::123456789012:role/video"
    docs = render(
        helm, *S3, "--set", f"serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn={role}"
    )
    accounts = by_kind(docs, "ServiceAccount")
    pods = pod_specs(docs)
    for name in (API, OPERATOR):
        assert accounts[name]["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
        assert pods[name]["serviceAccountName"] == name
        assert "envFrom" not in pods[name]["containers"][0], name
    operator_env = env_of(pods[OPERATOR]["containers"][0])
    assert "VIDEO_S3_CREDENTIALS_SECRET" not in operator_env
    # Worker pods run under the annotated worker account, so web identity reaches them too.
    worker = operator_env["VIDEO_WORKER_SERVICE_ACCOUNT"]
    assert accounts[worker]["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    assert accounts[worker]["automountServiceAccountToken"] is False
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert set(by_kind(docs, "Secret")) == {"rel-atproto-video-db", "rel-atproto-video-token-key"}


def test_s3_lint_and_schema(helm: str) -> None:
    ok = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *S3, "--set", "storage.s3.existingSecret=s3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for bad in (
        [*VALUES, "--set", "storage.type=s3"],  # no bucket
        [*VALUES, "--set", "storage.type=s3", "--set", "storage.s3.bucket="],
        [*VALUES, "--set", "storage.type=gcs"],
        [*S3, "--set", "storage.s3.bucket=Not_A_Bucket"],
        [*S3, "--set", "playback.mode=stream"],
        [*S3, "--set", "playback.baseUrl=cdn.example.com"],
    ):
        out = subprocess.run(
            [helm, "template", "rel", str(CHART), "--kube-version", "1.34.0", *bad],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    # A bucket is required only in s3 mode; local mode ignores storage.s3 entirely.
    docs = render(helm, *VALUES, "--set", "storage.s3.existingSecret=video-s3")
    for name in (API, OPERATOR):
        container = pod_specs(docs)[name]["containers"][0]
        assert "envFrom" not in container and env_of(container)["VIDEO_STORAGE"] == "local"
    assert by_kind(docs, "PersistentVolumeClaim")


def test_rbac_matches_the_plain_manifests(helm: str) -> None:
    """One set of rules, atproto_video.operator.rbac: the chart's Roles grant exactly what
    manifests/rbac.yaml (used by the host-process tests) grants, including
    videojobs/finalizers for blockOwnerDeletion. Both files are generated (tests/operator/
    test_crd.py checks they are up to date); this checks the template uses the chart's copy."""
    docs = render(helm, *VALUES)
    chart = by_kind(docs, "Role")
    manifests = [d for d in yaml.safe_load_all((ROOT / "manifests" / "rbac.yaml").read_text())
                 if d]
    plain = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "Role"}
    for component, rules in (("operator", OPERATOR_RULES), ("api", API_RULES)):
        expected = [r.manifest() for r in rules]
        assert chart[f"rel-atproto-video-{component}"]["rules"] == expected, component
        assert plain[f"atproto-video-{component}"]["rules"] == expected, component
    (cluster_role,) = by_kind(docs, "ClusterRole").values()
    (plain_cluster_role,) = [d for d in manifests if d["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == plain_cluster_role["rules"] == [
        r.manifest() for r in CLUSTER_RULES]
    operator_rules = chart["rel-atproto-video-operator"]["rules"]
    assert {"apiGroups": ["video.atproto.dev"], "resources": ["videojobs/finalizers"],
            "verbs": ["update"]} in operator_rules
    # The template lists no rule by hand: every rule comes from files/rbac-rules.yaml.
    template = (CHART / "templates" / "rbac.yaml").read_text()
    assert "apiGroups" not in template and "verbs" not in template


def test_host_network_pull_secrets_and_volume_ownership(helm: str) -> None:
    docs = render(helm, *VALUES, "--set", "api.hostNetwork=true",
                  "--set", "operator.hostNetwork=true", "--set", "operator.healthPort=18080",
                  "--set", "imagePullSecrets[0].name=regcred")
    pods = pod_specs(docs)
    for name in (API, OPERATOR):
        assert pods[name]["hostNetwork"] is True, name
        assert pods[name]["dnsPolicy"] == "ClusterFirstWithHostNet", name
        assert pods[name]["imagePullSecrets"] == [{"name": "regcred"}], name
        assert pods[name]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
    operator = pods[OPERATOR]["containers"][0]
    assert "http://0.0.0.0:18080/healthz" in operator["command"]
    assert env_of(operator)["VIDEO_WORKER_IMAGE_PULL_SECRETS"] == "regcred"
    assert env_of(operator)["VIDEO_WORKER_START_TIMEOUT_S"] == "600"
    assert env_of(operator)["VIDEO_K8S_VIDEOJOB_TTL_S"] == "86400"
    default = pod_specs(render(helm, *VALUES))
    assert "hostNetwork" not in default[API] and "imagePullSecrets" not in default[API]


def test_each_release_reconciles_only_its_own_videojobs(helm: str) -> None:
    pods = pod_specs(render(helm, *VALUES))
    for name in (API, OPERATOR):
        assert env_of(pods[name]["containers"][0])["VIDEO_K8S_INSTANCE"] == "rel", name


def test_defaults_that_would_never_run_fail_the_render(helm: str) -> None:
    base = ["--set", "serviceDid=did:web:video.example.com",
            "--set", "database.url=postgresql://video:pw@db:5432/video"]
    for extra, expected in (
        (["--set", "image.repository=registry.example.com/v"], "ReadWriteMany claim stays Pending"),
        (["--set", "storage.storageClassName=nfs"], "no registry serves"),
    ):
        out = subprocess.run([helm, "template", "rel", str(CHART), "--kube-version", "1.34.0",
                              *base, *extra],
                             capture_output=True, text=True)
        assert out.returncode != 0 and expected in out.stderr, out.stderr
    for fine in (["--set", "storage.type=s3", "--set", "storage.s3.bucket=videos"],
                 ["--set", "storage.existingClaim=video"],
                 ["--set", "storage.hostPath=/srv/video"]):
        render(helm, *base, "--set", "image.pullPolicy=Never", *fine)


def test_uninstall_drains_the_releases_videojobs_first(helm: str) -> None:
    docs = [d for d in render(helm, *VALUES)
            if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "pre-delete"]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "Job"}
    assert kinds["Role"]["rules"] == [{"apiGroups": ["video.atproto.dev"],
                                       "resources": ["videojobs"],
                                       "verbs": ["get", "list", "delete", "patch"]}]
    pod = kinds["Job"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["atproto-video", "operator", "--drain"]
    assert env_of(pod["containers"][0])["VIDEO_K8S_INSTANCE"] == "rel"
    assert pod["serviceAccountName"] == "rel-atproto-video-drain"
    # RBAC objects first (weight -10), then the Job.
    weights = {d["kind"]: int(d["metadata"]["annotations"]["helm.sh/hook-weight"]) for d in docs}
    assert weights["Job"] > weights["Role"] == weights["RoleBinding"]


def test_api_availability_pdb_spread_and_ingress(helm: str) -> None:
    docs = render(helm, *VALUES, "--set", "api.ingress.enabled=true",
                  "--set", "api.ingress.host=video.example.com")
    (pdb,) = by_kind(docs, "PodDisruptionBudget").values()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    spread = pod_specs(docs)[API]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname",
                                                  "topology.kubernetes.io/zone"]
    (ingress,) = by_kind(docs, "Ingress").values()
    assert ingress["spec"]["rules"][0]["host"] == "video.example.com"
    # 300 MB uploads pass the default ingress-nginx body limit (1 MB) and are streamed.
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "400m"
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert not by_kind(render(helm, *VALUES), "Ingress")


def test_the_operator_leaves_a_lost_node_sooner_than_the_default(helm: str) -> None:
    docs = render(helm, *VALUES, "--set", "operator.nodeLossTolerationSeconds=45")
    pod = by_kind(docs, "Deployment")["rel-atproto-video-operator"]["spec"]["template"]["spec"]
    assert {(t["key"], t["effect"], t["tolerationSeconds"]) for t in pod["tolerations"]} == {
        ("node.kubernetes.io/not-ready", "NoExecute", 45),
        ("node.kubernetes.io/unreachable", "NoExecute", 45),
    }


def worker_policy(docs: list[dict[str, Any]]) -> Any:
    (policy,) = by_kind(docs, "NetworkPolicy").values()
    return policy["spec"]


DNS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def test_worker_network_policy_selects_exactly_this_releases_workers(helm: str) -> None:
    spec = worker_policy(render(helm, *VALUES))
    selector = spec["podSelector"]["matchLabels"]
    assert selector == worker_selector("rel")
    # What the operator of release "rel" really puts on a worker pod (VIDEO_K8S_INSTANCE is the
    # release name, test_each_release_reconciles_only_its_own_videojobs).
    cfg = VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                                "VIDEO_STORAGE_DIR": "/srv/video", "VIDEO_K8S_INSTANCE": "rel"})
    job_id, target = "0123456789abcdef0123456789abcdef01234567", Target("720p", "720p", 1.0)
    job = job_manifest(cfg, job_id=job_id, did="did:plc:abc", target=target,
                       io=open_storage(cfg).worker_io(job_id, target.name),
                       owner_name=job_id, owner_uid="uid")
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    # No other pod of the release matches: the API, the operator and the test pods.
    for name, pod_labels in (
        [(n, d["spec"]["template"]["metadata"]["labels"])
         for n, d in by_kind(render(helm, *VALUES), "Deployment").items()]
        + [(n, d["metadata"].get("labels") or {})
           for n, d in by_kind(render(helm, *VALUES), "Pod").items()]
    ):
        assert not selector.items() <= pod_labels.items(), name


def test_worker_network_policy_local_storage_denies_everything(helm: str) -> None:
    spec = worker_policy(render(helm, *VALUES))
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert not spec.get("ingress") and not spec.get("egress")


def test_worker_network_policy_s3_allows_dns_and_the_endpoint_port(helm: str) -> None:
    spec = worker_policy(render(helm, *S3))  # endpoint http://minio.minio:9000
    assert spec["policyTypes"] == ["Ingress", "Egress"] and not spec.get("ingress")
    assert spec["egress"] == [DNS, {"ports": [{"protocol": "TCP", "port": 9000}]}]
    for endpoint, port in (("", 443), ("https://storage.googleapis.com", 443),
                           ("http://seaweed.video.svc", 80),
                           ("https://minio.example.com:8443/", 8443)):
        spec = worker_policy(render(helm, *S3, "--set", f"storage.s3.endpoint={endpoint}"))
        assert spec["egress"][1] == {"ports": [{"protocol": "TCP", "port": port}]}, endpoint


def test_worker_network_policy_s3_egress_is_used_verbatim(helm: str) -> None:
    rules = [{"to": [{"namespaceSelector": {"matchLabels": {
                 "kubernetes.io/metadata.name": "minio"}}},
                     {"ipBlock": {"cidr": "10.0.0.5/32"}}],
              "ports": [{"protocol": "TCP", "port": 9000}]}]
    spec = worker_policy(render(helm, *S3, "--set-json",
                                f"worker.networkPolicy.s3Egress={json.dumps(rules)}"))
    assert spec["egress"] == [DNS, *rules]


def test_worker_network_policy_can_be_disabled(helm: str) -> None:
    for values in (VALUES, S3):
        docs = render(helm, *values, "--set", "worker.networkPolicy.enabled=false")
        assert not by_kind(docs, "NetworkPolicy")


QUICKSTART = [a for a in VALUES if not a.startswith("database.url=")]
QUICKSTART = [
    a for i, a in enumerate(QUICKSTART) if not (a == "--set" and QUICKSTART[i + 1] == "--set")
]


def test_quickstart_postgres_is_off_by_default(helm: str) -> None:
    docs = render(helm, *VALUES)
    assert not by_kind(docs, "StatefulSet")
    assert "rel-atproto-video-postgresql" not in by_kind(docs, "Secret")
    api = pod_specs(docs)["rel-atproto-video-api"]
    assert api["initContainers"][0]["command"] == ["atproto-video", "migrate"]


def test_quickstart_postgres_statefulset_and_database_url(helm: str) -> None:
    docs = render(helm, *QUICKSTART, "--set", "postgresql.enabled=true")
    sts = by_kind(docs, "StatefulSet")["rel-atproto-video-postgresql"]
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "rel-atproto-video-postgresql"
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/library/postgres:15"
    assert "args" not in container  # the official image's own CMD
    env = {e["name"]: e for e in container["env"]}
    assert env["POSTGRES_USER"]["value"] == "video" and env["POSTGRES_DB"]["value"] == "video"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "rel-atproto-video-postgresql",
        "key": "password",
    }
    assert env["PGDATA"]["value"].startswith("/var/lib/postgresql/data/")
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"
    # The official image's uid, and the chart's restrictions otherwise.
    assert pod["securityContext"]["runAsUser"] == 999 and pod["securityContext"]["fsGroup"] == 999
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/postgresql/data", "/var/run/postgresql", "/tmp"} <= mounts
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    service = by_kind(docs, "Service")["rel-atproto-video-postgresql"]
    assert service["spec"]["clusterIP"] == "None"

    secrets = by_kind(docs, "Secret")
    kept = secrets["rel-atproto-video-postgresql"]
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    password = base64.b64decode(kept["data"]["password"]).decode()
    assert len(password) == 32 and password.isalnum()
    url = secrets["rel-atproto-video-db"]["stringData"]["url"]
    assert url == (
        f"postgresql://video:{password}@rel-atproto-video-postgresql.video.svc:5432/video"
    )
    # Both the API's migrate and the operator wait for it to accept connections.
    specs = pod_specs(docs)
    for name in ("rel-atproto-video-api", "rel-atproto-video-operator"):
        assert specs[name]["initContainers"][0]["command"] == [
            "atproto-video", "migrate", "--wait", "300",
        ]  # fmt: skip


def test_quickstart_postgres_on_the_loopback_cluster(helm: str) -> None:
    docs = render(
        helm, *QUICKSTART,
        "-f", str(CHART / "values-local.yaml"), "-f", str(CHART / "values-local-postgres.yaml"),
        "--set", "image.repository=localhost/atproto-video-worker",
    )  # fmt: skip
    sts = by_kind(docs, "StatefulSet")["rel-atproto-video-postgresql"]
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True
    assert container["image"] == "localhost/atproto-video-postgres:15"
    assert container["imagePullPolicy"] == "Never"
    assert container["args"] == ["postgres", "-c", "listen_addresses=127.0.0.1"]
    assert {"name": "PGPORT", "value": "15432"} in container["env"]
    data = next(v for v in pod["volumes"] if v["name"] == "data")
    assert data["hostPath"]["path"] == "/var/lib/atproto-video/chart-postgres"
    assert "volumeClaimTemplates" not in sts["spec"]
    url = by_kind(docs, "Secret")["rel-atproto-video-db"]["stringData"]["url"]
    assert "@127.0.0.1:15432/video" in url


def test_quickstart_postgres_refuses_conflicting_values(helm: str) -> None:
    cases = {
        "unset database.url and database.existingSecret": [
            *VALUES, "--set", "postgresql.enabled=true"],
        "postgresql.hostNetwork": [
            *QUICKSTART, "--set", "postgresql.enabled=true",
            "--set", "postgresql.hostNetwork=true"],
        "postgresql.image.pullPolicy=Never": [
            *QUICKSTART, "--set", "postgresql.enabled=true",
            "--set", "postgresql.image.repository=localhost/atproto-video-postgres"],
    }  # fmt: skip
    for message, args in cases.items():
        out = subprocess.run(
            [helm, "template", "rel", str(CHART), "--kube-version", "1.34.0", *args],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode != 0 and message in out.stderr, (args, out.stderr)


def test_did_refresh_interval_reaches_the_api_config(helm: str) -> None:
    docs = render(helm, *VALUES, "--set", "didRefreshIntervalSeconds=15")
    api = by_kind(docs, "Deployment")[API]["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in env_of(api).items() if k.startswith("VIDEO_") and v is not None}
    assert VideoConfig.from_env(env).service.did_refresh_interval_s == 15.0
    default = by_kind(render(helm, *VALUES), "Deployment")[API]
    assert env_of(default["spec"]["template"]["spec"]["containers"][0])[
        "VIDEO_DID_REFRESH_INTERVAL_S"] == "60"


def test_kind_values_render_what_kind_up_relies_on(helm: str) -> None:
    """values-kind.yaml alone (kind/up.sh adds only image.tag): no claim, no pull, everything
    the port mapping and the node without kube-proxy or CoreDNS need."""
    docs = render(helm, "-f", str(CHART / "values-kind.yaml"))
    assert not by_kind(docs, "PersistentVolumeClaim")
    specs = pod_specs(docs)
    for name, spec in specs.items():
        assert spec.get("hostNetwork") is True, name
        assert {c["imagePullPolicy"] for c in spec["containers"]} == {"Never"}, name
    api = by_kind(docs, "Deployment")["rel-atproto-video-api"]["spec"]["template"]["spec"]
    assert api["containers"][0]["ports"][0]["containerPort"] == 2585  # kind/config.yaml maps it
    operator = env_of(specs["rel-atproto-video-operator"]["containers"][0])
    assert operator["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert operator["VIDEO_WORKER_STORAGE_HOSTPATH"] == "/var/lib/atproto-video/storage"
    postgres = by_kind(docs, "StatefulSet")["rel-atproto-video-postgresql"]["spec"]
    assert postgres["template"]["spec"]["hostNetwork"] is True
    assert "volumeClaimTemplates" not in postgres
    config = (ROOT / "kind" / "config.yaml").read_text()
    assert "containerPort: 2585, hostPort: 30585" in config
