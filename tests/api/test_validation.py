"""Requests that do not match the lexicons get 400 InvalidRequest in the reference server's
words (never FastAPI's 422), parameters checked before the token and the token before the
body, against a real service process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.didserver import DidServer
from tests.support.identity import Identity
from tests.support.service import ServiceProcess
from tests.support.xrpc import SERVICE_DID, STATUS, user

START = "app.bsky.video.startUpload"
PART = "app.bsky.video.uploadPart"
UPLOAD_STATUS = "app.bsky.video.getUploadStatus"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, dids: DidServer) -> Iterator[ServiceProcess]:
    svc = ServiceProcess(tmp_path_factory.mktemp("validation"),
                         {"VIDEO_DID_PLC_URL": dids.url}).start()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def who(dids: DidServer) -> Identity:
    return user(dids)


def invalid(resp: httpx.Response) -> str:
    """The message of a 400 InvalidRequest."""
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert set(body) == {"error", "message"} and body["error"] == "InvalidRequest", body
    message: str = body["message"]
    return message


@pytest.mark.parametrize("params", [{}, {"jobId": ""}])
def test_a_missing_parameter(service: ServiceProcess, params: dict[str, str]) -> None:
    resp = httpx.get(f"{service.url}/xrpc/{STATUS}", params=params)
    assert invalid(resp) == 'Error: Params must have the property "jobId"'


@pytest.mark.parametrize(("number", "message"), [
    ("0", "Error: Params/partNumber can not be less than 1"),
    ("two", "Error: Params/partNumber must be an integer"),
])
def test_parameters_come_before_the_token(service: ServiceProcess, number: str,
                                          message: str) -> None:
    resp = httpx.post(f"{service.url}/xrpc/{PART}", params={"jobId": "x" * 40,
                                                            "partNumber": number})
    assert invalid(resp) == message
    resp = httpx.get(f"{service.url}/xrpc/{UPLOAD_STATUS}", params={"jobId": "x" * 257})
    assert invalid(resp) == "Error: Params/jobId must not be longer than 256 characters"


def test_the_token_comes_before_the_body(service: ServiceProcess) -> None:
    resp = httpx.post(f"{service.url}/xrpc/{START}", json={"sizeBytes": "many"})
    assert (resp.status_code, resp.json()["error"]) == (401, "AuthMissing")


GOOD = {"sizeBytes": 1000, "mimeType": "video/mp4"}


@pytest.mark.parametrize(("body", "message"), [
    ({"mimeType": "video/mp4"}, 'Input must have the property "sizeBytes"'),
    ({**GOOD, "sizeBytes": "1000"}, "Input/sizeBytes must be an integer"),
    ({**GOOD, "sizeBytes": True}, "Input/sizeBytes must be an integer"),
    ({**GOOD, "sizeBytes": 0}, "Input/sizeBytes can not be less than 1"),
    ({**GOOD, "mimeType": "v/"}, "Input/mimeType must not be shorter than 3 characters"),
    ({**GOOD, "mimeType": 5}, "Input/mimeType must be a string"),
    ({**GOOD, "name": "n" * 257}, "Input/name must not be longer than 256 characters"),
    # Lexicon lengths count UTF-8 bytes: 129 characters, 258 bytes.
    ({**GOOD, "name": "é" * 129}, "Input/name must not be longer than 256 characters"),
    ({**GOOD, "name": None}, "Input/name must not be null"),
    ({**GOOD, "width": 1.5}, "Input/width must be an integer"),
    ([GOOD], "Input must be an object"),
])
def test_bodies(service: ServiceProcess, who: Identity, body: Any, message: str) -> None:
    resp = httpx.post(f"{service.url}/xrpc/{START}", json=body,
                      headers={"authorization": f"Bearer {who.token(SERVICE_DID, START)}"})
    assert invalid(resp) == message


@pytest.mark.parametrize(("content", "ctype", "message"), [
    (b"", "application/json", "A request body is expected but none was provided"),
    (b'{"sizeBytes": 1', "application/json", None),
    (b'{"mimeType": "\xff\xfe"}', "application/json", None),  # not UTF-8 (found by fuzzing)
    (b"sizeBytes=1", "text/plain", "Wrong request encoding (Content-Type): text/plain"),
])
def test_bodies_that_are_not_json(service: ServiceProcess, who: Identity, content: bytes,
                                  ctype: str, message: str | None) -> None:
    resp = httpx.post(f"{service.url}/xrpc/{START}", content=content, headers={
        "authorization": f"Bearer {who.token(SERVICE_DID, START)}", "content-type": ctype})
    got = invalid(resp)
    assert got == message if message is not None else got


def test_unknown_input_properties_are_ignored(service: ServiceProcess, who: Identity) -> None:
    """Lexicon objects are open: a newer client's extra property is not an error."""
    resp = httpx.post(f"{service.url}/xrpc/{START}", json={**GOOD, "fps": 30},
                      headers={"authorization": f"Bearer {who.token(SERVICE_DID, START)}"})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"jobId", "partSizeBytes", "partCount", "expiresAt"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("signed", [False, True], ids=["no-token", "token"])
def test_json_bodies_are_bounded_before_the_token(service: ServiceProcess, who: Identity,
                                                  signed: bool, chunked: bool) -> None:
    """FastAPI reads a JSON body before the token check: a large one is refused."""
    headers = {"authorization": f"Bearer {who.token(SERVICE_DID, START)}"} if signed else {}
    body = json.dumps({**GOOD, "name": "n" * 100_000}).encode()
    content: bytes | Iterator[bytes] = iter([body[:50_000], body[50_000:]]) if chunked else body
    resp = httpx.post(f"{service.url}/xrpc/{START}", content=content,
                      headers={**headers, "content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"] == "PayloadTooLarge" and resp.json()["message"]
