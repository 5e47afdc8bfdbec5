"""The operator's own worker Job watch (an informer instead of kopf's index).

The index rules and a relist's deletions are checked on plain dicts; the list, watch and
resume against the real API server of the test cluster, with the operator's service account
(a 410 Gone could not be provoked on demand there: a watch from resourceVersion 1 was served).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, config

from atproto_video.core.kube import Kube
from atproto_video.operator.handlers import API_ERROR_BACKOFFS
from atproto_video.operator.jobwatch import JobIndex, JobWatch
from atproto_video.operator.templates import LABEL_JOB_ID
from tests.support.k8s import K8sEnv


def job(name: str, owner: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {LABEL_JOB_ID: owner}}, "status": status}


def test_the_index_groups_jobs_by_videojob_and_follows_changes() -> None:
    index = JobIndex()
    index.apply("ADDED", job("a-1", "a"))
    index.apply("ADDED", job("a-2", "a"))
    index.apply(None, job("b-1", "b"))
    assert sorted(index) == ["a", "b"] and len(index["a"]) == 2
    index.apply("MODIFIED", job("a-1", "a", ready=1))
    assert {j["metadata"]["name"]: j["status"] for j in index["a"]} == {
        "a-1": {"ready": 1}, "a-2": {}}
    index.apply("DELETED", job("a-1", "a"))
    index.apply("DELETED", job("a-2", "a"))
    assert "a" not in index and index.get("a", ()) == () and index.names() == {"b-1"}


def test_a_relist_reports_what_disappeared_meanwhile_as_deleted() -> None:
    told: list[tuple[str | None, str]] = []

    def on_event(kind: str | None, body: dict[str, Any]) -> None:
        told.append((kind, body["metadata"]["name"]))

    watch = JobWatch(Kube.__new__(Kube), "ns", on_event, backoffs=(1.0,))
    watch._relisted([job("a-1", "a"), job("a-2", "a")])
    assert watch.synced.is_set() and len(watch.index["a"]) == 2
    told.clear()
    watch._relisted([job("a-2", "a", succeeded=1)])  # a-1 deleted while not watching
    assert told == [("DELETED", "a-1"), (None, "a-2")]
    assert [j["metadata"]["name"] for j in watch.index["a"]] == ["a-2"]


# -- against the test cluster ------------------------------------------------------------------


def operator_kube(k8s: K8sEnv) -> Kube:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(k8s.operator_kubeconfig),  # type: ignore[no-untyped-call]
                            client_configuration=cfg)
    return Kube(client.ApiClient(cfg))


def suspended_job(k8s: K8sEnv, name: str, owner: str) -> None:
    """A Job that never runs a pod (suspended), created by the cluster admin."""
    manifest = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {LABEL_JOB_ID: owner}},
        "spec": {"suspend": True, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "nowhere.invalid/none:1"}]}}},
    }
    path = k8s.workdir / f"{name}.json"
    path.write_text(json.dumps(manifest))
    k8s.kubectl("create", "-f", str(path))


async def until(cond: Callable[[], bool], what: str, rounds: int = 600) -> None:
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_the_watch_lists_follows_and_resumes_against_the_api_server(k8s: K8sEnv) -> None:
    kube = operator_kube(k8s)
    suspended_job(k8s, "jw-before", "vj-a")  # listed, not watched
    told: list[tuple[str | None, str]] = []

    def on_event(kind: str | None, body: dict[str, Any]) -> None:
        told.append((kind, body["metadata"]["name"]))

    async def main() -> None:
        # A short server timeout: the stream ends and is resumed from its resourceVersion.
        watch = JobWatch(kube, k8s.namespace, on_event, backoffs=API_ERROR_BACKOFFS,
                         server_timeout_s=2)
        stop = asyncio.Event()
        runner = asyncio.create_task(watch.run(stop))
        try:
            await asyncio.wait_for(watch.synced.wait(), 30)
            assert [j["metadata"]["name"] for j in watch.index["vj-a"]] == ["jw-before"]
            assert (None, "jw-before") in told
            await asyncio.sleep(3)  # past the server timeout: watching again
            suspended_job(k8s, "jw-after", "vj-a")
            await until(lambda: ("ADDED", "jw-after") in told, "the new Job's ADDED")
            assert len(watch.index["vj-a"]) == 2
            k8s.kubectl("delete", "job", "jw-before", "--wait=false")
            await until(lambda: ("DELETED", "jw-before") in told, "the deletion")
            assert [j["metadata"]["name"] for j in watch.index["vj-a"]] == ["jw-after"]
            assert watch.lists == 1, "a resumed watch listed again"
        finally:
            stop.set()
            await runner

    try:
        asyncio.run(main())
    finally:
        kube.close()
        k8s.kubectl("delete", "jobs", "-l", LABEL_JOB_ID, "--wait=false", check=False)
