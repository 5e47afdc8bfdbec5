"""``helm install`` with the chart's quickstart Postgres (``postgresql.enabled``) instead of a
``database.url``: the loopback values plus ``values-local-postgres.yaml``, the local stand-in
for the official postgres image, an upload through the deployed API reaching COMPLETED with
its record in the chart's own StatefulSet, and a generated password that survives
``helm upgrade --reuse-values`` and a restart of the Postgres pod."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.chart import CHART, Release, installed
from tests.support.cluster import Cluster
from tests.support.didserver import DidServer
from tests.support.media import make_clip
from tests.support.tempdirs import host_tmpdir
from tests.support.waiting import free_port, wait_for
from tests.support.xrpc import upload_as, user, wait_for_job

pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]

POSTGRES_UID = 999  # the official image's user


@pytest.fixture(scope="module")
def pg_data() -> Iterator[Path]:
    """The StatefulSet's data directory (persistence.hostPath), owned by the image's user."""
    with host_tmpdir("atproto-video-chart-pg-") as path:
        os.chown(path, POSTGRES_UID, POSTGRES_UID)
        yield path


@pytest.fixture(scope="module")
def release(
    cluster: Cluster,
    cluster_worker_image: str,
    cluster_postgres_image: str,
    helm: str,
    dids: DidServer,
    pg_data: Path,
) -> Iterator[Release]:
    repo, tag = cluster_postgres_image.rsplit(":", 1)
    with installed(
        cluster, helm, cluster_worker_image, dids,
        "-f", str(CHART / "values-local-postgres.yaml"),
        "--set", f"postgresql.image.repository={repo}",
        "--set", f"postgresql.image.tag={tag}",
        "--set", f"postgresql.port={free_port()}",
        "--set", f"postgresql.persistence.hostPath={pg_data}",
    ) as rel:  # fmt: skip
        yield rel


def statefulset(release: Release) -> str:
    return f"{release.name}-atproto-video-postgresql"


def secret(release: Release, name: str, key: str) -> str:
    data = release.kubectl("get", "secret", name, "-o", f"jsonpath={{.data.{key}}}").stdout
    return base64.b64decode(data).decode()


def database_url(release: Release) -> str:
    return secret(release, f"{release.name}-atproto-video-db", "url")


def job_state(release: Release, job_id: str) -> str | None:
    """The job's row, read straight from the chart's Postgres with the generated password."""
    try:
        with psycopg.connect(database_url(release), connect_timeout=10) as conn:
            row = conn.execute("SELECT state FROM video_job WHERE id = %s", (job_id,)).fetchone()
    except psycopg.OperationalError:
        return None
    return row[0] if row else None


def upload_completes(release: Release, dids: DidServer, clip: bytes) -> str:
    resp = upload_as(release, user(dids), clip)
    assert resp.status_code == 200, resp.text
    job_id: str = resp.json()["jobId"]
    st, _ = wait_for_job(release, job_id, timeout=400, logs=release.diagnostics)
    assert st["state"] == "JOB_STATE_COMPLETED", (st, release.diagnostics())
    return job_id


def test_an_upload_with_the_quickstart_postgres_completes(
    release: Release, dids: DidServer, pg_data: Path, cluster_postgres_image: str, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "c.mp4", seconds=2, size="640x360").read_bytes()
    job_id = upload_completes(release, dids, clip)

    listed = release.kubectl("get", "videojobs").stdout
    row = next(line for line in listed.splitlines() if line.startswith(job_id))
    assert "JOB_STATE_COMPLETED" in row, listed

    # The database is the chart's StatefulSet, on the host's loopback, with its data in the
    # hostPath; the URL the chart built carries the generated password.
    sts: dict[str, Any] = release.cluster.get_json("-n", release.namespace, "statefulset",
                                                   statefulset(release))  # fmt: skip
    assert sts["status"].get("readyReplicas") == 1
    pod = release.cluster.get_json("-n", release.namespace, "pod", f"{statefulset(release)}-0")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    assert pod["spec"]["containers"][0]["image"] == cluster_postgres_image
    assert pod["spec"]["securityContext"]["runAsUser"] == POSTGRES_UID
    password = secret(release, statefulset(release), "password")
    assert len(password) == 32
    url = database_url(release)
    assert url.startswith(f"postgresql://video:{password}@127.0.0.1:") and url.endswith("/video")
    assert (pg_data / "pgdata" / "PG_VERSION").read_text().strip() == "15"
    assert job_state(release, job_id) == "JOB_STATE_COMPLETED"


def test_the_password_survives_an_upgrade_and_a_postgres_restart(
    release: Release, dids: DidServer, tmp_path: Path
) -> None:
    password = secret(release, statefulset(release), "password")
    url = database_url(release)
    first = upload_completes(
        release, dids, make_clip(tmp_path / "a.mp4", seconds=1, size="320x240").read_bytes()
    )
    before = set(release.pods("{.items[*].metadata.uid}", "app.kubernetes.io/component=api")
                 .split())  # fmt: skip

    # --reuse-values, and a change that rolls the API: its migrate init container connects
    # again, with the password from the Secret the upgrade rendered.
    upgraded = release.helm_run(
        "upgrade",
        release.name,
        str(CHART),
        "--reuse-values",
        "--set",
        "limits.maxFps=50",
        "--wait",
        "--timeout",
        "5m",
    )
    assert upgraded.returncode == 0, upgraded.stderr + release.diagnostics()
    assert secret(release, statefulset(release), "password") == password
    assert database_url(release) == url
    wait_for(lambda: not (set(release.pods("{.items[*].metadata.uid}",
                                           "app.kubernetes.io/component=api").split()) & before),
             timeout=120, interval=1, what="the API pods rolled")  # fmt: skip

    # A new Postgres pod starts on the same data directory: no initdb, same password.
    release.kubectl("delete", "pod", f"{statefulset(release)}-0", "--wait=true")
    release.kubectl("rollout", "status", f"statefulset/{statefulset(release)}", "--timeout=180s")
    wait_for(lambda: job_state(release, first) == "JOB_STATE_COMPLETED", timeout=60,
             interval=1, what="the first job read back after the Postgres restart")  # fmt: skip
    upload_completes(
        release, dids, make_clip(tmp_path / "b.mp4", seconds=1, size="320x240").read_bytes()
    )
