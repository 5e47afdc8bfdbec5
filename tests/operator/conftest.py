"""Cluster fixtures for the operator tests: a namespace with the CRD and RBAC from manifests/,
service-account kubeconfigs (so the operator and API run with exactly their RBAC), and the
API and operator as real processes against a real Postgres.

The cluster and the worker image come from tests/support/cluster.py (same fixtures, so
VIDEO_SKIP_CLUSTER=1 skips loudly here too); the namespace, settings and operator process
from tests/support/k8s.py, which bench/operator_dispatch.py uses as well.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import k8s as support
from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.k8s import K8sEnv, OperatorProcess
from tests.support.postgres import PostgresServer
from tests.support.service import ServiceProcess
from tests.support.tempdirs import host_tmpdir


@pytest.fixture(scope="module")
def k8s(cluster: Cluster) -> Iterator[K8sEnv]:
    workdir = Path(tempfile.mkdtemp(prefix="atproto-video-k8s-"))
    with K8sEnv(cluster, workdir) as env:
        yield env


@pytest.fixture(scope="module")
def storage_root() -> Iterator[Path]:
    with host_tmpdir("atproto-video-storage-") as root:
        yield root


@pytest.fixture(scope="module")
def stack_env(
    k8s: K8sEnv, postgres: PostgresServer, storage_root: Path, cluster_worker_image: str,
    dids: DidServer,
) -> dict[str, str]:
    """The settings the API and the operator share."""
    return support.stack_env(k8s, db_url=postgres.create_database(), storage_root=storage_root,
                             worker_image=cluster_worker_image, plc_url=dids.url)


@pytest.fixture(scope="module")
def api(
    stack_env: dict[str, str], k8s: K8sEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("api"),
                         {**stack_env, "KUBECONFIG": str(k8s.api_kubeconfig)}).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def operator_env(stack_env: dict[str, str], k8s: K8sEnv) -> dict[str, str]:
    return support.operator_env(k8s, stack_env)


@pytest.fixture(scope="module")
def operator(operator_env: dict[str, str], k8s: K8sEnv) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(k8s.workdir, operator_env).start()
    yield proc
    proc.stop()
