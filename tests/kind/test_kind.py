"""`make kind-up` run for real: kind from the Go module proxy, its node image built here with no
registry, its own dockerd, the chart installed with values-kind.yaml, an upload through the
chart's `helm test` reaching COMPLETED, the host's traffic rules verified while the cluster runs,
and `make kind-down` leaving nothing behind (cluster, bridge, daemon, rules)."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import _tail, _unavailable

pytestmark = [pytest.mark.kind, pytest.mark.image, pytest.mark.timeout(5400)]

REPO = Path(__file__).resolve().parents[2]
KIND = REPO / "kind"
# Kept in step with kind/lib.sh (its defaults; the test overrides none of them but the tag).
STATE = Path("/var/lib/atproto-video/kind-docker")
BRIDGE = "avkind0"
SUBNET_PREFIX = "172.31.250."
CLUSTER = "atproto-video"
NODE = f"{CLUSTER}-control-plane"
NAMESPACE = "atproto-video"
RELEASE = "video"
API = "http://127.0.0.1:30585"
TAG = "atproto-video-kind"


@dataclass
class Kind:
    env: dict[str, str]
    up_log: str

    def sh(self, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env, check=False
        )

    def docker(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.sh("/usr/bin/docker", "-H", f"unix://{STATE}/docker.sock", *args,
                       timeout=timeout)  # fmt: skip

    def in_node(self, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.docker("exec", NODE, "bash", "-c", script, timeout=timeout)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.in_node("kubectl --kubeconfig /etc/kubernetes/admin.conf "
                            + " ".join(args))  # fmt: skip


def _rules() -> tuple[str, str, str]:
    out = []
    for args in (["iptables", "-S"], ["iptables", "-t", "nat", "-S"], ["ip6tables", "-S"]):
        out.append(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    return out[0], out[1], out[2]


def _sysctl(name: str) -> str:
    return Path("/proc/sys", *name.split(".")).read_text().strip()


@pytest.fixture(scope="module")
def kind() -> Iterator[Kind]:
    if os.geteuid() != 0:
        _unavailable("kind", "kind/up.sh needs root (a private dockerd, iptables rules)")
    env = dict(os.environ)  # VIDEO_WORKER_TAG: the worker image's tag, as for the cluster tier
    # One kind run per machine at a time: the engine, bridge and port are fixed.
    STATE.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{STATE}.test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            up = subprocess.run(["bash", str(KIND / "up.sh")], capture_output=True, text=True,
                                timeout=4800, env=env, check=False)  # fmt: skip
            if up.returncode != 0:
                pytest.fail(f"kind/up.sh failed:\n{_tail(up.stderr, 80)}", pytrace=False)
            yield Kind(env, up.stderr)
        finally:
            down = subprocess.run(["bash", str(KIND / "down.sh")], capture_output=True,
                                  text=True, timeout=600, env=env, check=False)  # fmt: skip
            assert down.returncode == 0, down.stderr


def test_the_rules_hold_while_the_cluster_runs(kind: Kind) -> None:
    assert _sysctl("net.ipv4.ip_forward") == "0"
    assert _sysctl("net.ipv6.conf.all.forwarding") == "0"
    filt, nat, filt6 = _rules()
    for rules in (filt, filt6):
        assert f"-A FORWARD -i {BRIDGE} ! -o {BRIDGE} -m comment --comment {TAG} -j DROP" in rules
        assert f"-A FORWARD ! -i {BRIDGE} -o {BRIDGE} -m comment --comment {TAG} -j DROP" in rules
        assert f"-A INPUT -i {BRIDGE} -m comment --comment {TAG} -j DROP" in rules
    # No NAT for the bridge: dockerd runs with --iptables=false --ip-masq=false.
    assert BRIDGE not in nat and SUBNET_PREFIX not in nat, nat
    pid = (STATE / "dockerd.pid").read_text().strip()
    argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    for flag in ("--iptables=false", "--ip-forward=false", "--ip-masq=false", "--bridge=none"):
        assert flag in argv, argv
    # The node sits on the bridge, and its only way anywhere is the host's bridge address.
    addr = kind.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}"
                       "{{end}}", NODE).stdout.strip()  # fmt: skip
    assert addr.startswith(SUBNET_PREFIX), addr
    route = kind.in_node("ip -4 route show default").stdout
    assert f"via {SUBNET_PREFIX}1 dev eth0" in route, route
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0


def test_the_node_cannot_open_a_connection_to_the_host(kind: Kind) -> None:
    """A listener on every host address: the host reaches it, the node (through its bridge, on
    the host's bridge address and its other addresses) does not: the INPUT rule drops it."""
    srv = socket.socket()
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    accepted: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            accepted.append(peer[0])
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        host_ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                                  check=True).stdout.split()  # fmt: skip
        targets = [f"{SUBNET_PREFIX}1", *[ip for ip in host_ips if ":" not in ip]]
        for ip in targets:
            probe = kind.in_node(f"timeout 5 bash -c '</dev/tcp/{ip}/{port}'")
            assert probe.returncode != 0, f"the node reached {ip}:{port}"
        assert all(not peer.startswith(SUBNET_PREFIX) for peer in accepted), accepted
    finally:
        srv.close()


