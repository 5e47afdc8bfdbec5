"""DID resolution against hosts that misbehave: bounded bodies, pinned addresses, shared
lookups that survive a cancelled caller, and no upstream detail in what clients see."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atproto_video.api.auth import ServiceAuthVerifier
from atproto_video.api.errors import XrpcError
from atproto_video.api.identity import (
    MAX_DOCUMENT_BYTES,
    MAX_MULTIBASE_CHARS,
    DidError,
    DidResolver,
    ResolverUnavailable,
    did_web_url,
    document_url,
    parse_document,
    parse_multikey,
)
from atproto_video.api.service import VideoService
from atproto_video.core.config import VideoConfig
from tests.support.didserver import DidServer, HostileDidHost
from tests.support.identity import Identity, new_plc_did
from tests.support.waiting import wait_for

SERVICE = "did:web:video.example.com"
LXM = "app.bsky.video.uploadVideo"
pytestmark = pytest.mark.anyio


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[HostileDidHost]:
    host = HostileDidHost(request.param).start()
    try:
        yield host
    finally:
        host.stop()


@pytest.mark.parametrize("hostile", ["endless", "declared", "gzip"], indirect=True)
async def test_oversized_did_web_documents_are_refused_unread(hostile: HostileDidHost) -> None:
    resolver = DidResolver("http://127.0.0.1:9", allow_private=True, timeout=30)
    try:
        with pytest.raises(DidError, match=r"too large|compressed"):
            await resolver.resolve(hostile.did)
    finally:
        await resolver.aclose()
    # The reader hung up after about the cap; the host could not push its gigabyte (socket
    # buffers on loopback hold a few MiB at most).
    wait_for(hostile.done.is_set, timeout=30, what="the host noticing the hang-up")
    assert hostile.sent < 64 * MAX_DOCUMENT_BYTES + (8 << 20)
    assert hostile.sent < 1 << 30


@pytest.mark.parametrize("hostile", ["endless"], indirect=True)
async def test_oversized_document_is_a_bad_issuer(hostile: HostileDidHost) -> None:
    resolver = DidResolver("http://127.0.0.1:9", allow_private=True, timeout=30)
    who = Identity(hostile.did)
    with pytest.raises(XrpcError) as err:
        await ServiceAuthVerifier(SERVICE, resolver).verify(
            f"Bearer {who.token(SERVICE, LXM)}", LXM
        )
    await resolver.aclose()
    assert (err.value.status, err.value.name) == (401, "BadJwtIss")


@pytest.mark.parametrize("hostile", ["drip"], indirect=True)
async def test_a_dripping_host_gets_the_whole_timeout_and_no_more(
    hostile: HostileDidHost,
) -> None:
    """Every read makes progress, so per-read timeouts alone would wait for ever."""
    resolver = DidResolver("http://127.0.0.1:9", allow_private=True, timeout=1.0)
    try:
        with pytest.raises(ResolverUnavailable):
            await resolver.resolve(hostile.did)
    finally:
        await resolver.aclose()


async def test_did_web_fetch_goes_to_the_checked_address() -> None:
    """DNS rebinding: the name is looked up once, checked, and that address is connected to."""
    who = Identity("did:web:alice.example.com")
    lookups: list[str] = []

    async def rebinding(host: str, _port: int) -> list[str]:
        lookups.append(host)  # a public address for the check, loopback for anyone asking again
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=who.document())

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    resolver = DidResolver("https://plc.example", client=client, resolve=rebinding)
    doc = await resolver.resolve(who.did)
    await resolver.aclose()
    assert doc.did == who.did and lookups == ["alice.example.com"]
    (req,) = seen
    assert str(req.url) == "https://93.184.216.34/.well-known/did.json"
    assert req.headers["host"] == "alice.example.com"
    assert req.extensions["sni_hostname"] == "alice.example.com"  # TLS checks the name

    async def private(_host: str, _port: int) -> list[str]:
        return ["10.0.0.7"]

    strict = DidResolver(
        "https://plc.example",
        client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        resolve=private,
    )
    with pytest.raises(DidError) as err:
        await strict.resolve(who.did)
    await strict.aclose()
    assert "10.0.0.7" not in str(err.value)  # no internal addresses in the client's message
    assert len(seen) == 1


async def test_a_cancelled_caller_does_not_fail_the_others(did_server: DidServer) -> None:
    who = Identity(new_plc_did())
    did_server.publish(who)
    did_server.gate = threading.Event()
    resolver = DidResolver(did_server.url, allow_private=True)
    try:
        leader = asyncio.create_task(resolver.resolve(who.did))
        await asyncio.to_thread(
            wait_for, lambda: did_server.requests, timeout=30, what="the lookup in flight"
        )
        follower = asyncio.create_task(resolver.resolve(who.did))
        await asyncio.sleep(0)  # the follower joins the lookup in flight
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        did_server.gate.set()
        doc = await follower
        assert doc.did == who.did
        assert len(did_server.requests) == 1  # one shared lookup, finished for the follower
        assert (await resolver.resolve(who.did)) is doc  # and cached
    finally:
        did_server.gate.set()
        await resolver.aclose()


@pytest.mark.parametrize("status", [403, 401, 418, 502, 503])
async def test_upstream_status_is_logged_not_told(
    did_server: DidServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    who = Identity(new_plc_did())
    did_server.fail_with = status
    resolver = DidResolver(did_server.url, allow_private=True)
    with (
        caplog.at_level(logging.INFO, logger="atproto_video.api.identity"),
        pytest.raises(XrpcError) as err,
    ):
        await ServiceAuthVerifier(SERVICE, resolver).verify(
            f"Bearer {who.token(SERVICE, LXM)}", LXM
        )
    await resolver.aclose()
    expected = (401, "BadJwtIss") if status < 500 else (503, "NotEnoughResources")
    assert (err.value.status, err.value.name) == expected
    assert str(status) not in err.value.message
    logged = [r for r in caplog.records if getattr(r, "did", None) == who.did]
    assert [getattr(r, "status", None) for r in logged] == [status]


async def test_the_service_resolves_with_the_configured_interval(tmp_path: Path) -> None:
    cfg = VideoConfig.from_env({
        "VIDEO_SERVICE_DID": SERVICE, "VIDEO_DATA_DIR": str(tmp_path),
        "VIDEO_DID_REFRESH_INTERVAL_S": "7.5"})  # fmt: skip
    svc = VideoService.create(cfg)
    try:
        assert svc.resolver.refresh_interval == 7.5
        assert svc.ctx.verifier.resolver is svc.resolver
    finally:
        await svc.stop()


def test_hostile_documents_are_did_errors() -> None:
    """Found by tests/api/test_identity_fuzz.py: each of these escaped parse_document as a
    TypeError or ValueError (a 500 where the caller expects BadJwtIss)."""
    did = "did:plc:fuzzfindings"
    key = Identity(did).public_multibase()
    vm = {"id": "#atproto", "type": "Multikey", "publicKeyMultibase": key}
    refused = {
        "verificationMethod a number": {"verificationMethod": 5},
        "verificationMethod an object": {"verificationMethod": vm},
        "service true": {"service": True},
        "Multikey not base58": {"verificationMethod": [{**vm, "publicKeyMultibase": "z0OIl"}]},
        "legacy key not base58": {"verificationMethod": [
            {**vm, "type": "EcdsaSecp256k1VerificationKey2019", "publicKeyMultibase": "zO"}]},
        # base58 decoding is quadratic: 60 000 characters took 0.8 s of the event loop.
        "key too long": {"verificationMethod": [{**vm, "publicKeyMultibase": "z" + "2" * 60_000}]},
    }  # fmt: skip
    for fields in refused.values():
        with pytest.raises(DidError):
            parse_document(did, {"id": did, **fields})
    # A type that is a list or an object (unhashable) is just not a key type.
    for odd in ([1], {}):
        doc = parse_document(did, {"id": did, "verificationMethod": [{**vm, "type": odd}]})
        assert doc.signing_key is None
    assert parse_document(did, {"id": did, "verificationMethod": None}).signing_key is None
    assert parse_document(did, {"id": did, "verificationMethod": [vm]}).signing_key is not None
    with pytest.raises(DidError, match="too long"):
        parse_multikey("z" + "2" * MAX_MULTIBASE_CHARS)


def test_did_web_names_a_host_and_nothing_else() -> None:
    """Found by tests/api/test_identity_fuzz.py: percent-escapes decoded into the URL moved
    the request to another host over http ("localhost:1@evil.com"), a path or a fragment."""
    for did in (
        "did:web:localhost%3A1%40evil.com", "did:web:evil.com%2Fpath", "did:web:localhost%2F..",
        "did:web:a%23b", "did:web:%5B", "did:web:a%3Fq", "did:web:localhost%3A99999",
        "did:web:localhost%3A0", "did:web:example.com%3A443", "did:web:a%20b", "did:web:",
    ):  # fmt: skip
        with pytest.raises(DidError):
            did_web_url(did)
    assert did_web_url("did:web:example.com") == "https://example.com/.well-known/did.json"
    assert did_web_url("did:web:localhost%3A2585") == "http://localhost:2585/.well-known/did.json"
    assert did_web_url("did:web:LOCALHOST") == "http://LOCALHOST/.well-known/did.json"


def test_document_url_is_the_one_place_a_did_becomes_an_address() -> None:
    """The service's resolver and the upload command both fetch documents from here."""
    assert document_url("did:plc:abc", "http://127.0.0.1:2582/") == "http://127.0.0.1:2582/did:plc:abc"
    assert document_url("did:web:example.com", "http://plc") == (
        "https://example.com/.well-known/did.json"
    )
    for did in ("did:key:z6Mk", "did:web:evil.com%2Fpath", "handle.example"):
        with pytest.raises(DidError):
            document_url(did, "http://plc")
