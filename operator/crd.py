"""The VideoJob custom resource, defined once here; ``manifests/crd.yaml`` is generated from it.

A VideoJob names a job row (``spec.jobId``) and its source on the shared storage. Its status is
a mirror of the database row plus what only the cluster knows: per-rendition progress and
outcome, the plan, and conditions. ``status.kopf`` is kopf's own bookkeeping (handler
progress), kept open with ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from atproto_video.jobs import Job
from atproto_video.ladder import RUNG_NAMES
from atproto_video.lexicon import JobState
from atproto_video.storage import LocalStorage

GROUP = "video.atproto.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VideoJob"
PLURAL = "videojobs"
SINGULAR = "videojob"
SHORT_NAMES = ("vj",)
#: The finalizer that removes a deleted VideoJob's outputs from the storage.
FINALIZER = f"{GROUP}/cleanup"

#: Condition types, in the order they normally become True. ``Failed`` ends the job.
CONDITIONS: dict[str, str] = {
    "Planned": "the source was probed and one Job per rendition planned",
    "Encoded": "every rendition, the thumbnail and the MP4 were produced",
    "Completed": "the job reached JOB_STATE_COMPLETED",
    "Failed": "the job reached JOB_STATE_FAILED",
}

#: Per-target outcomes in ``status.renditions.<name>.outcome``.
OUTCOMES = ("Pending", "Running", "Succeeded", "Failed")

_NAME_OK = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def videojob_name(job_id: str) -> str:
    """The VideoJob's name: the job id itself when it is a valid short DNS label.

    Job ids from :func:`atproto_video.jobs.new_job_id` are 40 lowercase hex characters, so SREs
    can ``kubectl get vj <jobId>``; anything else is hashed to a stable, valid name. At most 40
    characters, so Job names derived from it stay within 63.
    """
    if _NAME_OK.match(job_id):
        return job_id
    return "h" + hashlib.sha256(job_id.encode()).hexdigest()[:39]


def videojob_manifest(
    job_id: str, did: str, source: str, namespace: str, renditions: list[str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": videojob_name(job_id),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "atproto-video",
                "app.kubernetes.io/component": "videojob",
                f"{GROUP}/job-id": videojob_name(job_id),
            },
        },
        "spec": {
            "jobId": job_id,
            "did": did,
            "source": source,
            "renditions": list(renditions if renditions is not None else RUNG_NAMES),
        },
    }


def _condition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string", "enum": list(CONDITIONS)},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    }


def _rendition_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "job": {"type": "string"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
        },
    }


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1)."""
    states = [s.value for s in JobState]
    spec_schema = {
        "type": "object",
        "required": ["jobId", "did", "source"],
        "properties": {
            "jobId": {"type": "string", "minLength": 8, "maxLength": 64,
                      "pattern": "^[A-Za-z0-9_-]+$",
                      "x-kubernetes-validations": [
                          {"rule": "self == oldSelf", "message": "jobId is immutable"}]},
            "did": {"type": "string", "minLength": 8, "maxLength": 255, "pattern": "^did:"},
            "source": {"type": "string", "minLength": 1, "maxLength": 512,
                       "description": "path of the upload relative to the storage root"},
            "renditions": {
                "type": "array",
                "description": "ladder rungs wanted; the source's size caps them (no upscaling)",
                "items": {"type": "string", "enum": list(RUNG_NAMES)},
                "maxItems": len(RUNG_NAMES),
            },
        },
    }
    status_schema = {
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": states},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "failureCode": {"type": "string"},
            "error": {"type": "string"},
            "message": {"type": "string"},
            "cid": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "plan": {
                "type": "object",
                "properties": {
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "fps": {"type": "string"},
                    "hasAudio": {"type": "boolean"},
                    "renditions": {"type": "array", "items": {"type": "string"}},
                },
            },
            "renditions": {"type": "object", "additionalProperties": _rendition_schema()},
            "conditions": {
                "type": "array",
                "items": _condition_schema(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "kopf": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "atproto-video"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["atproto-video"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "State", "type": "string", "jsonPath": ".status.state"},
                        {"name": "Progress", "type": "integer", "jsonPath": ".status.progress"},
                        {"name": "DID", "type": "string", "jsonPath": ".spec.did"},
                        {"name": "Age", "type": "date",
                         "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema, "status": status_schema},
                        }
                    },
                }
            ],
        },
    }


def source_relpath(storage_root: Path, source: Path) -> str:
    """``spec.source``: the upload's path relative to the storage root (pods mount the root)."""
    return source.resolve().relative_to(storage_root.resolve()).as_posix()


def videojob_for(job: Job, storage: LocalStorage, namespace: str) -> dict[str, Any]:
    return videojob_manifest(
        job.id, job.did, source_relpath(storage.root, storage.source_path(job.id)), namespace
    )


def crd_yaml() -> str:
    """``manifests/crd.yaml``: regenerate with ``atproto-video operator --print-crd``."""
    import yaml

    header = "# Generated from atproto_video.operator.crd: atproto-video operator --print-crd\n"
    return header + str(yaml.safe_dump(crd_manifest(), sort_keys=False, width=100))
