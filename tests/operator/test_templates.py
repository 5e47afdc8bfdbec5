"""Worker Job manifests: names, ownership, security and every site setting from config."""

from __future__ import annotations

import json
from typing import Any

from atproto_video.core.config import VideoConfig
from atproto_video.core.storage import open_storage
from atproto_video.operator.templates import dns_policy, job_manifest, job_name, worker_selector
from atproto_video.transcoder.contract import Target

JOB_ID = "0123456789abcdef0123456789abcdef01234567"


def config(**env: str) -> VideoConfig:
    return VideoConfig.from_env({"VIDEO_SERVICE_DID": "did:web:video.test",
                                 "VIDEO_STORAGE_DIR": "/srv/video", **env})


def render(cfg: VideoConfig, target: Target | None = None) -> dict[str, Any]:
    target = target or Target("720p", "720p", 1.0)
    return job_manifest(cfg, job_id=JOB_ID, did="did:plc:abc",
                        io=open_storage(cfg).worker_io(JOB_ID, target.name), target=target,
                        owner_name=JOB_ID, owner_uid="uid-1")


def test_names_are_deterministic_and_valid() -> None:
    names = {job_name(JOB_ID, t) for t in ("1080p", "720p", "480p", "240p", "mp4", "thumbnail")}
    assert len(names) == 6
    assert all(len(n) <= 63 and n == n.lower() for n in names)
    assert job_name(JOB_ID, "720p") == f"vj-{JOB_ID}-720p"


def test_defaults() -> None:
    job = render(config())
    meta, spec = job["metadata"], job["spec"]
    assert meta["name"] == f"vj-{JOB_ID}-720p"
    assert meta["labels"]["video.atproto.dev/job-id"] == JOB_ID
    assert meta["labels"]["video.atproto.dev/target"] == "720p"
    assert meta["ownerReferences"] == [{
        "apiVersion": "video.atproto.dev/v1alpha1", "kind": "VideoJob", "name": JOB_ID,
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
    assert spec["backoffLimit"] == 2
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == 600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [10]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["hostNetwork"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "nodeSelector" not in pod and "tolerations" not in pod
    (c,) = pod["containers"]
    assert c["image"] == "localhost/atproto-video-worker:0.1.0"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["args"] == [
        f"/storage/jobs/{JOB_ID}/source", f"/storage/jobs/{JOB_ID}/out", "--target", "720p",
        "--progress-file", f"/storage/jobs/{JOB_ID}/progress/720p.json",
        "--termination-log", "/dev/termination-log"]
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"},
                              "limits": {"cpu": "2", "memory": "2Gi"}}
    assert not any(e["name"].startswith("KUBERNETES_") for e in c["env"])
    # The worker reads the transcode section; its ffmpeg and ffprobe are the image's own.
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["VIDEO_MAX_DURATION_S"] == "600" and env["VIDEO_MAX_FPS"] == "60"
    assert "VIDEO_FFMPEG_PATH" not in env and "VIDEO_FFPROBE_PATH" not in env
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["storage"]["hostPath"] == {"path": "/srv/video", "type": "Directory"}
    assert "emptyDir" in volumes["tmp"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"/storage", "/tmp"}


def test_everything_site_specific_comes_from_config() -> None:
    tolerations = [{"key": "video", "operator": "Exists", "effect": "NoSchedule"}]
    cfg = config(
        VIDEO_WORKER_IMAGE="registry.example/worker:9", VIDEO_WORKER_PULL_POLICY="never",
        VIDEO_WORKER_HOST_NETWORK="true", VIDEO_WORKER_STORAGE_PVC="video-storage",
        VIDEO_WORKER_CPU_REQUEST="1", VIDEO_WORKER_CPU_LIMIT="3",
        VIDEO_WORKER_MEMORY_REQUEST="1Gi", VIDEO_WORKER_MEMORY_LIMIT="3Gi",
        VIDEO_WORKER_UID="2000", VIDEO_WORKER_GID="3000", VIDEO_WORKER_BACKOFF_LIMIT="5",
        VIDEO_WORKER_DEADLINE_S="99", VIDEO_WORKER_TTL_S="7",
        VIDEO_WORKER_NODE_SELECTOR="pool=video,zone=a",
        VIDEO_WORKER_TOLERATIONS=json.dumps(tolerations),
    )
    job = render(cfg, Target("thumbnail", "thumbnail", 1.0))
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert (c["image"], c["imagePullPolicy"]) == ("registry.example/worker:9", "Never")
    assert pod["hostNetwork"] is True
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "video-storage"}} in pod[
        "volumes"]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                              "limits": {"cpu": "3", "memory": "3Gi"}}
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        2000, 3000)
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"],
            spec["ttlSecondsAfterFinished"]) == (5, 99, 7)
    assert pod["nodeSelector"] == {"pool": "video", "zone": "a"}
    assert pod["tolerations"] == tolerations
    assert c["args"][2:4] == ["--target", "thumbnail"]
    assert job["metadata"]["name"].endswith("-thumbnail")


def test_hostpath_override() -> None:
    job = render(config(VIDEO_WORKER_STORAGE_HOSTPATH="/mnt/videos"))
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["hostPath"]["path"] == "/mnt/videos"


def test_workers_may_run_under_their_own_service_account_without_its_token() -> None:
    """IRSA / workload identity: the webhook projects a web-identity token for the account;
    the API token itself stays unmounted."""
    pod = render(config(VIDEO_WORKER_SERVICE_ACCOUNT="video-worker"))["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "video-worker"
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in render(config())["spec"]["template"]["spec"]


def test_image_pull_secrets_reach_worker_pods() -> None:
    pod = render(config(VIDEO_WORKER_IMAGE_PULL_SECRETS="regcred, other"))["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert "imagePullSecrets" not in render(config())["spec"]["template"]["spec"]


def test_worker_volumes_are_not_rechowned_at_every_start() -> None:
    assert render(config())["spec"]["template"]["spec"]["securityContext"][
        "fsGroupChangePolicy"] == "OnRootMismatch"


def test_worker_pods_carry_their_release_and_component() -> None:
    """The chart's worker NetworkPolicy selects worker_selector(release): every worker pod of
    that release carries those labels, and nothing else of the release is a worker."""
    job = render(config(VIDEO_K8S_INSTANCE="video-a"))
    selector = worker_selector("video-a")
    assert selector == {"app.kubernetes.io/name": "atproto-video",
                        "app.kubernetes.io/component": "worker",
                        "video.atproto.dev/instance": "video-a"}
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert selector.items() <= job["metadata"]["labels"].items()
    # Another release's workers are not selected; without an instance there is no label.
    other = render(config(VIDEO_K8S_INSTANCE="video-b"))["spec"]["template"]["metadata"]
    assert not selector.items() <= other["labels"].items()
    plain = render(config())["spec"]["template"]["metadata"]["labels"]
    assert "video.atproto.dev/instance" not in plain
    assert plain["app.kubernetes.io/component"] == "worker"


def test_only_workers_that_reach_an_object_store_use_cluster_dns() -> None:
    assert render(config())["spec"]["template"]["spec"]["dnsPolicy"] == "Default"
    s3 = {"VIDEO_STORAGE": "s3", "VIDEO_S3_BUCKET": "videos"}
    # The endpoint may be a Service name such as http://minio.minio:9000.
    assert dns_policy(config(**s3)) == "ClusterFirst"
    assert dns_policy(config(**s3, VIDEO_WORKER_HOST_NETWORK="true")) == "ClusterFirstWithHostNet"
