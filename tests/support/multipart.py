"""A multipart upload client written to the Bluesky app's algorithm.

Files from 16 MiB go through startUpload / uploadPart / finishUpload with the service's part
size (8 MiB), three parts in flight, up to three attempts per part and a retry with a fresh
token on 401. A failed finish is followed by getUploadStatus: ``created`` re-sends the parts
the service lacks, ``finishing`` waits, ``failed`` reports ``failureReason``. Cancelling
calls abortUpload. Smaller files (or ``multipart=False``) use uploadVideo.

``fault(part, attempt)`` lets a test break a part on purpose: ``"cut"`` drops the connection
half-way through the body (a phone losing its network), ``"skip"`` does not send it;
``cancelled`` plays the user pressing cancel.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

START = "app.bsky.video.startUpload"
PART = "app.bsky.video.uploadPart"
FINISH = "app.bsky.video.finishUpload"
UPLOAD_STATUS = "app.bsky.video.getUploadStatus"
ABORT = "app.bsky.video.abortUpload"
UPLOAD_VIDEO = "app.bsky.video.uploadVideo"

MULTIPART_FROM = 16 << 20
PARTS_IN_FLIGHT = 3
ATTEMPTS = 3

#: A token for a method: seed mode signs one per method, Bluesky mode asks the PDS.
TokenSource = Callable[[str], str]
Fault = Callable[[int, int], str | None]


class UploadError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.error = str(body.get("error", ""))
        self.body = body


class _Cut(Exception):
    """Raised inside a request body to drop the connection half-way."""


@dataclass
class MultipartClient:
    url: str
    did: str
    tokens: TokenSource
    fault: Fault | None = None
    in_flight: int = PARTS_IN_FLIGHT
    #: What happened, for assertions: ("part", n, attempt, status), ("status", state), ...
    log: list[tuple[Any, ...]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=120)
        #: Set to cancel (the user pressed cancel): no more parts, then abortUpload.
        self.cancelled = threading.Event()

    def close(self) -> None:
        self.http.close()

    # -- one call each ------------------------------------------------------------------------

    def call(self, method: str, nsid: str, *, params: dict[str, Any] | None = None,
             json: Any = None, content: Any = None, headers: dict[str, str] | None = None,
             ) -> httpx.Response:
        """One XRPC call; a 401 is retried once with a fresh token, as the app does."""
        for fresh in (False, True):
            hdrs = {"authorization": f"Bearer {self.tokens(nsid)}", **(headers or {})}
            resp = self.http.request(method, f"{self.url}/xrpc/{nsid}", params=params,
                                     json=json, content=content, headers=hdrs)
            if resp.status_code != 401 or fresh:
                return resp
            self.log.append(("retry-401", nsid))
        raise AssertionError("unreachable")

    def start(self, size: int, mime: str = "video/mp4", **extra: Any) -> dict[str, Any]:
        resp = self.call("POST", START, json={"sizeBytes": size, "mimeType": mime, **extra})
        return self._ok(resp)

    def put_part(self, job_id: str, number: int, data: bytes | Iterator[bytes],
                 length: int | None = None) -> httpx.Response:
        headers = {"content-type": "application/octet-stream"}
        if length is not None:
            headers["content-length"] = str(length)
        return self.call("POST", PART, params={"jobId": job_id, "partNumber": number},
                         content=data, headers=headers)

    def finish(self, job_id: str) -> httpx.Response:
        return self.call("POST", FINISH, json={"jobId": job_id})

    def status(self, job_id: str) -> dict[str, Any]:
        return self._ok(self.call("GET", UPLOAD_STATUS, params={"jobId": job_id}))

    def abort(self, job_id: str) -> httpx.Response:
        return self.call("POST", ABORT, json={"jobId": job_id})

    @staticmethod
    def _ok(resp: httpx.Response) -> dict[str, Any]:
        if resp.status_code != 200:
            raise UploadError(resp.status_code, resp.json())
        body: dict[str, Any] = resp.json()
        return body

    # -- the app's algorithm ------------------------------------------------------------------

    def upload(self, data: bytes, *, mime: str = "video/mp4",
               multipart: bool | None = None) -> dict[str, Any]:
        """Upload ``data`` as the app would; returns finishUpload's (or uploadVideo's) answer."""
        if multipart is False or (multipart is None and len(data) < MULTIPART_FROM):
            resp = self.call("POST", UPLOAD_VIDEO, params={"did": self.did, "name": "a.mp4"},
                             content=data, headers={"content-type": mime})
            return self._ok(resp)
        session = self.start(len(data), mime, name="clip.mp4")
        job_id = session["jobId"]
        self.send_parts(job_id, data, session["partSizeBytes"],
                        range(1, session["partCount"] + 1))
        if self.cancelled.is_set():
            answer = self._ok(self.abort(job_id))
            self.log.append(("aborted", job_id, answer["state"]))
            return {"jobId": job_id, **answer}
        return self.finish_with_recovery(job_id, data, session["partSizeBytes"])

    def send_parts(self, job_id: str, data: bytes, part_size: int, numbers: Any) -> None:
        with concurrent.futures.ThreadPoolExecutor(self.in_flight) as pool:
            for done in [pool.submit(self.send_part, job_id, data, part_size, n)
                         for n in numbers]:
                done.result()

    def send_part(self, job_id: str, data: bytes, part_size: int, number: int) -> None:
        body = data[(number - 1) * part_size:number * part_size]
        for attempt in range(1, ATTEMPTS + 1):
            action = self.fault(number, attempt) if self.fault else None
            if self.cancelled.is_set():
                return
            if action == "skip":
                self.log.append(("part", number, attempt, "skipped"))
                return
            try:
                if action == "cut":
                    resp = self.put_part(job_id, number, _cut_half_way(body), len(body))
                else:
                    resp = self.put_part(job_id, number, body)
            except (httpx.TransportError, _Cut) as exc:
                self.log.append(("part", number, attempt, type(exc).__name__))
                continue
            self.log.append(("part", number, attempt, resp.status_code))
            if resp.status_code == 200:
                assert resp.json() == {"partNumber": number, "sizeBytes": len(body)}
                return
            if resp.status_code < 500:
                raise UploadError(resp.status_code, resp.json())
        raise UploadError(0, {"error": "PartFailed", "message": f"part {number}"})

    def finish_with_recovery(self, job_id: str, data: bytes, part_size: int,
                             *, deadline_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while True:
            resp = self.finish(job_id)
            if resp.status_code == 200:
                return self._ok(resp)
            self.log.append(("finish", resp.status_code, resp.json().get("error")))
            if time.monotonic() > deadline:
                raise UploadError(resp.status_code, resp.json())
            state = self.status(job_id)
            self.log.append(("status", state["state"]))
            if state["state"] == "created":
                received = set(state["receivedParts"])
                missing = [n for n in range(1, state["partCount"] + 1) if n not in received]
                self.fault = None  # the network is back
                self.send_parts(job_id, data, part_size, missing)
            elif state["state"] == "finishing":
                time.sleep(0.2)
            elif state["state"] == "completed":
                return {"completedJobId": state["completedJobId"],
                        "jobStatus": state["jobStatus"]}
            else:
                raise UploadError(resp.status_code, {
                    "error": resp.json().get("error"), "state": state["state"],
                    "message": state.get("failureReason", "")})


def _cut_half_way(body: bytes) -> Iterator[bytes]:
    yield body[: len(body) // 2]
    raise _Cut("connection lost")
