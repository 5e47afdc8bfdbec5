"""The CRD is generated from code; the checked-in YAML must match it."""

from __future__ import annotations

from pathlib import Path

import yaml

from atproto_video.core.kube import videojob_manifest, videojob_name
from atproto_video.core.lexicon import JobState
from atproto_video.operator.crd import CONDITIONS, crd_manifest, crd_yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def test_checked_in_crd_matches_code() -> None:
    on_disk = yaml.safe_load((MANIFESTS / "crd.yaml").read_text())
    hint = "regenerate: atproto-video operator --print-crd > manifests/crd.yaml"
    assert on_disk == crd_manifest(), hint
    assert yaml.safe_load(crd_yaml()) == crd_manifest()


def test_crd_shape() -> None:
    crd = crd_manifest()
    spec = crd["spec"]
    assert spec["names"]["shortNames"] == ["vj"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["STATE", "PROGRESS", "DONE", "REASON", "DID", "AGE", "STARTED",
                       "COMPLETED"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Started", "Completed"], "times only with -o wide"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    assert status["state"]["enum"] == [s.value for s in JobState]
    cond = status["conditions"]["items"]["properties"]
    assert set(cond) == {"type", "status", "reason", "message", "observedGeneration",
                         "lastTransitionTime"}
    assert cond["type"]["enum"] == list(CONDITIONS)
    rendition = status["renditions"]["additionalProperties"]["properties"]
    assert {"progress", "outcome"} <= set(rendition)


def test_videojob_names() -> None:
    hex_id = "0123456789abcdef0123456789abcdef01234567"
    assert videojob_name(hex_id) == hex_id
    odd = videojob_name("Upper_Case-id")
    assert odd.startswith("h") and len(odd) == 40 and odd == videojob_name("Upper_Case-id")
    assert odd != videojob_name("Upper_Case-ie")
    vj = videojob_manifest(hex_id, "did:plc:abc", f"jobs/{hex_id}/source", "video")
    assert vj["metadata"] == {
        "name": hex_id,
        "namespace": "video",
        "labels": {"app.kubernetes.io/name": "atproto-video",
                   "app.kubernetes.io/component": "videojob",
                   "video.atproto.dev/job-id": hex_id},
    }
    assert vj["spec"]["renditions"] == ["1080p", "720p", "480p"]


def test_videojobs_carry_their_instance_when_one_is_set() -> None:
    labelled = videojob_manifest("a" * 40, "did:plc:abc", "jobs/x/source", "video",
                                 instance="video-a")
    assert labelled["metadata"]["labels"]["video.atproto.dev/instance"] == "video-a"
    plain = videojob_manifest("a" * 40, "did:plc:abc", "jobs/x/source", "video")
    assert "video.atproto.dev/instance" not in plain["metadata"]["labels"]
