"""The one parse of an atproto service-auth JWT (SPEC section 3), through PyJWT.

The API verifies tokens with it (``api/auth.py``) and delivery reads a stored token's ``exp``
with it (``core/delivery.py``), so there is one idea of what a well-formed token is. Parsing
never checks claims: PyJWT's own ``exp``/``aud``/``iat``/``nbf`` checks are turned off and the
verifier keeps the reference implementation's checks, order and error names. Signatures are
64-byte ``r||s`` (PyJWT's raw ECDSA form); high-S signatures verify, as in the reference
verifier, because OpenSSL does not require low-S.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.types import Options

ALGORITHMS = ("ES256K", "ES256")
REFUSED_TYP = ("at+jwt", "refresh+jwt", "dpop+jwt")
# Claims are the verifier's business: PyJWT only decodes them here.
_DECODE_ONLY: Options = {
    "verify_signature": False,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
# Only the two atproto algorithms exist for this verifier (no HS*, no "none").
_JWS = jwt.PyJWS(algorithms=list(ALGORITHMS))


class MalformedToken(Exception):
    """Not a usable service JWT; ``name`` is the reference error (BadJwt or BadJwtType)."""

    def __init__(self, name: Literal["BadJwt", "BadJwtType"], message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@dataclass(frozen=True)
class ServiceToken:
    """A parsed, not yet verified token: its header, its claims and the text they came from."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    raw: str

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    def __repr__(self) -> str:  # never show the token
        return f"ServiceToken(alg={self.alg!r}, iss={self.claims.get('iss')!r})"


def parse(token: str) -> ServiceToken:
    """Header first (BadJwt, then BadJwtType), then the claims object, as the reference does."""
    if token.count(".") != 2:
        raise MalformedToken("BadJwt", "poorly formatted jwt")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, UnicodeEncodeError):  # lone surrogates cannot be UTF-8
        raise MalformedToken("BadJwt", "poorly formatted jwt") from None
    if not isinstance(header.get("alg"), str):
        raise MalformedToken("BadJwt", "poorly formatted jwt")
    if header.get("typ") in REFUSED_TYP:
        raise MalformedToken("BadJwtType", "Invalid jwt type")
    try:
        claims = jwt.decode(token, options=_DECODE_ONLY)
    except (jwt.InvalidTokenError, UnicodeEncodeError):
        raise MalformedToken("BadJwt", "poorly formatted jwt") from None
    return ServiceToken(header=header, claims=claims, raw=token)


def expiry(token: str) -> float | None:
    """The token's ``exp`` in Unix seconds; None when it is malformed or has no finite exp."""
    try:
        exp = parse(token).claims.get("exp")
    except MalformedToken:
        return None
    return seconds(exp)


def seconds(value: object) -> float | None:
    """A claim as finite Unix seconds, else None (JSON booleans, strings, inf, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)  # an integer beyond float range overflows
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def signature_valid(token: ServiceToken, alg: str, key: ec.EllipticCurvePublicKey) -> bool:
    """Whether ``key`` (of algorithm ``alg``, from the DID document) signed the token.

    The allowed algorithm is the key's, never the header's: an ES256K key only verifies
    ES256K tokens. PyJWT refuses any signature that is not exactly 64 bytes ``r||s``.
    """
    if alg not in ALGORITHMS or token.alg != alg:
        return False
    try:
        _JWS.decode_complete(token.raw, key, algorithms=[alg])
    except (jwt.InvalidTokenError, jwt.InvalidKeyError):
        return False
    return True
