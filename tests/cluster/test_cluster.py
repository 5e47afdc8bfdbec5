"""The test cluster itself keeps every packet on the machine and is usable by tests."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.waiting import wait_for

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


def test_pod_without_host_network_is_isolated(
    cluster: Cluster, cluster_worker_image: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A pod without hostNetwork runs in its own namespace with no route anywhere."""
    name = f"isolated-{uuid.uuid4().hex[:8]}"
    script = (
        "import json, os, socket\n"
        "routes = open('/proc/net/route').read().splitlines()[1:]\n"
        "try:\n"
        "    socket.create_connection(('10.0.0.1', 443), timeout=2)\n"
        "    outcome = 'connected'\n"
        "except OSError as exc:\n"
        "    outcome = type(exc).__name__ + ':' + str(exc.errno)\n"
        "print(json.dumps({'ifaces': sorted(os.listdir('/sys/class/net')),\n"
        "                  'routes': routes, 'connect': outcome}))\n"
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "containers": [
                    {
                        "name": "probe",
                        "image": cluster_worker_image,
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", script],
                        "securityContext": {
                            "runAsNonRoot": True,
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        }
    )

    def finished() -> dict[str, Any] | None:
        pod: dict[str, Any] = cluster.get_json("pod", name)
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    try:
        pod = wait_for(finished, timeout=180, interval=1, what=f"pod {name} finished")
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network("10.0.128.0/17")
        report = json.loads(cluster.run("logs", name).stdout.strip().splitlines()[-1])
        assert report["ifaces"] == ["eth0", "lo"], report
        assert report["routes"] == [], report
        assert report["connect"] != "connected", report
    finally:
        cluster.run("delete", "pod", name, "--wait=true", "--timeout=60s", check=False)
