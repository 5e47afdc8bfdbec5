"""The application's surface beyond the methods themselves, against a real service process:
the published schema and docs page (no CDN), unknown methods and wrong verbs, HEAD, router
errors, all as XRPC error bodies."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atproto_video.api.errors import InternalServerError, from_unexpected
from atproto_video.api.models import METHODS
from tests.support.didserver import DidServer
from tests.support.service import ServiceProcess
from tests.support.xrpc import STATUS, UPLOAD


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, dids: DidServer) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("app"), {"VIDEO_DID_PLC_URL": dids.url}).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def openapi(service: ServiceProcess) -> dict[str, Any]:
    resp = httpx.get(f"{service.url}/openapi.json")
    assert resp.status_code == 200
    schema: dict[str, Any] = resp.json()
    return schema


def test_the_schema_lists_every_method_with_its_parameters_and_errors(
    openapi: dict[str, Any],
) -> None:
    assert set(openapi["paths"]) == {f"/xrpc/{nsid}" for nsid in METHODS}
    for nsid, method in METHODS.items():
        operation = openapi["paths"][f"/xrpc/{nsid}"][method.http.lower()]
        assert operation["operationId"] == nsid
        names = {p["name"] for p in operation.get("parameters", [])}
        expected = set(method.params.model_fields) if method.params else set()
        assert names == expected, nsid
        described = " ".join(r["description"] for r in operation["responses"].values())
        for err in method.errors:
            assert f"`{err.name}`" in described, (nsid, err.name)
            assert str(err.status) in operation["responses"], (nsid, err.name)
        assert "400" in operation["responses"] and "422" not in operation["responses"]
        assert ("security" in operation) == (nsid != STATUS), nsid
    start = openapi["paths"]["/xrpc/app.bsky.video.startUpload"]["post"]
    assert "requestBody" in start
    upload = openapi["paths"][f"/xrpc/{UPLOAD}"]["post"]
    assert set(upload["requestBody"]["content"]) == {"video/mp4"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_need_no_cdn(service: ServiceProcess, page: str) -> None:
    resp = httpx.get(f"{service.url}{page}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in resp.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', resp.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    for source in sources:
        asset = httpx.get(f"{service.url}{source}")
        assert asset.status_code == 200 and len(asset.content) > 1000, source


def test_unknown_methods_and_wrong_verbs(service: ServiceProcess) -> None:
    for verb in ("GET", "POST", "PUT", "OPTIONS"):
        resp = httpx.request(verb, f"{service.url}/xrpc/app.bsky.video.doesNotExist")
        assert resp.status_code == 501, verb
        assert resp.json() == {"error": "MethodNotImplemented", "message": "Method Not Implemented"}
    resp = httpx.post(f"{service.url}/xrpc/{STATUS}")
    assert resp.status_code == 400
    assert resp.json() == {"error": "InvalidRequest",
                           "message": "Incorrect HTTP method (POST) expected GET"}
    resp = httpx.get(f"{service.url}/xrpc/{UPLOAD}")
    assert resp.json()["message"] == "Incorrect HTTP method (GET) expected POST"


def test_head_answers_as_get(service: ServiceProcess) -> None:
    resp = httpx.head(f"{service.url}/xrpc/{STATUS}", params={"jobId": "0" * 40})
    assert resp.status_code == 404 and resp.content == b""
    assert httpx.head(f"{service.url}/xrpc/_health").status_code == 200


def test_router_errors_are_xrpc_bodies(service: ServiceProcess) -> None:
    resp = httpx.get(f"{service.url}/nothing/here")
    assert resp.status_code == 404
    assert resp.json() == {"error": "NotFound", "message": "Not Found"}
    resp = httpx.post(f"{service.url}/livez")
    assert resp.status_code == 405 and resp.json()["error"] == "MethodNotAllowed"


def test_unexpected_failures_show_nothing_internal() -> None:
    err = from_unexpected(RuntimeError("password=hunter2 at db.internal:5432"))
    assert isinstance(err, InternalServerError) and err.status == 500
    assert err.body() == {"error": "InternalServerError", "message": "Internal Server Error"}
