"""The test cluster itself keeps every packet on the machine and is usable by tests."""

from __future__ import annotations

import ipaddress
import re
import subprocess
from pathlib import Path

import pytest

from tests.cluster.conftest import Cluster

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(3600)]


def test_node_ready_untainted_with_default_serviceaccount(cluster: Cluster) -> None:
    node = cluster.get_json("node", "127.0.0.1")
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert not node["spec"].get("taints")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == "127.0.0.1"
    assert cluster.get_json("serviceaccount", "default", "-n", "default")["metadata"]["name"]


def test_service_cidr_is_blackholed(cluster: Cluster) -> None:
    """Nothing serves ClusterIPs (no kube-proxy): they must fail locally, not leave the host."""
    svc = cluster.get_json("service", "kubernetes", "-n", "default")
    cluster_ip = ipaddress.ip_address(svc["spec"]["clusterIP"])
    route = subprocess.run(
        ["ip", "route", "get", str(cluster_ip)], capture_output=True, text=True, check=False
    )
    # `ip route get` on a blackhole route fails with "No route to host"/"Invalid argument"
    # or reports type blackhole; it must never name an interface to send it out of.
    assert " dev " not in route.stdout, route.stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    blackholes = [
        ipaddress.ip_network(line.split()[1])
        for line in routes.splitlines()
        if line.startswith("blackhole ")
    ]
    assert any(cluster_ip in net for net in blackholes), routes


def test_every_component_listens_on_loopback_only(cluster: Cluster) -> None:
    state = Path(cluster.kubeconfig).parent
    pids = {p.name: p.read_text().strip() for p in (state / "pid").iterdir()}
    assert set(pids) >= {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "kubelet",
    }
    listeners = subprocess.run(
        ["ss", "-Hltunp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    seen = 0
    for line in listeners:
        owners = set(re.findall(r"pid=(\d+)", line))
        if not owners & set(pids.values()):
            continue
        seen += 1
        local = line.split()[4]
        host = local.rsplit(":", 1)[0].strip("[]")
        assert ipaddress.ip_address(host).is_loopback, line
    assert seen >= 6, listeners
