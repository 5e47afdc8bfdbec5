"""The RBAC rules of the operator and the API, defined once here, each with why it exists.

Two files are generated from this module (``make manifests``), and tests check both are up to
date:

- ``manifests/rbac.yaml`` (``atproto-video operator --print-rbac``): ServiceAccounts, Roles,
  a ClusterRole and their bindings for one namespace, with every rule's reason as a comment.
  ``kubectl apply`` it with the plain manifests; the cluster tests apply it to their namespace.
- ``charts/atproto-video/files/rbac-rules.yaml`` (``--print-chart-rbac``): only the rule lists,
  which the chart's ``templates/rbac.yaml`` reads with ``.Files.Get | fromYaml``, so the chart
  grants exactly what the plain manifests grant.

Least privilege: the operator reads VideoJobs and writes their status and finalizer, creates
the VideoJobs the API could not (reconciler), creates/deletes/watches worker Jobs and reads
their Pods (to name failures). It never writes Pods, never touches Secrets or ConfigMaps,
nothing cluster-wide but listing CRDs and namespaces (kopf's discovery). The API may only
create VideoJobs. Worker pods get no token at all (``automountServiceAccountToken: false``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atproto_video.core.kube import GROUP, PLURAL

CORE = ""  # the core API group ("" in a PolicyRule): pods, events, namespaces
VIDEOJOBS = PLURAL


@dataclass(frozen=True)
class Rule:
    """One PolicyRule and the reason it is granted."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def manifest(self) -> dict[str, list[str]]:
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources),
                "verbs": list(self.verbs)}


#: The operator's Role in the release's namespace.
OPERATOR_RULES: tuple[Rule, ...] = (
    Rule((GROUP,), (VIDEOJOBS,), ("get", "list", "watch", "create", "patch", "delete"),
         "Watch VideoJobs, patch their finalizer and kopf's annotations, create the VideoJobs "
         "the API could not hand over (reconciler), delete finished ones after "
         "VIDEO_K8S_VIDEOJOB_TTL_S."),
    Rule((GROUP,), (f"{VIDEOJOBS}/status",), ("get", "patch"),
         "Mirror state, per-rendition progress and conditions into the VideoJob status."),
    Rule((GROUP,), (f"{VIDEOJOBS}/finalizers",), ("update",),
         "Worker Jobs set blockOwnerDeletion on their VideoJob owner reference, which needs "
         "this under OwnerReferencesPermissionEnforcement (on by default in OpenShift)."),
    Rule(("batch",), ("jobs",), ("get", "list", "watch", "create", "delete"),
         "One worker Job per rendition, thumbnail and MP4: created, followed by a watch, "
         "the unfinished ones deleted when their job fails."),
    Rule((CORE,), ("pods",), ("get", "list"),
         "Read a failed or slow Job's Pods to name the failure (exit code, OOMKilled, "
         "Unschedulable, image pull); never written."),
    Rule((CORE,), ("events",), ("create",),
         "An Event per VideoJob state change, and a Warning naming a failure "
         "(kubectl describe vj)."),
)

#: The operator's ClusterRole: the only cluster-wide reads.
CLUSTER_RULES: tuple[Rule, ...] = (
    Rule(("apiextensions.k8s.io",), ("customresourcedefinitions",), ("list", "watch"),
         "kopf's discovery: which resources exist."),
    Rule((CORE,), ("namespaces",), ("list", "watch"),
         "kopf's discovery: that the watched namespace exists."),
)

#: The API's Role in the release's namespace.
API_RULES: tuple[Rule, ...] = (
    Rule((GROUP,), (VIDEOJOBS,), ("create",),
         "Hand a committed upload to the operator; the API reads job state from the database, "
         "never from the cluster."),
)

#: Keys of the chart's files/rbac-rules.yaml.
CHART_RULES: dict[str, tuple[Rule, ...]] = {
    "operator": OPERATOR_RULES,
    "operatorCluster": CLUSTER_RULES,
    "api": API_RULES,
}

APP = "atproto-video"
NAMESPACE = "atproto-video"
RBAC_GROUP = "rbac.authorization.k8s.io"

