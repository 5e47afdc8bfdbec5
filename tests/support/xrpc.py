"""The service's XRPC surface as clients use it: identities, uploads, job status polling."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

import httpx

from tests.support.didserver import DidServer
from tests.support.identity import Identity, new_plc_did
from tests.support.waiting import wait_for


class Endpoint(Protocol):
    """Where the service answers: a ServiceProcess, or a service deployed by the chart."""

    url: str


SERVICE_DID = "did:web:video.test"  # ServiceProcess's default VIDEO_SERVICE_DID
UPLOAD = "app.bsky.video.uploadVideo"
STATUS = "app.bsky.video.getJobStatus"
LIMITS = "app.bsky.video.getUploadLimits"
TERMINAL = ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED")


def user(dids: DidServer, **kw: Any) -> Identity:
    """A fresh did:plc identity, published so the service can verify its tokens."""
    who = Identity(new_plc_did(), **kw)
    dids.publish(who)
    return who


def upload(
    svc: Endpoint,
    did: str,
    token: str,
    body: bytes,
    *,
    ctype: str = "video/mp4",
    name: str = "a1b2c3.mp4",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST uploadVideo with the query params social-app sends."""
    return httpx.post(
        f"{svc.url}/xrpc/{UPLOAD}",
        params={"did": did, "name": name},
        content=body,
        headers={"authorization": f"Bearer {token}", "content-type": ctype, **(headers or {})},
        timeout=60,
    )


def upload_as(
    svc: Endpoint,
    who: Identity,
    body: bytes,
    *,
    token: str | None = None,
    ctype: str = "video/mp4",
) -> httpx.Response:
    """Upload as ``who`` with a token it signed for this service (unless ``token`` is given)."""
    token = token if token is not None else who.token(SERVICE_DID, UPLOAD)
    return upload(svc, who.did, token, body, ctype=ctype)


def job_status(
    svc: Endpoint, job_id: str, client: httpx.Client | None = None
) -> dict[str, Any]:
    """getJobStatus without a token, as the app polls it."""
    get = client.get if client is not None else httpx.get
    resp = get(f"{svc.url}/xrpc/{STATUS}", params={"jobId": job_id}, timeout=10)
    assert resp.status_code == 200, resp.text
    status: dict[str, Any] = resp.json()["jobStatus"]
    return status


def wait_for_job(
    svc: Endpoint,
    job_id: str,
    until: Collection[str] | Callable[[dict[str, Any]], bool] = TERMINAL,
    *,
    timeout: float = 180,
    interval: float = 0.1,
    logs: Callable[[], str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Poll getJobStatus until its state is in ``until`` (or ``until(status)`` holds).

    Returns that status and every (state, progress) seen, for monotonicity checks. A job that
    ends without meeting the condition fails at once; a timeout shows the last states and the
    tail of ``logs`` (the service's log by default).
    """
    states = {until} if isinstance(until, str) else set() if callable(until) else set(until)

    def done(st: dict[str, Any]) -> bool:
        return until(st) if callable(until) else st["state"] in states

    seen: list[tuple[str, int]] = []

    # One kept-alive client: a new one per poll costs ~20 ms of CPU (TLS context), which at
    # benchmark poll rates took CPU from the encoder being measured.
    client = httpx.Client(timeout=10)

    def poll() -> dict[str, Any] | None:
        st = job_status(svc, job_id, client)
        seen.append((st["state"], st.get("progress", 0)))
        if done(st):
            return st
        if st["state"] in TERMINAL:
            raise AssertionError(f"job {job_id} ended {st} before the awaited condition")
        return None

    def describe() -> str:
        # A chart-deployed endpoint has no log of its own unless the caller passes one.
        tail = logs or getattr(svc, "logs", None)
        return f"job {job_id}: last {seen[-5:]}\n{tail()[-3000:] if tail else ''}"

    with client:
        status = wait_for(poll, timeout=timeout, interval=interval, what=describe)
    return status, seen
