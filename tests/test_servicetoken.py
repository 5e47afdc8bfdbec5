"""The one token parse: what it reads, what it refuses, and that it never checks claims."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atproto_video.core import servicetoken
from atproto_video.core.servicetoken import MalformedToken
from tests.support.identity import Identity

LXM = "com.atproto.repo.uploadBlob"


def test_parse_reads_header_and_claims_without_checking_them() -> None:
    who = Identity("did:plc:servicetokentest")
    # Expired, a foreign audience, iat and nbf in the future: parsing is not verifying.
    later = time.time() + 10_000
    token = who.token("did:web:elsewhere", LXM, exp=time.time() - 60,
                      extra={"iat": later, "nbf": later})  # fmt: skip
    parsed = servicetoken.parse(token)
    assert parsed.alg == "ES256K" and parsed.header["typ"] == "JWT"
    assert parsed.claims["iss"] == who.did and parsed.claims["lxm"] == LXM
    assert parsed.raw == token and token not in repr(parsed)


def test_parse_refusals_name_the_reference_errors() -> None:
    unsigned = jwt.PyJWS()
    cases = {
        "": "BadJwt",
        "a.b": "BadJwt",
        "a.b.c.d": "BadJwt",
        unsigned.encode(b"{}", None, algorithm=None, headers={"alg": None}): "BadJwt",
        unsigned.encode(b"1", None, algorithm=None): "BadJwt",
        unsigned.encode(b"{}", None, algorithm=None, headers={"typ": "at+jwt"}): "BadJwtType",
        unsigned.encode(b"{}", None, algorithm=None, headers={"typ": "JWT"}): None,
    }
    for token, name in cases.items():
        if name is None:
            assert servicetoken.parse(token).claims == {}
            continue
        with pytest.raises(MalformedToken) as err:
            servicetoken.parse(token)
        assert err.value.name == name, token


def test_expiry() -> None:
    who = Identity("did:plc:servicetokentest")
    assert servicetoken.expiry(who.token("did:web:x", LXM, exp=1234.5)) == 1234.5
    assert servicetoken.expiry(who.token("did:web:x", LXM, extra={"exp": True})) is None
    assert servicetoken.expiry(who.token("did:web:x", LXM, extra={"exp": float("inf")})) is None
    assert servicetoken.expiry("garbage") is None


def test_fuzz_findings_are_refused_not_raised() -> None:
    """Found by tests/test_servicetoken_fuzz.py: a lone surrogate (not encodable as UTF-8)
    escaped parse as UnicodeEncodeError, an exp beyond float range escaped expiry as
    OverflowError."""
    who = Identity("did:plc:servicetokentest")
    token = who.token("did:web:x", LXM)
    for bad in ("\ud800" + token, token[:10] + "\udfff" + token[10:], token + "\ud800"):
        with pytest.raises(MalformedToken) as err:
            servicetoken.parse(bad)
        assert err.value.name == "BadJwt"
        assert servicetoken.expiry(bad) is None
    for exp in (10**400, -(10**400)):
        huge = who.token("did:web:x", LXM, extra={"exp": exp})
        assert servicetoken.parse(huge).claims["exp"] == exp
        assert servicetoken.expiry(huge) is None
    assert servicetoken.seconds(2**63) == float(2**63) and servicetoken.seconds(1.5) == 1.5


def test_signature_needs_the_key_and_its_algorithm() -> None:
    who = Identity("did:plc:servicetokentest", alg="ES256")
    parsed = servicetoken.parse(who.token("did:web:x", LXM))
    public = who.key.public_key()
    assert servicetoken.signature_valid(parsed, "ES256", public)
    assert not servicetoken.signature_valid(parsed, "ES256K", public)
    assert not servicetoken.signature_valid(parsed, "HS256", public)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not servicetoken.signature_valid(parsed, "ES256", other)