def test_the_cluster_is_the_local_build(kind: Kind) -> None:
    nodes = kind.kubectl("get", "nodes", "-o", "wide")
    assert nodes.returncode == 0, nodes.stderr
    assert " Ready " in nodes.stdout and "v1.34.10" in nodes.stdout, nodes.stdout
    # Nothing was pulled: every image in the node is one the build or `kind load` put there.
    images = kind.in_node("ctr -n k8s.io images ls -q").stdout.split()
    named = sorted(i for i in images if not i.startswith("sha256:"))
    # registry.k8s.io/...: built and preloaded by kind/build-node-image.sh; localhost/...: the
    # worker and Postgres images; import-DATE@sha256:...: the digest names `kind load` (ctr
    # import --digests) gives those.
    ours = ("registry.k8s.io/", "localhost/", "import-")
    assert all(i.startswith(ours) for i in named), named
    assert "registry.k8s.io/kube-apiserver:v1.34.10" in named, named
    assert any(i.startswith("localhost/atproto-video-worker:") for i in named), named
    events = kind.kubectl("get", "events", "-A", "--field-selector", "reason=Pulling")
    assert events.stdout.strip() in ("", "No resources found"), events.stdout


def test_an_upload_through_helm_test_completes(kind: Kind) -> None:
    health = httpx.get(f"{API}/xrpc/_health", timeout=30)
    assert health.status_code == 200, health.text
    helm = kind.sh("bash", str(REPO / "scripts" / "install-tools.sh"), "--print-helm").stdout
    test = kind.sh(helm.strip(), "test", RELEASE, "-n", NAMESPACE, "--kubeconfig",
                   str(STATE / "kubeconfig"), "--timeout", "20m", timeout=1500)  # fmt: skip
    out = test.stdout + test.stderr  # the upload pod's log (helm prints it) and the verdict
    assert test.returncode == 0, out
    assert '"state": "JOB_STATE_COMPLETED"' in out, out
    jobs = kind.kubectl("get", "videojobs", "-n", NAMESPACE)
    assert "JOB_STATE_COMPLETED" in jobs.stdout, jobs.stdout + jobs.stderr


def test_kind_down_leaves_nothing(kind: Kind) -> None:
    """Last in the module: `make kind-down` (the fixture's own teardown then finds nothing)."""
    pid = (STATE / "dockerd.pid").read_text().strip()
    down = kind.sh("bash", str(KIND / "down.sh"))
    assert down.returncode == 0, down.stderr
    assert not Path(f"/proc/{pid}").exists(), "kind's dockerd still running"
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0
    filt, nat, filt6 = _rules()
    assert TAG not in filt and TAG not in filt6
    assert BRIDGE not in nat and SUBNET_PREFIX not in nat
    assert not (STATE / "docker.sock").exists()
    assert _sysctl("net.ipv4.ip_forward") == "0"
