from __future__ import annotations

import time
from collections.abc import AsyncIterator

import jwt
import pytest

from atproto_video.api.auth import MAX_LIFETIME_S, Caller, ServiceAuthVerifier
from atproto_video.api.errors import AuthRequired, NotEnoughResources, XrpcError
from atproto_video.api.identity import DidResolver
from tests.support.didserver import DidServer
from tests.support.identity import Identity, is_high_s, new_plc_did

SERVICE = "did:web:video.example.com"
LXM = "app.bsky.video.uploadVideo"
pytestmark = pytest.mark.anyio


@pytest.fixture
async def verifier(did_server: DidServer) -> AsyncIterator[ServiceAuthVerifier]:
    resolver = DidResolver(did_server.url, allow_private=True)
    yield ServiceAuthVerifier(SERVICE, resolver)
    await resolver.aclose()


def ident(did_server: DidServer, **kw: object) -> Identity:
    who = Identity(new_plc_did(), **kw)  # type: ignore[arg-type]
    did_server.publish(who)
    return who


async def verify(v: ServiceAuthVerifier, token: str | None, lxm: str = LXM, **kw: bool) -> Caller:
    return await v.verify(f"Bearer {token}" if token is not None else None, lxm, **kw)


async def refused(v: ServiceAuthVerifier, token: str | None, **kw: bool) -> XrpcError:
    with pytest.raises(XrpcError) as err:
        await verify(v, token, **kw)
    return err.value


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
@pytest.mark.parametrize("form", ["multikey", "legacy"])
async def test_valid_tokens(
    verifier: ServiceAuthVerifier, did_server: DidServer, alg: str, form: str
) -> None:
    who = ident(did_server, alg=alg, key_form=form)
    first = who.token(SERVICE, LXM)
    caller = await verify(verifier, first)
    assert caller.did == who.did and caller.mode == "seed"
    assert first not in repr(caller)
    # aud with a fragment, iss with a fragment, fractional exp and a high-S signature are fine.
    token = who.token(
        SERVICE + "#bsky_video", LXM, iss=who.did + "#atproto", exp=time.time() + 30.5, high_s=True
    )
    assert is_high_s(token, who.alg) and not is_high_s(first, who.alg)
    assert (await verify(verifier, token)).did == who.did


@pytest.mark.parametrize("alg", ["ES256K", "ES256"])
async def test_signature_forms(
    verifier: ServiceAuthVerifier, did_server: DidServer, alg: str
) -> None:
    """Only the 64-byte r||s form verifies; both halves of the S range do (reference rules)."""
    who = ident(did_server, alg=alg)
    for high in (False, True):
        token = who.token(SERVICE, LXM, high_s=high)
        assert is_high_s(token, who.alg) is high
        assert (await verify(verifier, token)).did == who.did
    der = who.token(SERVICE, LXM, der=True)  # a valid signature, in the wrong encoding
    assert (await refused(verifier, der)).name == "BadJwtSignature"


@pytest.mark.parametrize(("key_alg", "header_alg"), [("ES256K", "ES256"), ("ES256", "ES256K")])
async def test_alg_is_bound_to_the_key_type(
    verifier: ServiceAuthVerifier, did_server: DidServer, key_alg: str, header_alg: str
) -> None:
    # Both are ECDSA over SHA-256: the signature itself is valid for the key; the alg is not.
    who = ident(did_server, alg=key_alg)
    token = who.token(SERVICE, LXM, header={"typ": "JWT", "alg": header_alg})
    assert jwt.get_unverified_header(token)["alg"] == header_alg
    assert (await refused(verifier, token)).name == "BadJwtSignature"


