"""The CRD and the RBAC are generated from code; the checked-in YAML must match it."""

from __future__ import annotations

from pathlib import Path

import yaml

from atproto_video.core.kube import videojob_manifest, videojob_name
from atproto_video.core.lexicon import JobState
from atproto_video.operator.crd import CONDITIONS, crd_manifest, crd_yaml
from atproto_video.operator.rbac import (
    API_RULES,
    CLUSTER_RULES,
    OPERATOR_RULES,
    chart_rules,
    chart_rules_yaml,
    rbac_manifests,
    rbac_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART_RULES = ROOT / "charts" / "atproto-video" / "files" / "rbac-rules.yaml"


def test_checked_in_crd_matches_code() -> None:
    on_disk = yaml.safe_load((MANIFESTS / "crd.yaml").read_text())
    hint = "regenerate: atproto-video operator --print-crd > manifests/crd.yaml"
    assert on_disk == crd_manifest(), hint
    assert yaml.safe_load(crd_yaml()) == crd_manifest()


def test_checked_in_rbac_matches_code() -> None:
    """manifests/rbac.yaml and the chart's rule file are generated, comments included."""
    hint = "regenerate: make manifests"
    assert (MANIFESTS / "rbac.yaml").read_text() == rbac_yaml(), hint
    assert CHART_RULES.read_text() == chart_rules_yaml(), hint
    assert [d for d in yaml.safe_load_all(rbac_yaml()) if d] == rbac_manifests()
    assert yaml.safe_load(chart_rules_yaml()) == chart_rules()
    # Every rule carries its reason into manifests/rbac.yaml.
    for rule in (*OPERATOR_RULES, *CLUSTER_RULES, *API_RULES):
        assert rule.why and rule.why.split()[0] in rbac_yaml(), rule


def test_rbac_objects() -> None:
    """The names and shape tests/support/k8s.py (rbac_for) relies on."""
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rbac_manifests("video")}
    assert set(docs) == {
        ("ServiceAccount", "atproto-video-operator"), ("ServiceAccount", "atproto-video-api"),
        ("Role", "atproto-video-operator"), ("RoleBinding", "atproto-video-operator"),
        ("ClusterRole", "atproto-video-operator-crds"),
        ("ClusterRoleBinding", "atproto-video-operator-crds"),
        ("Role", "atproto-video-api"), ("RoleBinding", "atproto-video-api"),
    }
    for (kind, _), doc in docs.items():
        assert ("namespace" in doc["metadata"]) == (not kind.startswith("Cluster")), kind
        for subject in doc.get("subjects", []):
            assert subject["namespace"] == "video"
    binding = docs[("ClusterRoleBinding", "atproto-video-operator-crds")]
    assert binding["roleRef"]["name"] == "atproto-video-operator-crds"
    assert binding["subjects"][0]["name"] == "atproto-video-operator"
    assert docs[("Role", "atproto-video-api")]["rules"] == [
        {"apiGroups": ["video.atproto.dev"], "resources": ["videojobs"], "verbs": ["create"]}]
    # Nothing cluster-wide but reading (kopf's discovery); no Secrets, no writes to Pods.
    cluster = docs[("ClusterRole", "atproto-video-operator-crds")]["rules"]
    assert {v for r in cluster for v in r["verbs"]} == {"list", "watch"}
    operator = docs[("Role", "atproto-video-operator")]["rules"]
    assert not [r for r in operator if {"secrets", "configmaps"} & set(r["resources"])]
    (pods,) = [r for r in operator if r["resources"] == ["pods"]]
    assert pods["verbs"] == ["get", "list"]


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
        "finalizers": ["video.atproto.dev/cleanup"],
    }
    assert vj["spec"]["renditions"] == ["1080p", "720p", "480p"]


def test_videojobs_carry_their_instance_when_one_is_set() -> None:
    labelled = videojob_manifest("a" * 40, "did:plc:abc", "jobs/x/source", "video",
                                 instance="video-a")
    assert labelled["metadata"]["labels"]["video.atproto.dev/instance"] == "video-a"
    plain = videojob_manifest("a" * 40, "did:plc:abc", "jobs/x/source", "video")
    assert "video.atproto.dev/instance" not in plain["metadata"]["labels"]

