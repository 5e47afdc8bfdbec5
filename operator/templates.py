"""Kubernetes Job manifests for the worker: one Job per target (rendition, thumbnail, mp4).

Everything site-specific (image, pull policy, network, storage volume, resources, scheduling)
comes from :class:`atproto_video.config.VideoConfig`. Names are derived from the job id and the
target, so creating a Job twice (an operator restart) finds the first one instead of adding a
second (create-or-get in :mod:`atproto_video.operator.kube`).

Workers never talk to the Kubernetes API: no service-account token, no service links, no
``KUBERNETES_SERVICE_HOST`` override. They report progress by rewriting a small JSON file on
the shared storage (``jobs/<id>/progress/<target>.json``) that the operator polls, and report
failure through the termination log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from atproto_video.config import VideoConfig
from atproto_video.operator.crd import API_VERSION, GROUP, KIND, videojob_name

CONTAINER = "transcode"
#: Where pods mount the storage root.
STORAGE_MOUNT = "/storage"
TERMINATION_LOG = "/dev/termination-log"
#: Exit code of ``atproto-video transcode`` for a validation failure: retrying cannot help.
EXIT_VALIDATION = 10
EXIT_ENCODING = 11

LABEL_JOB_ID = f"{GROUP}/job-id"
LABEL_TARGET = f"{GROUP}/target"
COMMON_LABELS = {
    "app.kubernetes.io/name": "atproto-video",
    "app.kubernetes.io/component": "worker",
    "app.kubernetes.io/managed-by": "atproto-video-operator",
}


@dataclass(frozen=True)
class Target:
    """One unit of worker work: ``name`` keys the status and the Job name; ``cli`` is what
    ``atproto-video transcode --target`` gets (a ladder rung, "thumbnail" or "mp4")."""

    name: str
    cli: str
    weight: float


def job_name(job_id: str, target: str) -> str:
    """``vj-<videojob name>-<target>``: at most 3 + 40 + 1 + 9 = 53 characters."""
    return f"vj-{videojob_name(job_id)}-{target.lower()}"


def job_labels(job_id: str, target: str) -> dict[str, str]:
    return {**COMMON_LABELS, LABEL_JOB_ID: videojob_name(job_id), LABEL_TARGET: target.lower()}


def selector(job_id: str) -> str:
    return f"{LABEL_JOB_ID}={videojob_name(job_id)}"


def progress_relpath(job_id: str, target: str) -> str:
    """Relative to the storage root; outside ``out/`` so players never see it."""
    return f"jobs/{job_id}/progress/{target}.json"


def _storage_volume(cfg: VideoConfig) -> dict[str, Any]:
    if cfg.worker_storage_pvc:
        return {"name": "storage", "persistentVolumeClaim": {"claimName": cfg.worker_storage_pvc}}
    path = cfg.worker_storage_hostpath or str(cfg.storage_dir.resolve())
    return {"name": "storage", "hostPath": {"path": path, "type": "Directory"}}


def job_manifest(
    cfg: VideoConfig,
    *,
    job_id: str,
    did: str,
    source: str,
    target: Target,
    owner_name: str,
    owner_uid: str,
) -> dict[str, Any]:
    """The batch/v1 Job for one target of one VideoJob, owned by it (GC on deletion)."""
    root = PurePosixPath(STORAGE_MOUNT)
    labels = job_labels(job_id, target.name)
    annotations = {f"{GROUP}/did": did}
    args = [
        str(root / source),
        str(root / "jobs" / job_id / "out"),
        "--target", target.cli,
        "--progress-file", str(root / progress_relpath(job_id, target.name)),
        "--termination-log", TERMINATION_LOG,
    ]
    env = [
        {"name": "VIDEO_MAX_DURATION_S", "value": str(cfg.max_duration_s)},
        {"name": "VIDEO_MAX_FPS", "value": str(cfg.max_fps)},
        {"name": "VIDEO_TRANSCODE_THREADS", "value": str(cfg.transcode_threads)},
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": cfg.worker_host_network,
        # Workers resolve nothing; this avoids depending on cluster DNS.
        "dnsPolicy": "Default",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": cfg.worker_uid,
            "runAsGroup": cfg.worker_gid,
            "fsGroup": cfg.worker_gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": cfg.worker_image,
                "imagePullPolicy": cfg.worker_pull_policy,
                "args": args,
                "env": env,
                "resources": {
                    "requests": {"cpu": cfg.worker_cpu_request,
                                 "memory": cfg.worker_memory_request},
                    "limits": {"cpu": cfg.worker_cpu_limit, "memory": cfg.worker_memory_limit},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [
                    {"name": "storage", "mountPath": STORAGE_MOUNT},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [_storage_volume(cfg), {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if cfg.worker_node_selector:
        pod_spec["nodeSelector"] = dict(cfg.worker_node_selector)
    if cfg.worker_tolerations:
        pod_spec["tolerations"] = [dict(t) for t in cfg.worker_tolerations]
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
            "backoffLimit": cfg.worker_backoff_limit,
            "activeDeadlineSeconds": cfg.worker_deadline_s,
            "ttlSecondsAfterFinished": cfg.worker_ttl_s,
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
