"""Fuzzed token parsing: hostile text meets only MalformedToken, expiry only None or seconds.

Tokens are built near-valid (three base64url segments of JSON headers and claims, really
signed) and then mutated, so the runs reach past the first check instead of dying at the dot
count like random text would.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from atproto_video.core import servicetoken
from atproto_video.core.servicetoken import MalformedToken
from tests.support.fuzzing import JSON, SCALARS, b64url, bounded, mutated, nested_json

B64URL = string.ascii_letters + string.digits + "-_"
# Outside base64url: NUL, DEL, Latin-1, CJK, a line separator and both ends of the surrogates.
FOREIGN = ["\x00", "\x7f", "\xe9", "\u3042", "\u2028", "\ud800", "\udfff"]
KEYS = {alg: ec.generate_private_key(curve) for alg, curve in
        (("ES256K", ec.SECP256K1()), ("ES256", ec.SECP256R1()))}  # fmt: skip


def sign(key: ec.EllipticCurvePrivateKey, header: bytes, claims: bytes) -> str:
    """A compact JWS with a raw r||s signature over exactly these header and claim bytes."""
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def headers() -> st.SearchStrategy[Any]:
    """Mostly objects with an ``alg`` and ``typ`` a verifier may or may not accept."""
    alg = st.sampled_from(["ES256K", "ES256"])
    field = st.one_of(alg, alg, alg, st.sampled_from(["HS256", "none", "RS256"]), SCALARS)
    typ = st.sampled_from(["JWT", "at+jwt", "refresh+jwt", "dpop+jwt"]) | SCALARS
    near = st.fixed_dictionaries(
        {"alg": field}, optional={"typ": typ, "kid": SCALARS, "b64": SCALARS, "crit": JSON}
    )
    return st.one_of(near, near, near, JSON)


def claims() -> st.SearchStrategy[Any]:
    odd_numbers = st.sampled_from([10**400, -(10**400), math.inf, math.nan, True, "60"])
    exp = st.one_of(st.floats(min_value=0, max_value=4e9), odd_numbers, odd_numbers, SCALARS)
    near = st.fixed_dictionaries(
        {"exp": exp}, optional={"iss": SCALARS, "aud": SCALARS, "lxm": SCALARS, "iat": SCALARS}
    )
    return near | near | JSON


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")


@st.composite
def segments(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Header and claim bytes: JSON from the strategies, or JSON nested too deep, or junk."""
    def one(values: st.SearchStrategy[Any]) -> bytes:
        kind = draw(st.sampled_from(["json"] * 6 + ["nested", "bytes"]))
        if kind == "json":
            return encoded(draw(values))
        return draw(nested_json()) if kind == "nested" else draw(st.binary(max_size=64))

    return one(headers()), one(claims())


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """A signed token, often with one character of one segment changed, or cut short."""
    header, body = draw(segments())
    token = sign(KEYS[draw(st.sampled_from(sorted(KEYS)))], header, body)
    how = draw(st.sampled_from(["as is", "as is", "segment", "foreign", "whole", "dots", "text"]))
    if how == "segment":
        parts = token.split(".")
        i = draw(st.integers(min_value=0, max_value=2))
        parts[i] = draw(mutated(parts[i], B64URL + "=+/"))
        return ".".join(parts)
    if how == "foreign":  # a character outside base64url: control, letter, lone surrogate
        at = draw(st.integers(min_value=0, max_value=len(token)))
        char = draw(st.sampled_from(FOREIGN) | st.characters(categories=["Cc", "Lo", "Zs", "Cs"]))
        return token[:at] + char + token[at:]
    if how == "whole":
        return draw(mutated(token, B64URL + "."))
    if how == "dots":
        return token + "." * draw(st.integers(min_value=1, max_value=3))
    if how == "text":
        lone_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
        return draw(
            st.text(max_size=40)
            | st.text(st.characters(codec="latin-1"), max_size=40)
            | st.text(st.sampled_from(B64URL + ".") | lone_surrogates, max_size=40)
        )
    return token


@bounded(400)
@given(tokens())
def test_parse_raises_only_malformed_token(token: str) -> None:
    try:
        parsed = servicetoken.parse(token)
    except MalformedToken as exc:
        assert exc.name in ("BadJwt", "BadJwtType")
        return
    assert isinstance(parsed.header, Mapping) and isinstance(parsed.alg, str)
    assert isinstance(parsed.claims, Mapping) and parsed.raw == token
    assert parsed.header.get("typ") not in servicetoken.REFUSED_TYP


@bounded(400)
@given(tokens())
def test_expiry_is_finite_seconds_or_none(token: str) -> None:
    exp = servicetoken.expiry(token)
    assert exp is None or (isinstance(exp, float) and math.isfinite(exp))


@bounded(200)
@given(st.data(), st.sampled_from(sorted(KEYS)), st.sampled_from([*sorted(KEYS), "HS256"]))
def test_signature_valid_only_for_the_signed_bytes(
    data: st.DataObject, signer_alg: str, key_alg: str
) -> None:
    """A bool, never an exception; True only for the key's algorithm over unchanged segments."""
    header = encoded({"alg": data.draw(st.sampled_from(sorted(KEYS))), "typ": "JWT"})
    body = encoded(data.draw(claims()))
    signed = sign(KEYS[signer_alg], header, body)
    token = data.draw(st.just(signed) | mutated(signed, B64URL + "."))
    try:
        parsed = servicetoken.parse(token)
    except MalformedToken:
        return
    key = (KEYS.get(key_alg) or KEYS["ES256"]).public_key()
    valid = servicetoken.signature_valid(parsed, key_alg, key)
    assert isinstance(valid, bool)
    if valid:
        assert key_alg == signer_alg == parsed.alg
        assert token.split(".")[:2] == signed.split(".")[:2]
