"""The chart's metrics: ports and env, the metrics Services, the optional ServiceMonitor, and a
Grafana dashboard whose every query names a metric the service really exports."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import yaml

from atproto_video.core import metrics
from atproto_video.core.metrics import REGISTRY
from tests.charts.test_chart import API, CHART, OPERATOR, VALUES, by_kind, env_of, pod_specs, render

DASHBOARD = CHART / "dashboards" / "atproto-video.json"


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pods = pod_specs(docs)
    return {name: pods[name]["containers"][0] for name in (API, OPERATOR)}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_metrics_ports_env_and_services_by_default(helm: str) -> None:
    docs = render(helm, *VALUES)
    ports = {API: 9585, OPERATOR: 9586}
    for name, container in containers(docs).items():
        env = env_of(container)
        assert env["VIDEO_METRICS_PORT"] == str(ports[name]), name
        assert env["VIDEO_METRICS_HOST"] == "0.0.0.0", name
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named["metrics"] == ports[name], name
    services = by_kind(docs, "Service")
    for component, port in (("api", 9585), ("operator", 9586)):
        svc = services[f"rel-atproto-video-{component}-metrics"]
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == component
    # The API's own Service (maybe a LoadBalancer, behind the Ingress) never carries metrics.
    assert [p["name"] for p in services["rel-atproto-video"]["spec"]["ports"]] == ["http"]
    assert not by_kind(docs, "ServiceMonitor")
    assert not [n for n in by_kind(docs, "ConfigMap") if n.endswith("-dashboard")]


def test_service_monitor_only_when_enabled(helm: str) -> None:
    docs = render(helm, *VALUES, "--set", "metrics.serviceMonitor.enabled=true",
                  "--set", "metrics.serviceMonitor.interval=30s",
                  "--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack")
    (monitor,) = by_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["video"]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                             "interval": "30s"}]
    selector = monitor["spec"]["selector"]["matchLabels"]
    chosen = sorted(n for n, s in by_kind(docs, "Service").items()
                    if selects(selector, s["metadata"]["labels"]))
    assert chosen == ["rel-atproto-video-api-metrics", "rel-atproto-video-operator-metrics"]

    # Metrics off: no ports, no env, no Services, and no ServiceMonitor pointing at nothing.
    docs = render(helm, *VALUES, "--set", "metrics.enabled=false",
                  "--set", "metrics.serviceMonitor.enabled=true")
    assert not by_kind(docs, "ServiceMonitor")
    assert not [n for n in by_kind(docs, "Service") if n.endswith("-metrics")]
    for name, container in containers(docs).items():
        assert not [k for k in env_of(container) if k.startswith("VIDEO_METRICS_")], name
        assert "metrics" not in {p["name"] for p in container["ports"]}, name


def test_host_network_ports_do_not_collide(helm: str) -> None:
    """values-local.yaml runs the API and the operator on one host's network."""
    docs = render(helm, *VALUES, "-f", str(CHART / "values-local.yaml"))
    taken: list[int] = []
    for container in containers(docs).values():
        taken += [p["containerPort"] for p in container["ports"]]
    assert len(taken) == len(set(taken)) == 4, taken
    local = yaml.safe_load((CHART / "values-local.yaml").read_text())["metrics"]
    assert {local["port"], local["operatorPort"]} <= set(taken)


def test_schema_refuses_bad_metrics_values(helm: str) -> None:
    for bad in (["--set", "metrics.port=0"], ["--set", "metrics.operatorPort=70000"],
                ["--set", "metrics.serviceMonitor.interval=often"]):
        out = subprocess.run(
            [helm, "template", "rel", str(CHART), "--kube-version", "1.34.0", *VALUES, *bad],
            capture_output=True, text=True,
        )  # fmt: skip
        assert out.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    ok = subprocess.run(
        [helm, "lint", "--strict", str(CHART), *VALUES,
         "--set", "metrics.serviceMonitor.enabled=true",
         "--set", "metrics.grafanaDashboard.enabled=true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_dashboard_config_map(helm: str) -> None:
    assert not [n for n in by_kind(render(helm, *VALUES), "ConfigMap") if "dashboard" in n]
    docs = render(helm, *VALUES, "--set", "metrics.grafanaDashboard.enabled=true",
                  "--set", "metrics.grafanaDashboard.annotations.grafana_folder=Video")
    cm = by_kind(docs, "ConfigMap")["rel-atproto-video-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Video"}
    shipped = json.loads(cm["data"]["atproto-video.json"])
    assert shipped == json.loads(DASHBOARD.read_text())
    assert shipped["uid"] == "atproto-video" and shipped["panels"]


# -- the dashboard's queries -------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, label
    matchers, ranges and grouping clauses are removed, that are not function calls."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    # label_values(metric, label): the label is not a metric.
    expr = re.sub(r"\blabel_values\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^)]*\)", r" \1 ", expr)
    found = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr)
    return {n for n in found if n.lower() not in _KEYWORDS}


def test_metric_names_parser() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, rendition) '
        '(rate(atproto_video_encode_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))'
    ) == {"atproto_video_encode_seconds_bucket"}
    assert metric_names("a_total / on (job) b + c offset 5m") == {"a_total", "b", "c"}


def exported_samples() -> dict[str, str]:
    """Sample name -> family name, for every family this process's registry exports."""
    families = [*REGISTRY.collect(), *metrics._JOB_COUNTS.describe()]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",), "summary": ("_count", "_sum", "")}
    return {f.name + s: f.name for f in families for s in suffixes.get(f.type, ("",))}


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in doc["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_every_dashboard_query_names_an_exported_metric() -> None:
    exported = exported_samples()
    used: set[str] = set()
    for expr in dashboard_queries():
        names = metric_names(expr)
        assert names, expr
        missing = names - set(exported)
        assert not missing, f"{expr}: not in core/metrics.py: {missing}"
        used |= names
    # And the other way: the dashboard shows every metric the service defines.
    ours = {family for family in exported.values() if family.startswith(metrics.PREFIX)}
    assert ours == {exported[n] for n in used}
