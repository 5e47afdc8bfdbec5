"""core/kube.py: failed API calls are counted by operation and status, outcomes are not.

The client is the real kubernetes client talking real HTTP to a loopback stand-in for the
API server that answers with fixed statuses (the cluster tests use a real API server).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

from atproto_video.core.kube import Kube
from atproto_video.core.metrics import REGISTRY
from tests.support.waiting import free_port

ERRORS = "atproto_video_kube_api_errors_total"


class _Answers(BaseHTTPRequestHandler):
    """GET: 403 (RBAC); POST: 409 for VideoJobs, 500 for Jobs; DELETE: 404."""

    def _answer(self, status: int) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"kind": "Status", "code": status, "message": f"status {status}"})
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def do_GET(self) -> None:
        self._answer(403)

    def do_POST(self) -> None:
        self._answer(409 if "/videojobs" in self.path else 500)

    def do_DELETE(self) -> None:
        self._answer(404)

    def log_message(self, *_args: object) -> None:
        pass


def kube_at(url: str) -> Kube:
    cfg = client.Configuration(host=url)
    cfg.retries = 0  # a refused connection is reported at once
    return Kube(client.ApiClient(cfg))


@pytest.fixture
def apiserver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def errors(operation: str, code: str) -> float:
    return REGISTRY.get_sample_value(ERRORS, {"operation": operation, "code": code}) or 0.0


def test_failed_calls_are_counted_by_operation_and_status(apiserver: str) -> None:
    kube = kube_at(apiserver)
    before = {k: errors(*k) for k in (("list_jobs", "403"), ("list_pods", "403"),
                                      ("create_job", "500"), ("create_videojob", "409"),
                                      ("delete_job", "404"), ("delete_videojob", "404"))}
    try:
        with pytest.raises(ApiException):
            kube.list_jobs("video", "a=b")
        with pytest.raises(ApiException):
            kube.list_pods("video", "a=b")
        job = {"metadata": {"name": "j"}}
        with pytest.raises(ApiException):
            kube.create_or_get_job("video", job)
        # Outcomes the methods handle are not errors: exists already, gone already.
        assert kube.create_videojob("video", {"metadata": {"name": "vj"}}) is False
        kube.delete_job("video", "j")
        kube.delete_videojob("video", "vj")
    finally:
        kube.close()
    after = {k: errors(*k) for k in before}
    assert {k: after[k] - before[k] for k in before} == {
        ("list_jobs", "403"): 1, ("list_pods", "403"): 1, ("create_job", "500"): 1,
        ("create_videojob", "409"): 0, ("delete_job", "404"): 0, ("delete_videojob", "404"): 0,
    }


def test_no_answer_is_counted_as_network() -> None:
    kube = kube_at(f"http://127.0.0.1:{free_port()}")  # nobody listens
    before = errors("list_videojobs", "network")
    try:
        with pytest.raises(MaxRetryError):  # urllib3's answer to a refused connection
            kube.list_videojobs("video")
    finally:
        kube.close()
    assert errors("list_videojobs", "network") == before + 1
