"""Fuzzed service-auth verification: whatever the header and the issuer's document say, a
caller gets a 401 with a reference error name or a 503, never a 500, and only an unchanged
token signed by the document's key gets through."""

from __future__ import annotations

import asyncio
import json
import math
import string
from typing import Any, cast
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from atproto_video.api.auth import Caller, ServiceAuthVerifier
from atproto_video.api.errors import AuthRequired, NotEnoughResources
from atproto_video.api.identity import (
    DidDocument,
    DidError,
    DidResolver,
    ResolverUnavailable,
    parse_document,
)
from atproto_video.core.lexicon import NSID_UPLOAD_BLOB
from tests.support.fuzzing import SCALARS, b64url, bounded, mutated
from tests.support.identity import Identity

SERVICE = "did:web:video.example.com"
LXM = "app.bsky.video.uploadVideo"
PDS = "https://pds.example.com"
NOW = 1_800_000_000.0
#: The names the reference verifier answers 401 with.
NAMES = {
    "AuthMissing", "BadJwt", "BadJwtType", "JwtExpired", "BadJwtAudience",
    "BadJwtLexiconMethod", "BadJwtIss", "BadJwtSignature",
}  # fmt: skip
WHO = Identity("did:plc:fuzzfuzzfuzzfuzzfuzzfuzz", pds_endpoint=PDS)
AUDIENCES = [SERVICE, SERVICE + "#bsky_video", "did:web:pds.example.com", "did:web:",
             "did:web:elsewhere"]  # fmt: skip
B64URL = string.ascii_letters + string.digits + "-_"


class FixedResolver:
    """Answers every DID with one document, or one failure: no network in a fuzz run."""

    def __init__(self, answer: DidDocument | Exception) -> None:
        self.answer = answer

    async def resolve(self, did: str, *, force: bool = False) -> DidDocument:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def sign(header: Any, claims: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    der = WHO.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def endpoints() -> st.SearchStrategy[str | None]:
    """What a hostile document may put as its PDS: URLs without hosts, not URLs at all."""
    odd = st.sampled_from(
        ["https://[", "https://[::1", "http://", "", "https://:0", "//x", "pds", "https://a:b@h"]
    )
    return st.one_of(st.just(PDS), odd, odd, st.text(max_size=20), st.none())


def document(endpoint: str | None) -> DidDocument:
    """The issuer's real document (its real key) with this PDS endpoint, or none at all."""
    raw = WHO.document()
    if endpoint is not None:
        raw["service"][0]["serviceEndpoint"] = endpoint
    else:
        del raw["service"]
    return parse_document(WHO.did, raw)


def verify(header: str | None, answer: DidDocument | Exception, pds_audience: bool) -> Caller:
    verifier = ServiceAuthVerifier(
        SERVICE, cast(DidResolver, FixedResolver(answer)), clock=lambda: NOW
    )
    return asyncio.run(verifier.verify(header, LXM, allow_pds_audience=pds_audience))


@st.composite
def authorizations(draw: st.DrawFn) -> tuple[str | None, str]:
    """An Authorization header around a signed token with near-valid claims, maybe mutated."""
    claims: dict[str, Any] = {}
    choices: dict[str, st.SearchStrategy[Any]] = {
        "iss": st.sampled_from([WHO.did, WHO.did + "#atproto", "did:plc:other", "nodid"]),
        "aud": st.sampled_from(AUDIENCES),
        "exp": st.one_of(
            st.floats(min_value=NOW - 100, max_value=NOW + 8000),
            st.sampled_from([10**400, -(10**400), math.inf, math.nan, True, str(NOW + 60)]),
        ),
        "lxm": st.sampled_from([LXM, NSID_UPLOAD_BLOB, "app.bsky.video.getJobStatus"]),
    }
    for name, values in choices.items():
        kind = draw(st.sampled_from(["usual", "usual", "usual", "odd", "absent"]))
        if kind != "absent":
            claims[name] = draw(values if kind == "usual" else SCALARS)
    header: Any = {"alg": "ES256K", "typ": "JWT"}
    if draw(st.booleans()):
        header = draw(st.fixed_dictionaries(
            {"alg": st.sampled_from(["ES256K", "ES256", "none"]) | SCALARS},
            optional={"typ": st.sampled_from(["JWT", "at+jwt", "dpop+jwt"]) | SCALARS},
        ))  # fmt: skip
    token = sign(header, claims)
    sent = token
    if draw(st.integers(0, 2)) == 0:
        sent = draw(mutated(token, B64URL + ".=é"))
    scheme = draw(st.sampled_from(["Bearer "] * 4 + ["bearer ", "Basic ", "Bearer", ""]))
    return (None if draw(st.integers(0, 20)) == 0 else scheme + sent), token


@bounded(500)
@given(
    authorizations(),
    st.one_of(
        endpoints().map(document),
        st.sampled_from([ResolverUnavailable("down"), DidError("DID not found")]),
    ),
    st.booleans(),
)
def test_verify_answers_only_with_xrpc_auth_errors(
    authorization: tuple[str | None, str], answer: DidDocument | Exception, pds_audience: bool
) -> None:
    header, signed = authorization
    try:
        caller = verify(header, answer, pds_audience)
    except AuthRequired as exc:
        assert exc.status == 401 and exc.name in NAMES, (exc.name, exc.message)
        return
    except NotEnoughResources as exc:
        assert exc.status == 503 and isinstance(answer, ResolverUnavailable)
        return
    assert isinstance(caller, Caller) and caller.did == WHO.did
    assert math.isfinite(caller.exp) and NOW <= caller.exp <= NOW + 3600 + 300
    # Only the token as signed gets through (a signature's spare low bits aside).
    assert header is not None
    assert header.split(" ", 1)[1].split(".")[:2] == signed.split(".")[:2]


@bounded(300)
@given(endpoints(), st.sampled_from([SERVICE, "did:web:pds.example.com", "did:web:", "did:web:["]))
def test_the_issuers_document_decides_the_pds_audience(endpoint: str | None, aud: str) -> None:
    """A well-formed Bluesky-app token against a document whose PDS may be anything."""
    claims = {"iss": WHO.did, "aud": aud, "exp": NOW + 60, "lxm": NSID_UPLOAD_BLOB}
    token = sign({"alg": "ES256K", "typ": "JWT"}, claims)
    try:
        caller = verify(f"Bearer {token}", document(endpoint), True)
    except AuthRequired as exc:
        assert exc.name in ("BadJwtAudience", "BadJwtLexiconMethod"), exc.message
        return
    if caller.mode == "pds":
        assert endpoint is not None and aud == "did:web:" + (urlsplit(endpoint).hostname or "")
        assert aud != "did:web:"


def test_the_harness_signs_tokens_the_verifier_accepts() -> None:
    """Without this, a broken signer would make every fuzzed token a plain BadJwtSignature."""
    token = sign({"alg": "ES256K", "typ": "JWT"},
                 {"iss": WHO.did, "aud": SERVICE, "exp": NOW + 60, "lxm": LXM})  # fmt: skip
    assert verify(f"Bearer {token}", document(PDS), False).did == WHO.did
    pds_token = sign({"alg": "ES256K", "typ": "JWT"},
                     {"iss": WHO.did, "aud": "did:web:pds.example.com", "exp": NOW + 60,
                      "lxm": NSID_UPLOAD_BLOB})  # fmt: skip
    assert verify(f"Bearer {pds_token}", document(PDS), True).mode == "pds"
