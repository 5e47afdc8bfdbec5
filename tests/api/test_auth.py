from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from atproto_video.api.auth import Caller, ServiceAuthVerifier
from atproto_video.api.errors import AuthRequired, NotEnoughResources, XrpcError
from atproto_video.api.identity import DidResolver
from tests.support.didserver import DidServer
from tests.support.identity import Identity, b64url, new_plc_did

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
    assert (await verify(verifier, token)).did == who.did


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
    bad_alg = await refused(verifier, who.token(SERVICE, LXM, header={"alg": "ES256"}))
    assert bad_alg.name == "BadJwtSignature"
    garbage = b64url(b"{}") + "." + b64url(b"[]") + "." + b64url(b"x")
    assert (await refused(verifier, garbage)).name == "BadJwt"
    unknown_did = Identity(new_plc_did())
    assert (await refused(verifier, unknown_did.token(SERVICE, LXM))).name == "BadJwtIss"


async def test_key_rotation_forces_one_re_resolution(
    verifier: ServiceAuthVerifier, did_server: DidServer
) -> None:
    who = ident(did_server)
    await verify(verifier, who.token(SERVICE, LXM))
    fetched = len(did_server.requests)
    await verify(verifier, who.token(SERVICE, LXM))
    assert len(did_server.requests) == fetched  # cached
    who.rotate()
    did_server.publish(who)
    await verify(verifier, who.token(SERVICE, LXM))
    assert len(did_server.requests) == fetched + 1


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
