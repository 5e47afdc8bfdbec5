"""The user's side of the PDS for ``atproto-video upload``: find the PDS, log in with an app
password, ask for service tokens as the Bluesky app does, and create the post.

The app (social-app, ``upload.shared.ts``) asks its PDS for a token with ``aud`` =
``did:web:`` + the PDS's hostname and ``lxm`` = ``com.atproto.repo.uploadBlob``, valid 30
minutes, and sends it to ``uploadVideo`` and the multipart methods; for ``getUploadLimits`` it
asks for ``aud`` = the video service's DID and ``lxm`` = that method (SPEC section 3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from atproto_video.api.identity import DidError, document_url, parse_document

UPLOAD_BLOB = "com.atproto.repo.uploadBlob"
#: social-app's token lifetime for uploads (the service keeps it to deliver the MP4).
UPLOAD_TOKEN_TTL_S = 30 * 60
DEFAULT_PLC = "https://plc.directory"


class PdsError(Exception):
    """A PDS step failed; ``kind`` picks the exit code: login, unreachable, resolve, post."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def pds_audience(pds_url: str) -> str:
    """``did:web:`` + the PDS's hostname (no port), as social-app's getServiceAuthAudFromUrl."""
    host = urlsplit(pds_url).hostname
    if not host:
        raise PdsError("resolve", f"not a PDS URL: {pds_url}")
    return f"did:web:{host}"


def _get(client: httpx.Client, url: str, what: str) -> httpx.Response:
    try:
        return client.get(url, timeout=10)
    except httpx.TransportError as exc:
        raise PdsError("unreachable", f"{what} unreachable at {url}: {exc}") from None


def resolve_pds(client: httpx.Client, identifier: str, plc_url: str) -> str:
    """The PDS URL of a DID or handle: handle -> DID (``/.well-known/atproto-did``) -> DID
    document (PLC directory or did:web) -> its ``#atproto_pds`` endpoint."""
    did = identifier
    if not identifier.startswith("did:"):
        url = f"https://{identifier}/.well-known/atproto-did"
        resp = _get(client, url, f"the handle {identifier}")
        did = resp.text.strip() if resp.status_code == 200 else ""
        if not did.startswith("did:"):
            raise PdsError("resolve", f"cannot resolve the handle {identifier} over https; "
                           "pass --pds URL (your PDS) or your DID")
    try:
        url = document_url(did, plc_url)
    except DidError as exc:
        raise PdsError("resolve", f"{did}: {exc}") from None
    resp = _get(client, url, "the DID document")
    if resp.status_code != 200:
        raise PdsError("resolve", f"{did}: DID document not found at {url} "
                       f"(HTTP {resp.status_code}); pass --pds URL")
    try:
        doc = parse_document(did, resp.json())
    except (DidError, ValueError) as exc:
        raise PdsError("resolve", f"{did}: {exc}") from None
    if doc.pds_endpoint is None:
        raise PdsError("resolve", f"{did}: the DID document names no PDS; pass --pds URL")
    return doc.pds_endpoint


@dataclass
class PdsSession:
    """A logged-in session (``createSession`` with an app password)."""

    client: httpx.Client
    url: str
    did: str
    handle: str
    access_jwt: str

    @classmethod
    def login(cls, client: httpx.Client, url: str, identifier: str,
              password: str) -> PdsSession:
        body = _xrpc(client, "POST", url, "com.atproto.server.createSession",
                     json={"identifier": identifier, "password": password}, kind="login")
        session = cls(client, url.rstrip("/"), body["did"], body.get("handle", ""),
                      body["accessJwt"])
        # The app talks to the PDS its DID document names (agent.dispatchUrl), which may differ
        # from the entryway the user logged in to.
        doc = body.get("didDoc")
        if isinstance(doc, dict):
            try:
                endpoint = parse_document(session.did, doc).pds_endpoint
            except DidError:
                endpoint = None
            if endpoint:
                session.url = endpoint
        return session

    def service_auth(self, aud: str, lxm: str, ttl_s: int = 60) -> str:
        body = self._call("GET", "com.atproto.server.getServiceAuth", kind="login",
                          params={"aud": aud, "lxm": lxm, "exp": int(time.time()) + ttl_s})
        token: str = body["token"]
        return token

    def upload_token(self) -> str:
        """The token the app sends to uploadVideo and the multipart methods."""
        return self.service_auth(pds_audience(self.url), UPLOAD_BLOB, UPLOAD_TOKEN_TTL_S)

    def create_post(self, text: str, blob: dict[str, Any],
                    aspect: tuple[int, int] | None = None, alt: str | None = None,
                    ) -> dict[str, Any]:
        """An ``app.bsky.feed.post`` embedding the video (``app.bsky.embed.video``)."""
        embed: dict[str, Any] = {"$type": "app.bsky.embed.video", "video": blob}
        if aspect is not None:
            embed["aspectRatio"] = {"width": aspect[0], "height": aspect[1]}
        if alt:
            embed["alt"] = alt
        record = {
            "$type": "app.bsky.feed.post",
            "text": text,
            "createdAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "embed": embed,
        }
        return self._call("POST", "com.atproto.repo.createRecord", kind="post", json={
            "repo": self.did, "collection": "app.bsky.feed.post", "record": record})

    def _call(self, method: str, nsid: str, *, kind: str, **kw: Any) -> dict[str, Any]:
        return _xrpc(self.client, method, self.url, nsid, kind=kind,
                     headers={"authorization": f"Bearer {self.access_jwt}"}, **kw)


def _xrpc(client: httpx.Client, method: str, url: str, nsid: str, *, kind: str,
          **kw: Any) -> dict[str, Any]:
    target = f"{url.rstrip('/')}/xrpc/{nsid}"
    try:
        resp = client.request(method, target, timeout=60, **kw)
    except httpx.TransportError as exc:
        raise PdsError("unreachable", f"the PDS is unreachable at {url}: {exc}") from None
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200 or not isinstance(body, dict):
        name = body.get("error", "") if isinstance(body, dict) else ""
        message = body.get("message", "") if isinstance(body, dict) else ""
        if kind == "login" and resp.status_code == 401:
            raise PdsError("login", f"the PDS refused the login: {message or name} "
                           "(check --handle and --app-password)")
        raise PdsError(kind, f"{nsid} failed: HTTP {resp.status_code} {name}: {message}")
    return body