_HEADER = """\
# Generated from atproto_video.operator.rbac by `make manifests`
# (atproto-video operator --print-rbac > manifests/rbac.yaml): edit that module, not this file.
#
# Least-privilege RBAC for atproto-video in one namespace (here: atproto-video).
#   kubectl apply -f manifests/crd.yaml -f manifests/rbac.yaml -f manifests/deployment.yaml
#
# The operator reads VideoJobs and writes their status and finalizer, creates the VideoJobs the
# API could not (reconciler), creates/deletes/watches worker Jobs and reads their Pods (to name
# failures). It never writes Pods, never touches Secrets or ConfigMaps, nothing cluster-wide but
# listing CRDs and namespaces (kopf's discovery). The API may only create VideoJobs.
# Worker pods get no token at all (automountServiceAccountToken: false in their Job template).
"""

_CHART_HEADER = """\
# Generated from atproto_video.operator.rbac by `make manifests`
# (atproto-video operator --print-chart-rbac): edit that module, not this file.
# templates/rbac.yaml reads these rule lists; manifests/rbac.yaml grants the same.
"""


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component}


def _objects(namespace: str) -> list[tuple[dict[str, Any], tuple[Rule, ...]]]:
    """The objects of ``manifests/rbac.yaml`` in order, each Role with its rules."""
    operator, api, crds = f"{APP}-operator", f"{APP}-api", f"{APP}-operator-crds"

    def meta(name: str, component: str, *, cluster: bool = False) -> dict[str, Any]:
        scope = {} if cluster else {"namespace": namespace}
        return {"name": name, **scope, "labels": _labels(component)}

    def account(name: str, component: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, component)}

    def role(kind: str, name: str, component: str) -> dict[str, Any]:
        # The rules are added by rbac_manifests (plain) and rbac_yaml (with their comments).
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": kind,
                "metadata": meta(name, component, cluster=kind == "ClusterRole")}

    def binding(role_kind: str, name: str, component: str, subject: str) -> dict[str, Any]:
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": f"{role_kind}Binding",
                "metadata": meta(name, component, cluster=role_kind == "ClusterRole"),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": subject,
                              "namespace": namespace}]}

    return [
        (account(operator, "operator"), ()),
        (account(api, "api"), ()),
        (role("Role", operator, "operator"), OPERATOR_RULES),
        (binding("Role", operator, "operator", operator), ()),
        (role("ClusterRole", crds, "operator"), CLUSTER_RULES),
        (binding("ClusterRole", crds, "operator", operator), ()),
        (role("Role", api, "api"), API_RULES),
        (binding("Role", api, "api", api), ()),
    ]


def rbac_manifests(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The objects of ``manifests/rbac.yaml``, in order."""
    return [{**doc, "rules": [r.manifest() for r in rules]} if rules else doc
            for doc, rules in _objects(namespace)]


def chart_rules() -> dict[str, list[dict[str, list[str]]]]:
    """The content of ``charts/atproto-video/files/rbac-rules.yaml``."""
    return {key: [r.manifest() for r in rules] for key, rules in CHART_RULES.items()}


def _dump(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=False, width=100, default_flow_style=None))


def _comment(text: str, indent: str) -> str:
    import textwrap

    return "".join(f"{indent}# {line}\n"
                   for line in textwrap.wrap(text, width=96 - len(indent)))


def _rules_yaml(rules: tuple[Rule, ...], indent: str) -> str:
    """A rule list in block style, each rule preceded by its reason as a comment."""
    out = ""
    for rule in rules:
        out += _comment(rule.why, indent)
        out += "".join(f"{indent}{line}\n" for line in _dump([rule.manifest()]).splitlines())
    return out


def rbac_yaml(namespace: str = NAMESPACE) -> str:
    """``manifests/rbac.yaml``: regenerate with ``atproto-video operator --print-rbac``."""
    docs = [_dump(doc) + ("rules:\n" + _rules_yaml(rules, "  ") if rules else "")
            for doc, rules in _objects(namespace)]
    return _HEADER + "---\n".join(docs)


def chart_rules_yaml() -> str:
    """``charts/atproto-video/files/rbac-rules.yaml``: the rule lists the chart grants."""
    out = _CHART_HEADER
    for key, rules in CHART_RULES.items():
        out += f"{key}:\n" + _rules_yaml(rules, "  ")
    return out
