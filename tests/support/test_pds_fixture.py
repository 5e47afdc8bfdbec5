"""The loopback PDS + PLC fixture behaves like the real network the video service talks to."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from .pds import LocalPDS, XrpcError, js_client_call

pytestmark = pytest.mark.pds

UPLOAD_BLOB = "com.atproto.repo.uploadBlob"


# ----------------------------------------------------------------------------- helpers
def blob_cid(data: bytes) -> str:
    """CIDv1, raw codec, sha-256, base32 lower without padding (SPEC section 4)."""
    raw = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Header, claims and raw signature, unverified (PyJWT decodes; nothing checked)."""
    got = jwt.decode_complete(token, options={"verify_signature": False})
    return got["header"], got["payload"], got["signature"]


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58decode(s: str) -> bytes:
    n = 0
    for ch in s:
        n = n * 58 + _B58.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\0" * (len(s) - len(s.lstrip("1"))) + body


def atproto_key(doc: dict[str, Any]) -> tuple[dict[str, Any], ec.EllipticCurvePublicKey]:
    """The #atproto verification method and its secp256k1 key, in either DID doc form."""
    vm = next(
        v for v in doc["verificationMethod"] if v["id"] in ("#atproto", doc["id"] + "#atproto")
    )
    assert vm["publicKeyMultibase"].startswith("z")
    raw = b58decode(vm["publicKeyMultibase"][1:])
    if vm["type"] == "Multikey":
        assert raw[:2] == b"\xe7\x01", "secp256k1 multicodec prefix"
        point = raw[2:]
        assert len(point) == 33
    else:
        assert vm["type"] == "EcdsaSecp256k1VerificationKey2019"
        point = raw
        assert len(point) == 65 and point[0] == 4, "legacy form: uncompressed point"
    return vm, ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), point)


def verify_es256k(key: ec.EllipticCurvePublicKey, token: str) -> None:
    """The PDS's token verifies with ``key`` (64-byte r||s, ES256K); raises if not."""
    assert len(jwt_parts(token)[2]) == 64
    jwt.PyJWS().decode_complete(token, key, algorithms=["ES256K"])


