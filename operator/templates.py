"""Kubernetes Job manifests for the worker: one Job per target (rendition, thumbnail, mp4).

Everything site-specific (image, pull policy, network, storage volume, resources, scheduling)
comes from :class:`atproto_video.core.config.VideoConfig`. Names are derived from the job id and the
target, so creating a Job twice (an operator restart) finds the first one instead of adding a
second (create-or-get in :mod:`atproto_video.core.kube`).

Workers never talk to the Kubernetes API: no service-account token, no service links, no
``KUBERNETES_SERVICE_HOST`` override. They report progress by rewriting a small JSON file on
the shared storage (or one object per target in S3) that the operator polls, and report
failure through the termination log.
Where the source, the outputs and the progress file are, and which volume holds them, is the
storage backend's answer (:meth:`Storage.worker_io`).
"""

from __future__ import annotations

from typing import Any

from atproto_video.core.config import VideoConfig
from atproto_video.core.kube import API_VERSION, GROUP, KIND, LABEL_INSTANCE, videojob_name
from atproto_video.core.storage import WorkerIO
from atproto_video.transcoder.contract import EXIT_VALIDATION, Target

CONTAINER = "transcode"
#: Settings the worker image decides itself.
WORKER_OWN = ("VIDEO_FFMPEG_PATH", "VIDEO_FFPROBE_PATH")
TERMINATION_LOG = "/dev/termination-log"

LABEL_JOB_ID = f"{GROUP}/job-id"
LABEL_TARGET = f"{GROUP}/target"
COMMON_LABELS = {
    "app.kubernetes.io/name": "atproto-video",
    "app.kubernetes.io/component": "worker",
    "app.kubernetes.io/managed-by": "atproto-video-operator",
}


def job_name(job_id: str, target: str) -> str:
    """``vj-<videojob name>-<target>``: at most 3 + 40 + 1 + 9 = 53 characters."""
    return f"vj-{videojob_name(job_id)}-{target.lower()}"


def worker_selector(instance: str) -> dict[str, str]:
    """Labels on every worker pod of one release (``VIDEO_K8S_INSTANCE``) and on no other pod.

    The chart's worker NetworkPolicy selects exactly these (tests/charts compares the two).
    """
    return {
        "app.kubernetes.io/name": COMMON_LABELS["app.kubernetes.io/name"],
        "app.kubernetes.io/component": COMMON_LABELS["app.kubernetes.io/component"],
        **({LABEL_INSTANCE: instance} if instance else {}),
    }


def job_labels(job_id: str, target: str, instance: str = "") -> dict[str, str]:
    return {**COMMON_LABELS, **worker_selector(instance), LABEL_JOB_ID: videojob_name(job_id),
            LABEL_TARGET: target.lower()}


def selector(job_id: str) -> str:
    return f"{LABEL_JOB_ID}={videojob_name(job_id)}"


def dns_policy(cfg: VideoConfig) -> str:
    """Workers on a shared volume resolve nothing, so they skip cluster DNS; S3 workers must
    resolve the endpoint, which may be a Service name (http://minio.minio:9000)."""
    if cfg.storage.type != "s3":
        return "Default"
    return "ClusterFirstWithHostNet" if cfg.kube.worker_host_network else "ClusterFirst"


def job_manifest(
    cfg: VideoConfig,
    *,
    job_id: str,
    did: str,
    io: WorkerIO,
    target: Target,
    owner_name: str,
    owner_uid: str,
) -> dict[str, Any]:
    """The batch/v1 Job for one target of one VideoJob, owned by it (GC on deletion)."""
    labels = job_labels(job_id, target.name, cfg.kube.instance)
    annotations = {f"{GROUP}/did": did}
    args = [
        io.source,
        io.out_dir,
        "--target", target.cli,
        *target.args,
        "--progress-file", io.progress_file,
        "--termination-log", TERMINATION_LOG,
    ]
    # The transcode section, as the worker reads it; ffmpeg and ffprobe are the image's own.
    env = [{"name": name, "value": value} for name, value in cfg.transcode.to_env().items()
           if name not in WORKER_OWN]
    env += io.env
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": cfg.kube.worker_host_network,
        "dnsPolicy": dns_policy(cfg),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": cfg.kube.worker_uid,
            "runAsGroup": cfg.kube.worker_gid,
            "fsGroup": cfg.kube.worker_gid,
            # No recursive chown of a big volume at each worker start.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": cfg.kube.worker_image,
                "imagePullPolicy": cfg.kube.worker_pull_policy,
                "args": args,
                "env": env,
                **({"envFrom": io.env_from} if io.env_from else {}),
                "resources": {
                    "requests": {"cpu": cfg.kube.worker_cpu_request,
                                 "memory": cfg.kube.worker_memory_request},
                    "limits": {"cpu": cfg.kube.worker_cpu_limit,
                               "memory": cfg.kube.worker_memory_limit},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [*io.mounts, {"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [*io.volumes, {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if cfg.kube.worker_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in cfg.kube.worker_image_pull_secrets]
    if cfg.kube.worker_service_account:
        pod_spec["serviceAccountName"] = cfg.kube.worker_service_account
    if cfg.kube.worker_node_selector:
        pod_spec["nodeSelector"] = dict(cfg.kube.worker_node_selector)
    if cfg.kube.worker_tolerations:
        pod_spec["tolerations"] = [dict(t) for t in cfg.kube.worker_tolerations]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(job_id, target.name),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": owner_name,
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": cfg.kube.worker_backoff_limit,
            "activeDeadlineSeconds": cfg.kube.worker_deadline_s,
            "ttlSecondsAfterFinished": cfg.kube.worker_ttl_s,
            # Exit 10 (validation_failure) is deterministic: fail at once instead of retrying.
            # Evictions and preemptions do not count against backoffLimit.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_VALIDATION],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {"metadata": {"labels": labels, "annotations": annotations},
                         "spec": pod_spec},
        },
    }