async def test_failures_have_reference_names(
    verifier: ServiceAuthVerifier, did_server: DidServer
) -> None:
    who = ident(did_server)
    other = ident(did_server)
    now = time.time()
    cases = {
        "AuthMissing": None,
        "BadJwt": "not-a-jwt",
        "BadJwtType": who.token(SERVICE, LXM, header={"typ": "at+jwt", "alg": "ES256K"}),
        "JwtExpired": who.token(SERVICE, LXM, exp=now - 5),
        "BadJwtAudience": who.token("did:web:elsewhere.example", LXM),
        "BadJwtLexiconMethod": who.token(SERVICE, "app.bsky.video.getUploadLimits"),
        "BadJwtIss": who.token(SERVICE, LXM, iss="alice.example"),
        "BadJwtSignature": other.token(SERVICE, LXM, iss=who.did),
    }
    for name, token in cases.items():
        err = await refused(verifier, token)
        assert isinstance(err, AuthRequired), name
        assert (err.status, err.name) == (401, name)
    missing_lxm = await refused(verifier, who.token(SERVICE, None))
    assert missing_lxm.name == "BadJwtLexiconMethod"
    too_long = await refused(verifier, who.token(SERVICE, LXM, exp=now + 7200))
    assert too_long.name == "BadJwt"
    at_cap = who.token(SERVICE, LXM, exp=now + MAX_LIFETIME_S - 30)
    assert (await verify(verifier, at_cap)).did == who.did
    bad_alg = await refused(verifier, who.token(SERVICE, LXM, header={"alg": "ES256"}))
    assert bad_alg.name == "BadJwtSignature"
    unsigned = jwt.PyJWS()
    malformed = {
        "no alg": unsigned.encode(b"{}", None, algorithm=None, headers={"alg": None}),
        "payload not an object": unsigned.encode(b"[]", None, algorithm=None),
        "payload not JSON": unsigned.encode(b"{", None, algorithm=None),
        "four parts": who.token(SERVICE, LXM) + ".x",
        "exp not a number": who.token(SERVICE, LXM, extra={"exp": "soon"}),
        "exp NaN": who.token(SERVICE, LXM, extra={"exp": float("nan")}),
        # Found by tests/api/test_auth_fuzz.py: math.isfinite(10**400) overflowed into a 500.
        "exp beyond float range": who.token(SERVICE, LXM, extra={"exp": 10**400}),
        "aud not a string": who.token(SERVICE, LXM, extra={"aud": [SERVICE]}),
        "not base64": "a!.b.c",
    }
    for what, token in malformed.items():
        assert (await refused(verifier, token)).name == "BadJwt", what
    # The header is read first: a refused typ wins over a broken payload, as in the reference.
    typ_first = unsigned.encode(b"[]", None, algorithm=None, headers={"typ": "dpop+jwt"})
    assert (await refused(verifier, typ_first)).name == "BadJwtType"
    for typ in ("refresh+jwt", "dpop+jwt"):
        header = {"typ": typ, "alg": "ES256K"}
        assert (await refused(verifier, who.token(SERVICE, LXM, header=header))).name == (
            "BadJwtType"
        )
    unknown_did = Identity(new_plc_did())
    assert (await refused(verifier, unknown_did.token(SERVICE, LXM))).name == "BadJwtIss"