def pds_service(doc: dict[str, Any]) -> dict[str, Any]:
    return next(
        s for s in doc["service"] if s["id"] in ("#atproto_pds", doc["id"] + "#atproto_pds")
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def pds() -> Iterator[LocalPDS]:
    with LocalPDS() as p:
        yield p


# ----------------------------------------------------------------------------- the flow
def test_service_auth_upload_blob_post_and_get_blob(pds: LocalPDS) -> None:
    assert pds.pds_service_did == "did:web:localhost"
    # What social-app asks for before uploading a video: aud = PDS DID, 30 minutes,
    # fractional exp (Date.now()/1000 + 60*30).
    exp = time.time() + 1800
    token = pds.service_auth(pds.pds_service_did, UPLOAD_BLOB, exp=exp)
    header, payload, _sig = jwt_parts(token)
    assert header == {"typ": "JWT", "alg": "ES256K"}
    assert payload["iss"] == pds.did
    assert payload["aud"] == pds.pds_service_did
    assert payload["lxm"] == UPLOAD_BLOB
    assert payload["exp"] == int(exp)

    data = b"\x00\x00\x00\x18ftypmp42 not really a video " + bytes(range(64))
    res = httpx.post(
        f"{pds.pds_url}/xrpc/{UPLOAD_BLOB}",
        content=data,
        headers={"authorization": f"Bearer {token}", "content-type": "video/mp4"},
        trust_env=False,
    )
    assert res.status_code == 200, res.text
    blob = res.json()["blob"]
    assert blob == {
        "$type": "blob",
        "ref": {"$link": blob_cid(data)},
        "mimeType": "video/mp4",
        "size": len(data),
    }
    assert blob["ref"]["$link"].startswith("bafkrei")

    # Not served until a record references it.
    with pytest.raises(XrpcError) as unreferenced:
        pds.get_blob(blob["ref"]["$link"])
    assert unreferenced.value.status == 400

    rec = pds.create_post_with_video(res.json())
    assert rec["uri"].startswith(f"at://{pds.did}/app.bsky.feed.post/")
    assert rec["cid"].startswith("bafyrei")
    assert pds.get_blob(blob["ref"]["$link"]) == data


def test_pds_refuses_wrong_lxm_and_audience(pds: LocalPDS) -> None:
    data = b"abc"
    for aud, lxm, error in [
        (pds.pds_service_did, "app.bsky.video.uploadVideo", "BadJwtLexiconMethod"),
        ("did:web:video.test", UPLOAD_BLOB, "BadJwtAudience"),
    ]:
        token = pds.service_auth(aud, lxm)
        res = pds.xrpc(
            UPLOAD_BLOB,
            method="POST",
            content=data,
            token=token,
            headers={"content-type": "video/mp4"},
        )
        assert res.status_code == 401, (aud, lxm, res.text)
        assert res.json()["error"] == error
    with pytest.raises(XrpcError) as too_long:
        pds.service_auth(pds.pds_service_did, UPLOAD_BLOB, exp=time.time() + 7200)
    assert too_long.value.error == "BadExpiration"


def test_plc_did_document_current_format_matches_token_key(pds: LocalPDS) -> None:
    doc = pds.did_document()
    assert doc["id"] == pds.did
    assert "https://w3id.org/security/multikey/v1" in doc["@context"]
    assert doc["alsoKnownAs"] == [f"at://{pds.handle}"]
    svc = pds_service(doc)
    assert svc["type"] == "AtprotoPersonalDataServer"
    assert svc["serviceEndpoint"] == pds.pds_url
    assert "did:web:" + httpx.URL(svc["serviceEndpoint"]).host == pds.pds_service_did
    vm, key = atproto_key(doc)
    assert vm["id"] == f"{pds.did}#atproto"
    assert vm["type"] == "Multikey"
    assert vm["publicKeyMultibase"].startswith("zQ3s")
    # The key in the DID document verifies the PDS-issued service token.
    token = pds.service_auth("did:web:video.test", "app.bsky.video.uploadVideo")
    verify_es256k(key, token)
    with pytest.raises(jwt.InvalidSignatureError):
        verify_es256k(ec.generate_private_key(ec.SECP256K1()).public_key(), token)


def test_extra_account_has_own_did_and_tokens(pds: LocalPDS) -> None:
    bob = pds.create_account("bob.test", "bob-pass")
    assert bob.did.startswith("did:plc:") and bob.did != pds.did
    assert pds.did_document(bob.did)["alsoKnownAs"] == ["at://bob.test"]
    token = pds.service_auth(pds.pds_service_did, UPLOAD_BLOB, account=bob)
    _h, payload, _sig = jwt_parts(token)
    assert payload["iss"] == bob.did
    verify_es256k(atproto_key(pds.did_document(bob.did))[1], token)
    # ...and not with alice's key
    with pytest.raises(jwt.InvalidSignatureError):
        verify_es256k(atproto_key(pds.did_document())[1], token)


def test_pds_down_while_plc_stays_up(pds: LocalPDS) -> None:
    token = pds.service_auth(pds.pds_service_did, UPLOAD_BLOB)
    with pds.pds_down():
        with pytest.raises(httpx.ConnectError):
            httpx.post(
                f"{pds.pds_url}/xrpc/{UPLOAD_BLOB}",
                content=b"x",
                trust_env=False,
                headers={"authorization": f"Bearer {token}"},
            )
        assert pds.did_document()["id"] == pds.did  # PLC still answers
    # back on the same port, same data, and the same token still works
    res = pds.xrpc(
        UPLOAD_BLOB,
        method="POST",
        content=b"after outage",
        token=token,
        headers={"content-type": "video/mp4"},
    )
    assert res.status_code == 200, res.text
    assert res.json()["blob"]["ref"]["$link"] == blob_cid(b"after outage")

    with pds.pds_down("error"):
        res = pds.xrpc("_health")
        assert res.status_code == 503
        assert res.json()["error"] == "ServiceUnavailable"
    with pds.pds_down("hang"), pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{pds.pds_direct_url}/xrpc/_health", timeout=1.0, trust_env=False)
    assert pds.xrpc("_health").status_code == 200


def test_legacy_did_doc_blob_limit_and_clean_stop() -> None:
    legacy = LocalPDS(plc_doc_format="legacy", blob_upload_limit=1000).start()
    try:
        pid, ports = legacy.pid, [legacy.info["pdsPort"], legacy.info["plcPort"]]
        work = legacy.log_path.parent
        assert legacy.startup_ms > 0 and legacy.rss_bytes() > 50 * 2**20
        doc = legacy.did_document()
        vm, key = atproto_key(doc)
        assert vm["id"] == "#atproto"
        assert vm["type"] == "EcdsaSecp256k1VerificationKey2019"
        assert pds_service(doc)["serviceEndpoint"] == legacy.pds_url
        token = legacy.service_auth(legacy.pds_service_did, UPLOAD_BLOB)
        verify_es256k(key, token)
        for size, status in [(1001, 413), (1000, 200)]:
            res = legacy.xrpc(
                UPLOAD_BLOB,
                method="POST",
                content=b"\0" * size,
                token=token,
                headers={"content-type": "video/mp4"},
            )
            assert res.status_code == status, res.text
            if status == 413:
                assert res.json()["error"] == "PayloadTooLarge"
    finally:
        legacy.stop()
    # stop(): no process, no listener, no files left
    assert not _alive(pid)
    assert not work.exists()
    for port in ports:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", trust_env=False)
    legacy.stop()  # idempotent


# ----------------------------------------------------------------------------- JS client
class _VideoStub(BaseHTTPRequestHandler):
    """A stand-in video service answering fixed documents, to exercise client-call.js."""

    answers: dict[str, tuple[int, Any]] = {}
    seen: list[dict[str, Any]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        url = httpx.URL(self.path)
        self.seen.append(
            {
                "path": url.path,
                "query": dict(url.params),
                "body": body,
                "auth": self.headers.get("authorization"),
                "ctype": self.headers.get("content-type"),
            }
        )
        status, doc = self.answers[url.path.rsplit("/", 1)[1]]
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def video_stub() -> Iterator[tuple[str, type[_VideoStub]]]:
    handler = type("Stub", (_VideoStub,), {"answers": {}, "seen": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_js_client_parses_valid_and_rejects_invalid_answers(
    video_stub: tuple[str, type[_VideoStub]], tmp_path: Path
) -> None:
    url, stub = video_stub
    job = {"jobId": "j" * 24, "did": "did:plc:abc", "state": "JOB_STATE_ENCODING", "progress": 40}
    stub.answers["app.bsky.video.getJobStatus"] = (200, {"jobStatus": job})
    out = js_client_call("getJobStatus", url, params={"jobId": job["jobId"]})
    assert out["ok"] is True and out["status"] == 200
    assert out["data"] == {"jobStatus": job}
    assert stub.seen[-1]["query"] == {"jobId": job["jobId"]}
    assert stub.seen[-1]["auth"] is None  # clients poll status without a token

    # missing required "state": the lexicon-validating client refuses it
    stub.answers["app.bsky.video.getJobStatus"] = (
        200,
        {"jobStatus": {"jobId": "x", "did": "did:plc:abc"}},
    )
    bad = js_client_call("getJobStatus", url, params={"jobId": "x"})
    assert bad["ok"] is False and bad["invalidResponse"] is True
    assert "state" in bad["validationError"]

    stub.answers["app.bsky.video.getUploadLimits"] = (
        200,
        {"canUpload": True, "remainingDailyVideos": 25, "remainingDailyBytes": 10**10},
    )
    limits = js_client_call("getUploadLimits", url, token="tok.en.x")
    assert limits["ok"] is True and limits["data"]["remainingDailyVideos"] == 25
    assert stub.seen[-1]["auth"] == "Bearer tok.en.x"

    stub.answers["app.bsky.video.uploadVideo"] = (200, {"jobStatus": job, **job})
    up = js_client_call(
        "uploadVideo",
        url,
        token="t",
        body=b"\0\1\2video",
        encoding="video/quicktime",
        query={"did": "did:plc:abc", "name": "x.mov"},
    )
    assert up["ok"] is True and up["data"]["jobStatus"]["jobId"] == job["jobId"]
    last = stub.seen[-1]
    assert last["body"] == b"\0\1\2video" and last["ctype"] == "video/quicktime"
    assert last["query"] == {"did": "did:plc:abc", "name": "x.mov"}

    stub.answers["app.bsky.video.uploadVideo"] = (
        401,
        {"error": "BadJwtAudience", "message": "nope"},
    )
    err = js_client_call("uploadVideo", url, token="t", body=b"v")
    assert err == {
        "ok": False,
        "status": 401,
        "error": "BadJwtAudience",
        "message": "nope",
        "invalidResponse": False,
    }
    assert stub.seen[-1]["body"] == b"v" and stub.seen[-1]["query"] == {}
