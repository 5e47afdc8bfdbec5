"""Fixtures for tests against the real single-node Kubernetes (cluster/up.sh) and the worker image.

The session fixture reuses a healthy cluster or starts one and holds a lease on it; at the end
the cluster is torn down only if a test session started it and no other live session still uses
it (see cluster/README.md). A cluster that cannot start FAILS the tests with the reason, unless
VIDEO_SKIP_CLUSTER=1, in which case they are skipped with a loud message. The private dockerd
for the worker image is handled the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
UP = REPO / "cluster" / "up.sh"
DOWN = REPO / "cluster" / "down.sh"
IMAGE_BUILD = REPO / "transcoder-image" / "build.sh"
DOCKERD = REPO / "transcoder-image" / "dockerd.sh"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _unavailable(what: str, reason: str) -> NoReturn:
    """Fail with the reason, or skip loudly when VIDEO_SKIP_CLUSTER=1."""
    if os.environ.get("VIDEO_SKIP_CLUSTER") == "1":
        banner = "!" * 78
        msg = f"{what} unavailable, SKIPPING because VIDEO_SKIP_CLUSTER=1: {reason}"
        print(f"\n{banner}\n{msg}\n{banner}", file=sys.stderr)
        pytest.skip(msg)
    pytest.fail(f"{what} unavailable: {reason}", pytrace=False)


def _exports(stdout: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key.strip()] = value.strip()
    return env


@dataclass
class Cluster:
    """A running test cluster: run kubectl against it."""

    kubectl: str
    kubeconfig: str

    def run(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json").stdout)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", input=json.dumps(manifest))


class ClusterUnavailable(RuntimeError):
    """cluster/up.sh could not provide a cluster; the message says why."""


@contextlib.contextmanager
def leased_cluster(owner: str = "pytest", *, keep: bool = False) -> Iterator[Cluster]:
    """The test cluster, reused if healthy, else started by cluster/up.sh, under a lease.

    On exit the lease is released, and the cluster torn down only if a test session started
    it and no other live session still holds a lease, so concurrent runs (pytest, bench) on
    one machine share it safely and a cluster started by hand (make cluster-up) is left
    running. ``keep`` skips the release (VIDEO_KEEP_CLUSTER=1: keep it up for the next run).
    Raises ClusterUnavailable when up.sh fails.
    """
    lease = f"{os.getpid()}:{owner}-{uuid.uuid4().hex[:12]}"
    # A cold start builds Kubernetes from source first (15-30 min on 2 cores).
    proc = subprocess.run(
        ["bash", str(UP), "--lease", lease], capture_output=True, text=True, timeout=3600
    )
    env = _exports(proc.stdout)
    started = proc.returncode == 0 and "KUBECONFIG" in env and "VIDEO_KUBECTL" in env
    try:
        if not started:
            raise ClusterUnavailable(
                f"cluster/up.sh exited {proc.returncode}:\n{_tail(proc.stderr)}"
            )
        yield Cluster(kubectl=env["VIDEO_KUBECTL"], kubeconfig=env["KUBECONFIG"])
    finally:
        if not (keep and started):
            down = subprocess.run(
                ["bash", str(DOWN), "--release", lease], capture_output=True, text=True, timeout=600
            )
            if down.returncode != 0:
                print(f"cluster/down.sh failed:\n{_tail(down.stderr)}", file=sys.stderr)


def import_worker_image(kube_cluster: Cluster, *, build: bool) -> str:
    """The worker image in the cluster's containerd (imagePullPolicy: Never); its name.

    ``build`` first builds it (layers are cached: seconds when nothing changed); otherwise it
    must exist already. transcoder-image/build.sh holds its own dockerd lease meanwhile.
    """
    env = dict(os.environ, VIDEO_CLUSTER_STATE=str(Path(kube_cluster.kubeconfig).parent))
    step = "--import" if build else "import"
    proc = subprocess.run(
        ["bash", str(IMAGE_BUILD), step], capture_output=True, text=True, timeout=3600, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"transcoder-image/build.sh {step} failed:\n{_tail(proc.stderr)}")
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The test cluster for the session (see `leased_cluster`)."""
    if os.geteuid() != 0:
        _unavailable("test cluster", "cluster/up.sh needs root (containerd, kubelet, cgroups)")
    keep = os.environ.get("VIDEO_KEEP_CLUSTER") == "1"
    with contextlib.ExitStack() as stack:
        t0 = time.monotonic()
        try:
            kube = stack.enter_context(leased_cluster(keep=keep))
        except ClusterUnavailable as exc:
            _unavailable("test cluster", str(exc))
        finally:
            print(f"\ncluster/up.sh took {time.monotonic() - t0:.0f}s", file=sys.stderr)
        yield kube


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """The private dockerd (transcoder-image/dockerd.sh), leased like the cluster: stopped at
    the end only if a test session started it and no other live session holds a lease."""
    if os.geteuid() != 0:
        _unavailable("private dockerd", "transcoder-image/dockerd.sh needs root")
    lease = f"{os.getpid()}:{uuid.uuid4().hex[:12]}"
    proc = subprocess.run(
        ["bash", str(DOCKERD), "start", "--lease", lease],
        capture_output=True,
        text=True,
        timeout=900,
    )
    host = _exports(proc.stdout).get("DOCKER_HOST", "")
    if proc.returncode != 0 or not host:
        subprocess.run(["bash", str(DOCKERD), "stop", "--release", lease], capture_output=True)
        _unavailable("private dockerd", _tail(proc.stderr))
    try:
        yield host
    finally:
        subprocess.run(
            ["bash", str(DOCKERD), "stop", "--release", lease], capture_output=True, timeout=900
        )


@pytest.fixture(scope="session")
def worker_image(docker_host: str) -> str:
    """Build (or rebuild: layers are cached) localhost/atproto-video-worker:<version>."""
    proc = subprocess.run(["bash", str(IMAGE_BUILD)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        _unavailable(
            "worker image",
            f"transcoder-image/build.sh exited {proc.returncode}:\n{_tail(proc.stderr)}",
        )
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def cluster_worker_image(cluster: Cluster, worker_image: str) -> str:
    """The worker image (built by `worker_image`) imported into the cluster's containerd."""
    import_worker_image(cluster, build=False)
    return worker_image


@pytest.fixture(scope="session")
def cluster_postgres_image(cluster: Cluster, docker_host: str) -> str:
    """The chart's quickstart Postgres image (localhost/atproto-video-postgres:15, from
    transcoder-image/postgres/), built (layers cached: seconds) and imported into the
    cluster's containerd like the worker image."""
    env = dict(os.environ, VIDEO_CLUSTER_STATE=str(Path(cluster.kubeconfig).parent))
    proc = subprocess.run(
        ["bash", str(IMAGE_BUILD), "postgres", "--import"],
        capture_output=True, text=True, timeout=3600, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        _unavailable(
            "postgres image",
            f"transcoder-image/build.sh postgres --import exited {proc.returncode}:\n"
            f"{_tail(proc.stderr)}",
        )
    return proc.stdout.strip().splitlines()[-1]
