"""Service-auth JWT verification (SPEC section 3), in the reference verifier's order.

Two audience modes: *seed* (aud = this service's DID, lxm = the called method) and
*Bluesky* (aud = the uploader's own PDS DID, lxm = com.atproto.repo.uploadBlob), the token the
Bluesky app sends to uploadVideo and that the service later forwards to the PDS.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from atproto_video.api.errors import AuthRequired, NotEnoughResources
from atproto_video.api.identity import DidDocument, DidError, DidResolver, ResolverUnavailable
from atproto_video.core.lexicon import NSID_UPLOAD_BLOB

# Longest lifetime we accept: the PDS issues at most one hour; allow a little clock skew.
MAX_LIFETIME_S = 3600 + 300
_REFUSED_TYP = ("at+jwt", "refresh+jwt", "dpop+jwt")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _fail(name: str, message: str) -> AuthRequired:
    return AuthRequired(message, name=name)


@dataclass(frozen=True)
class Caller:
    did: str
    aud: str
    lxm: str | None
    exp: float
    mode: Literal["seed", "pds"]
    token: str
    document: DidDocument

    def __repr__(self) -> str:  # never show the token
        return f"Caller(did={self.did!r}, aud={self.aud!r}, mode={self.mode!r})"


def pds_service_did(pds_endpoint: str) -> str:
    """did:web + hostname of the #atproto_pds endpoint: the audience the Bluesky app asks for."""
    host = urlsplit(pds_endpoint).hostname or ""
    return f"did:web:{host}"


class ServiceAuthVerifier:
    def __init__(
        self,
        service_did: str,
        resolver: DidResolver,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service_did = service_did.split("#", 1)[0]
        self.resolver = resolver
        self.clock = clock

    async def verify(
        self,
        authorization: str | None,
        lxm: str,
        *,
        allow_pds_audience: bool = False,
    ) -> Caller:
        token = _bearer(authorization)
        header, payload, signing_input, sig = _split(token)
        now = self.clock()

        iss, aud, exp = payload.get("iss"), payload.get("aud"), payload.get("exp")
        if not isinstance(iss, str) or not isinstance(aud, str):
            raise _fail("BadJwt", "poorly formatted jwt")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise _fail("BadJwt", "poorly formatted jwt")
        if now > exp:
            raise _fail("JwtExpired", "jwt expired")
        if exp - now > MAX_LIFETIME_S:
            raise _fail("BadJwt", "jwt lifetime exceeds one hour")

        iss_did = iss.split("#", 1)[0]
        token_lxm = payload.get("lxm")
        aud_bare = aud.split("#", 1)[0]
        mode: Literal["seed", "pds"]
        if aud_bare == self.service_did:
            mode = "seed"
            expected_lxm = lxm
        elif allow_pds_audience:
            mode = "pds"
            expected_lxm = NSID_UPLOAD_BLOB
        else:
            raise _fail("BadJwtAudience", "jwt audience does not match service did")

        doc: DidDocument | None = None
        if mode == "pds":
            # The audience check needs the issuer's document (the PDS endpoint), and comes
            # before the lxm check as in the reference order: a token for some other service
            # is an audience error whatever its lxm.
            _require_did(iss_did)
            doc = await self._resolve(iss_did, force=False)
            expected_aud = pds_service_did(doc.pds_endpoint) if doc.pds_endpoint else None
            if expected_aud is None:
                raise _fail("BadJwtAudience", "the issuer's DID document lists no PDS")
            if aud_bare != expected_aud:
                raise _fail(
                    "BadJwtAudience",
                    f'invalid token audience "{aud}", '
                    f'should be the user\'s PDS DID "{expected_aud}"',
                )
        if token_lxm is None:
            raise _fail("BadJwtLexiconMethod", 'missing jwt lexicon method ("lxm")')
        if token_lxm != expected_lxm:
            raise _fail(
                "BadJwtLexiconMethod", f'bad jwt lexicon method ("lxm"). must match: {expected_lxm}'
            )
        if doc is None:
            _require_did(iss_did)
            doc = await self._resolve(iss_did, force=False)
        if not _signature_ok(doc, header, signing_input, sig):
            doc = await self._resolve(iss_did, force=True)
            if not _signature_ok(doc, header, signing_input, sig):
                raise _fail("BadJwtSignature", "jwt signature does not match jwt issuer")
        return Caller(
            did=iss_did,
            aud=aud,
            lxm=token_lxm,
            exp=float(exp),
            mode=mode,
            token=token,
            document=doc,
        )

    async def _resolve(self, did: str, *, force: bool) -> DidDocument:
        try:
            return await self.resolver.resolve(did, force=force)
        except ResolverUnavailable as exc:
            raise NotEnoughResources(f"could not resolve the issuer's DID: {exc}") from None
        except DidError as exc:
            raise _fail("BadJwtIss", f"could not resolve the issuer's DID: {exc}") from None


def _require_did(iss_did: str) -> None:
    if not iss_did.startswith("did:") or len(iss_did.split(":")) < 3:
        raise _fail("BadJwtIss", "jwt issuer is not a DID")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise _fail("AuthMissing", "Authentication Required")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _fail("AuthMissing", "Authentication Required")
    return token.strip()


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    parts = token.split(".")
    if len(parts) != 3:
        raise _fail("BadJwt", "poorly formatted jwt")
    try:
        header = json.loads(_b64url(parts[0]))
        payload = json.loads(_b64url(parts[1]))
        sig = _b64url(parts[2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _fail("BadJwt", "poorly formatted jwt") from None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise _fail("BadJwt", "poorly formatted jwt")
    if header.get("typ") in _REFUSED_TYP:
        raise _fail("BadJwtType", "Invalid jwt type")
    if not isinstance(payload, dict):
        raise _fail("BadJwt", "poorly formatted jwt")
    return header, payload, f"{parts[0]}.{parts[1]}".encode(), sig


def _signature_ok(
    doc: DidDocument, header: dict[str, Any], signing_input: bytes, sig: bytes
) -> bool:
    key = doc.signing_key
    if key is None or header.get("alg") != key.alg or len(sig) != 64:
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    try:
        key.key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