class Clock:
    """The resolver's monotonic clock, moved by the test: intervals without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_key_rotation_forces_one_re_resolution(did_server: DidServer) -> None:
    clock = Clock()
    resolver = DidResolver(did_server.url, allow_private=True, refresh_interval=60, clock=clock)
    verifier = ServiceAuthVerifier(SERVICE, resolver)
    who = ident(did_server)
    await verify(verifier, who.token(SERVICE, LXM))
    fetched = len(did_server.requests)
    await verify(verifier, who.token(SERVICE, LXM))
    assert len(did_server.requests) == fetched  # cached
    who.rotate()
    did_server.publish(who)
    clock.now += 61
    await verify(verifier, who.token(SERVICE, LXM))
    assert len(did_server.requests) == fetched + 1
    await verify(verifier, who.token(SERVICE, LXM))  # the new key is cached
    assert len(did_server.requests) == fetched + 1
    await resolver.aclose()


async def test_bad_signatures_force_at_most_one_lookup_per_interval(
    did_server: DidServer,
) -> None:
    """A bad signature costs an upstream fetch only once per DID per refresh interval."""
    clock = Clock()
    resolver = DidResolver(did_server.url, allow_private=True, refresh_interval=60, clock=clock)
    verifier = ServiceAuthVerifier(SERVICE, resolver)
    who, forger = ident(did_server), ident(did_server)
    forged = forger.token(SERVICE, LXM, iss=who.did)
    await verify(verifier, who.token(SERVICE, LXM))
    assert len(did_server.requests) == 1
    for _ in range(5):  # fetched moments ago: no fetch forced
        assert (await refused(verifier, forged)).name == "BadJwtSignature"
    assert len(did_server.requests) == 1
    clock.now += 61
    for _ in range(5):  # one forced fetch, then the interval again
        assert (await refused(verifier, forged)).name == "BadJwtSignature"
    assert len(did_server.requests) == 2
    # A rotation inside the interval is picked up once the interval has passed.
    who.rotate()
    did_server.publish(who)
    rotated = who.token(SERVICE, LXM)
    assert (await refused(verifier, rotated)).name == "BadJwtSignature"
    assert len(did_server.requests) == 2
    clock.now += 60
    assert (await verify(verifier, rotated)).did == who.did
    assert len(did_server.requests) == 3
    # Other DIDs have their own interval.
    other = ident(did_server)
    await verify(verifier, other.token(SERVICE, LXM))
    assert len(did_server.requests) == 4
    await resolver.aclose()


async def test_unreachable_resolver_is_503(did_server: DidServer) -> None:
    who = ident(did_server)
    did_server.fail_with = 502
    resolver = DidResolver(did_server.url, allow_private=True)
    err = await refused(ServiceAuthVerifier(SERVICE, resolver), who.token(SERVICE, LXM))
    assert isinstance(err, NotEnoughResources) and err.status == 503
    dead = DidResolver("http://127.0.0.1:9", allow_private=True)
    err = await refused(ServiceAuthVerifier(SERVICE, dead), who.token(SERVICE, LXM))
    assert err.status == 503
    await resolver.aclose()
    await dead.aclose()


async def test_did_web_issuer(did_server: DidServer) -> None:
    who = Identity(f"did:web:localhost%3A{did_server.port}")
    did_server.publish(who)
    did_server.web_did = who.did
    resolver = DidResolver("http://127.0.0.1:9", allow_private=True)
    caller = await verify(ServiceAuthVerifier(SERVICE, resolver), who.token(SERVICE, LXM))
    assert caller.did == who.did
    strict = DidResolver("http://127.0.0.1:9", allow_private=False)
    err = await refused(ServiceAuthVerifier(SERVICE, strict), who.token(SERVICE, LXM))
    assert err.name == "BadJwtIss"  # http/loopback did:web refused without the dev setting
    await resolver.aclose()
    await strict.aclose()


async def test_pds_audience_mode(did_server: DidServer) -> None:
    who = Identity(new_plc_did(), pds_endpoint="http://localhost:2583")
    did_server.publish(who)
    resolver = DidResolver(did_server.url, allow_private=True)
    v = ServiceAuthVerifier(SERVICE, resolver)
    token = who.token("did:web:localhost", "com.atproto.repo.uploadBlob")
    caller = await verify(v, token, allow_pds_audience=True)
    assert caller.mode == "pds"
    err = await refused(
        v, who.token("did:web:evil.example", "com.atproto.repo.uploadBlob"), allow_pds_audience=True
    )
    assert err.name == "BadJwtAudience"
    assert err.message == (
        'invalid token audience "did:web:evil.example", '
        'should be the user\'s PDS DID "did:web:localhost"'
    )
    err = await refused(v, who.token("did:web:localhost", LXM), allow_pds_audience=True)
    assert err.name == "BadJwtLexiconMethod"
    assert (await refused(v, token)).name == "BadJwtAudience"  # not accepted where not allowed
    await resolver.aclose()


@pytest.mark.parametrize("endpoint", ["https://[", "https://[::1", "http://", "pds"])
async def test_pds_audience_with_a_document_whose_pds_is_not_a_url(
    did_server: DidServer, endpoint: str
) -> None:
    """Found by tests/api/test_auth_fuzz.py: "https://[" made urlsplit raise (a 500), and a
    hostless endpoint made "did:web:" the expected audience, so aud "did:web:" got through."""
    who = Identity(new_plc_did(), pds_endpoint=endpoint)
    did_server.publish(who)
    resolver = DidResolver(did_server.url, allow_private=True)
    v = ServiceAuthVerifier(SERVICE, resolver)
    try:
        for aud in ("did:web:", "did:web:localhost"):
            token = who.token(aud, "com.atproto.repo.uploadBlob")
            err = await refused(v, token, allow_pds_audience=True)
            assert (err.status, err.name) == (401, "BadJwtAudience")
            assert err.message == "the issuer's DID document lists no PDS"
    finally:
        await resolver.aclose()
