"""The VideoJob custom resource, defined once here; ``manifests/crd.yaml`` is generated from it.

A VideoJob names a job row (``spec.jobId``) and its source on the shared storage. Its status is
a mirror of the database row plus what only the cluster knows: per-rendition progress and
outcome, the plan, and conditions. ``status.kopf`` is kopf's own bookkeeping (handler
progress), kept open with ``x-kubernetes-preserve-unknown-fields``.
"""

from __future__ import annotations

from typing import Any

from atproto_video.core.details import Outcome
from atproto_video.core.kube import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from atproto_video.core.ladder import RUNG_NAMES
from atproto_video.core.lexicon import JobState

#: Condition types, in the order they normally become True. ``Failed`` ends the job.
CONDITIONS: dict[str, str] = {
    "Planned": "the source was probed and one Job per rendition planned",
    "Encoded": "every rendition, the thumbnail and the MP4 were produced",
    "Completed": "the job reached JOB_STATE_COMPLETED",
    "Failed": "the job reached JOB_STATE_FAILED",
    # kstatus: Ready=True is "current"; the other conditions say why it is not (yet).
    "Ready": "the video is published (True), being processed or failed (False, with the reason)",
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
            "outcome": {"type": "string", "enum": [o.value for o in Outcome]},
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
            "failureReason": {"type": "string"},
            "targetsDone": {"type": "string"},
            "startTime": {"type": "string", "format": "date-time"},
            "completionTime": {"type": "string", "format": "date-time"},
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
                        {"name": "Done", "type": "string", "jsonPath": ".status.targetsDone",
                         "description": "worker targets succeeded / planned"},
                        {"name": "Reason", "type": "string",
                         "jsonPath": ".status.failureReason"},
                        {"name": "DID", "type": "string", "jsonPath": ".spec.did"},
                        {"name": "Age", "type": "date",
                         "jsonPath": ".metadata.creationTimestamp"},
                        {"name": "Started", "type": "date", "jsonPath": ".status.startTime",
                         "priority": 1},
                        {"name": "Completed", "type": "date",
                         "jsonPath": ".status.completionTime", "priority": 1},
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


def crd_yaml() -> str:
    """``manifests/crd.yaml``: regenerate with ``atproto-video operator --print-crd``."""
    import yaml

    header = "# Generated from atproto_video.operator.crd: atproto-video operator --print-crd\n"
    return header + str(yaml.safe_dump(crd_manifest(), sort_keys=False, width=100))
