"""Service-auth JWT verification (SPEC section 3), in the reference verifier's order.

Two audience modes: *seed* (aud = this service's DID, lxm = the called method) and
*Bluesky* (aud = the uploader's own PDS DID, lxm = com.atproto.repo.uploadBlob), the token the
Bluesky app sends to uploadVideo and that the service later forwards to the PDS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

from atproto_video.api.errors import AuthRequired, NotEnoughResources
from atproto_video.api.identity import DidDocument, DidError, DidResolver, ResolverUnavailable
from atproto_video.core import servicetoken
from atproto_video.core.lexicon import NSID_UPLOAD_BLOB
from atproto_video.core.servicetoken import MalformedToken, ServiceToken

# Longest lifetime we accept: the PDS issues at most one hour; allow a little clock skew.
MAX_LIFETIME_S = 3600 + 300


#: Every 401 name this verifier answers, in the reference verifier's words; declared once
#: (the OpenAPI schema lists them from here).
AuthErrorName = Literal["AuthMissing", "BadJwt", "BadJwtType", "JwtExpired", "BadJwtAudience",
                        "BadJwtLexiconMethod", "BadJwtIss", "BadJwtSignature"]
ERROR_NAMES: tuple[AuthErrorName, ...] = get_args(AuthErrorName)


def _fail(name: AuthErrorName, message: str) -> AuthRequired:
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


def pds_service_did(pds_endpoint: str) -> str | None:
    """did:web + hostname of the #atproto_pds endpoint: the audience the Bluesky app asks for.

    None when the endpoint (from a document the issuer controls) names no host, or is not a
    URL at all (``https://[``): no audience can match it.
    """
    try:
        host = urlsplit(pds_endpoint).hostname
    except ValueError:
        return None
    return f"did:web:{host}" if host else None


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
        try:
            parsed = servicetoken.parse(token)
        except MalformedToken as exc:
            raise _fail(exc.name, exc.message) from None
        payload = parsed.claims
        now = self.clock()

        iss, aud = payload.get("iss"), payload.get("aud")
        exp = servicetoken.seconds(payload.get("exp"))
        if not isinstance(iss, str) or not isinstance(aud, str):
            raise _fail("BadJwt", "poorly formatted jwt")
        if exp is None:
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
        if not _signature_ok(doc, parsed):
            # Key rotation: look the DID up again once (the resolver limits how often).
            doc = await self._resolve(iss_did, force=True)
            if not _signature_ok(doc, parsed):
                raise _fail("BadJwtSignature", "jwt signature does not match jwt issuer")
        return Caller(
            did=iss_did,
            aud=aud,
            lxm=token_lxm,
            exp=exp,
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


def _signature_ok(doc: DidDocument, token: ServiceToken) -> bool:
    key = doc.signing_key
    return key is not None and servicetoken.signature_valid(token, key.alg, key.key)
