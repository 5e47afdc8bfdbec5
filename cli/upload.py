"""``atproto-video upload FILE``: upload a video as a real user, follow it, and post it.

Bluesky mode (``--handle``/``--did`` and ``--app-password``): log in to the user's PDS, ask it
for the service token the Bluesky app asks for (cli/pds.py), upload (``uploadVideo``, or the
multipart methods from 16 MiB as the app does), follow ``getJobStatus`` until the job ends,
print the blob and the playback URLs, and with ``--post`` create the post on the user's
repository. Seed mode (``--key FILE``): sign the tokens with a key instead (cli/tryupload.py),
as a ``did:web:localhost`` identity this process serves, or as ``--did`` whose document lists
the key; there is no PDS, so no post.

Progress goes to stderr (rich), results to stdout; each failure has its own exit code
(``EXIT_*``) and one line saying what to do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from atproto_video.core.lexicon import (
    QUOTA_BYTES_EXCEEDED,
    QUOTA_VIDEOS_EXCEEDED,
    UPLOAD_NOT_ALLOWED,
    UPLOADS_DISABLED,
)

from .pds import DEFAULT_PLC, PdsError, PdsSession, resolve_pds
from .tryupload import Throwaway, load_key, new_key_file, sign_token

EXIT_OK = 0
EXIT_ERROR = 1  # anything else (a bug in the service, a refused token, ...)
EXIT_LOGIN = 3  # the PDS refused the handle or app password
EXIT_QUOTA = 4  # daily limits reached, or the account may not upload
EXIT_REJECTED = 5  # the video was refused: too large, not a video, too long (validation)
EXIT_UNREACHABLE = 6  # the video service or the PDS did not answer
EXIT_FAILED = 7  # processing failed for another reason (encoding, delivery to the PDS)
EXIT_POST = 8  # the video is ready but the post could not be created

DEFAULT_SERVICE = "http://127.0.0.1:2585"
MULTIPART_FROM = 16 << 20  # the Bluesky app's threshold
PART_ATTEMPTS = 3
POLL_S = 1.5
UPLOAD_VIDEO = "app.bsky.video.uploadVideo"
GET_LIMITS = "app.bsky.video.getUploadLimits"
MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
        ".webm": "video/webm", ".mpeg": "video/mpeg", ".mpg": "video/mpeg",
        ".gif": "image/gif", ".mkv": "video/x-matroska"}  # fmt: skip
LABELS = {
    "JOB_STATE_CREATED": "queued", "JOB_STATE_ENCODING": "encoding",
    "JOB_STATE_ENCODED": "encoded", "JOB_STATE_SCANNING": "checking",
    "JOB_STATE_SCANNED": "checked", "JOB_STATE_UPLOADING": "uploading to the PDS",
    "JOB_STATE_UPLOADED": "uploaded to the PDS", "JOB_STATE_COMPLETED": "ready",
    "JOB_STATE_FAILED": "failed",
}  # fmt: skip
#: The service's quota answers (SPEC section 1: social-app matches these exactly).
QUOTA_SENTENCES = (QUOTA_BYTES_EXCEEDED, QUOTA_VIDEOS_EXCEEDED, UPLOAD_NOT_ALLOWED,
                   UPLOADS_DISABLED)
_RESOLUTION = re.compile(r"RESOLUTION=(\d+)x(\d+)")


class Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


#: A token for a method (seed mode signs one per method; Bluesky mode reuses the PDS's).
Tokens = Callable[[str], str]


@dataclass
class Result:
    job_id: str
    did: str
    blob: dict[str, Any]
    playlist_url: str
    watch_url: str
    job_url: str
    post: dict[str, Any] | None = None


class Uploader:
    """One upload to one service, with progress bars on ``console``."""

    def __init__(self, service: str, did: str, tokens: Tokens, console: Console,
                 progress: bool = True) -> None:
        self.service = service.rstrip("/")
        self.did = did
        self.tokens = tokens
        self.console = console
        self.http = httpx.Client(timeout=httpx.Timeout(120, connect=10))
        self.show = progress

    def close(self) -> None:
        self.http.close()

    def _bar(self, *columns: Any) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), *columns,
                        console=self.console, disable=not self.show, transient=False)

    def call(self, method: str, nsid: str, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.tokens(nsid)}", **kw.pop("headers", {})}
        try:
            return self.http.request(method, f"{self.service}/xrpc/{nsid}", headers=headers, **kw)
        except httpx.TransportError as exc:
            raise Failure(EXIT_UNREACHABLE,
                          f"the video service is unreachable at {self.service}: {exc}") from None

    # -- limits -------------------------------------------------------------------------------

    def check_limits(self, size: int) -> None:
        """What the app does before uploading: stop early with the service's own sentence."""
        resp = self.call("GET", GET_LIMITS)
        if resp.status_code != 200:
            return  # an older service or a token it refuses here: the upload will tell
        limits = resp.json()
        if not limits.get("canUpload", True):
            raise Failure(EXIT_QUOTA, "the service refuses uploads for this account: "
                          f"{limits.get('message') or limits.get('error') or 'no reason given'}")
        left = limits.get("remainingDailyBytes")
        if isinstance(left, int) and size > left:
            raise Failure(EXIT_QUOTA, f"the file ({size} bytes) is more than today's remaining "
                          f"upload allowance ({left} bytes)")

    # -- upload -------------------------------------------------------------------------------

    def upload(self, path: Path, mime: str) -> dict[str, Any]:
        """The job status the service answered (an ``already_exists`` duplicate included)."""
        size = path.stat().st_size
        with self._bar(DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()) as bar:
            task = bar.add_task("upload", total=size)
            if size < MULTIPART_FROM:
                with path.open("rb") as f:
                    resp = self.call(
                        "POST", UPLOAD_VIDEO, params={"did": self.did, "name": path.name},
                        content=_chunks(f, size, lambda n: bar.advance(task, n)),
                        headers={"content-type": mime, "content-length": str(size)})
                return self._job(resp)
            return self._multipart(path, size, mime, bar, task)

    def _multipart(self, path: Path, size: int, mime: str, bar: Progress,
                   task: TaskID) -> dict[str, Any]:
        start = self.call("POST", "app.bsky.video.startUpload",
                          json={"sizeBytes": size, "mimeType": mime, "name": path.name})
        session = self._ok(start)
        job_id, part_size = session["jobId"], session["partSizeBytes"]
        numbers = list(range(1, session["partCount"] + 1))
        self.console.print(f"multipart upload: {len(numbers)} parts of at most {part_size} bytes")
        with path.open("rb") as f:
            for attempt in range(2):  # a finish that found parts missing: send them, once
                for n in numbers:
                    self._part(f, job_id, n, part_size, size, bar, task)
                finish = self.call("POST", "app.bsky.video.finishUpload", json={"jobId": job_id})
                if finish.status_code == 200:
                    status: dict[str, Any] = finish.json()["jobStatus"]
                    return status
                state = self._ok(self.call("GET", "app.bsky.video.getUploadStatus",
                                           params={"jobId": job_id}))
                if state.get("state") != "created" or attempt:
                    return self._job(finish)
                received = set(state.get("receivedParts", []))
                numbers = [n for n in range(1, state["partCount"] + 1) if n not in received]
        return self._job(finish)

    def _part(self, f: Any, job_id: str, n: int, part_size: int, size: int, bar: Progress,
              task: TaskID) -> None:
        offset = (n - 1) * part_size
        length = min(part_size, size - offset)
        for attempt in range(1, PART_ATTEMPTS + 1):
            f.seek(offset)
            sent = 0

            def advance(k: int) -> None:
                nonlocal sent
                sent += k
                bar.advance(task, k)

            try:
                resp = self.call(
                    "POST", "app.bsky.video.uploadPart", params={"jobId": job_id, "partNumber": n},
                    content=_chunks(f, length, advance),
                    headers={"content-type": "application/octet-stream",
                             "content-length": str(length)})
            except Failure:
                if attempt == PART_ATTEMPTS:
                    raise
                resp = None
            if resp is not None and resp.status_code == 200:
                return
            bar.advance(task, -sent)
            if resp is not None and resp.status_code < 500 and resp.status_code != 401:
                self._ok(resp)  # raises with the service's reason
            time.sleep(attempt)
        raise Failure(EXIT_ERROR, f"part {n} of the upload failed {PART_ATTEMPTS} times")

    @staticmethod
    def _ok(resp: httpx.Response) -> dict[str, Any]:
        if resp.status_code == 200:
            body: dict[str, Any] = resp.json()
            return body
        raise _refused(resp)

    def _job(self, resp: httpx.Response) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        inner = body.get("jobStatus")
        status: dict[str, Any] = inner if isinstance(inner, dict) else body
        if body.get("error") == "already_exists" and status.get("jobId"):
            self.console.print("already uploaded: following the existing job")
            return dict(status)
        if resp.status_code != 200 or not status.get("jobId"):
            raise _refused(resp)
        return dict(status)

    # -- processing ---------------------------------------------------------------------------

    def follow(self, job_id: str, timeout_s: float) -> dict[str, Any]:
        """getJobStatus every 1.5 s (as the app polls) until COMPLETED or FAILED."""
        deadline = time.monotonic() + timeout_s
        last_state = ""
        misses = 0
        with self._bar(TextColumn("{task.percentage:>3.0f}%")) as bar:
            task = bar.add_task("processing", total=100)
            while True:
                try:
                    resp = self.http.get(f"{self.service}/xrpc/app.bsky.video.getJobStatus",
                                         params={"jobId": job_id}, timeout=15)
                except httpx.TransportError as exc:
                    misses += 1  # a restart of the service: its jobs resume
                    if misses * POLL_S > 60:
                        raise Failure(EXIT_UNREACHABLE, "the video service stopped answering "
                                      f"at {self.service}: {exc}") from None
                    time.sleep(POLL_S)
                    continue
                misses = 0
                if resp.status_code != 200:
                    raise _refused(resp)
                status: dict[str, Any] = resp.json()["jobStatus"]
                state = str(status.get("state", ""))
                if state != last_state:
                    self.console.print(f"state: {state}")
                    last_state = state
                bar.update(task, description=LABELS.get(state, state.lower()),
                           completed=int(status.get("progress") or 0))
                if state in ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED"):
                    return status
                if time.monotonic() > deadline:
                    raise Failure(EXIT_FAILED, f"job {job_id} still {state} after "
                                  f"{timeout_s:.0f} s; follow it at {self.job_url(job_id)}")
                time.sleep(POLL_S)

    def job_url(self, job_id: str) -> str:
        return f"{self.service}/jobs/{quote(job_id, safe='')}"

    def watch_url(self, did: str, cid: str) -> str:
        return f"{self.service}/watch/{quote(did, safe='')}/{quote(cid, safe='')}/"

    def aspect_ratio(self, did: str, cid: str) -> tuple[int, int] | None:
        """The top rendition's size from the master playlist (rotation already applied)."""
        try:
            resp = self.http.get(self.watch_url(did, cid) + "playlist.m3u8", timeout=15)
        except httpx.TransportError:
            return None
        sizes = [(int(w), int(h)) for w, h in _RESOLUTION.findall(resp.text)]
        return max(sizes, key=lambda s: s[0] * s[1]) if resp.status_code == 200 and sizes else None


def _chunks(f: Any, length: int, advance: Callable[[int], None],
            size: int = 256 * 1024) -> Iterator[bytes]:
    left = length
    while left > 0:
        data = f.read(min(size, left))
        if not data:
            raise Failure(EXIT_ERROR, "the file shrank while it was being uploaded")
        left -= len(data)
        advance(len(data))
        yield data


def _refused(resp: httpx.Response) -> Failure:
    """The service's XRPC error as a Failure with the matching exit code."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    name, message = str(body.get("error", "")), str(body.get("message", ""))
    text = f"the video service refused the upload: HTTP {resp.status_code} {name}: {message}"
    if resp.status_code == 429 or message in QUOTA_SENTENCES or name in QUOTA_SENTENCES:
        return Failure(EXIT_QUOTA, text)
    if resp.status_code in (400, 413, 415) or name in ("UnsupportedContentType",):
        return Failure(EXIT_REJECTED, text)
    if resp.status_code in (502, 503, 504):
        return Failure(EXIT_UNREACHABLE, text)
    return Failure(EXIT_ERROR, text)


def service_did(http: httpx.Client, service: str) -> str:
    """The service's own DID, from its ``/.well-known/did.json`` (did:web services)."""
    url = f"{service.rstrip('/')}/.well-known/did.json"
    try:
        resp = http.get(url, timeout=10)
    except httpx.TransportError as exc:
        raise Failure(EXIT_UNREACHABLE,
                      f"the video service is unreachable at {service}: {exc}") from None
    doc = resp.json() if resp.status_code == 200 else {}
    if not isinstance(doc, dict) or not str(doc.get("id", "")).startswith("did:"):
        raise Failure(EXIT_ERROR, f"{url} names no DID: pass --service-did")
    return str(doc["id"])


def run(args: argparse.Namespace, console: Console) -> tuple[Result, str]:
    path: Path = args.file
    if not path.is_file():
        raise Failure(EXIT_REJECTED, f"{path}: no such file")
    mime = MIME.get(path.suffix.lower(), "video/mp4")
    with contextlib.ExitStack() as stack:
        http = stack.enter_context(httpx.Client(timeout=30))
        session: PdsSession | None = None
        svc_did: str | None = args.service_did
        if args.key is not None:
            if args.post is not None:
                raise Failure(EXIT_ERROR, "--post needs a PDS account (--handle and "
                              "--app-password): a seed-mode blob is not on any PDS")
            aud = svc_did or service_did(http, args.service)
            svc_did = aud
            key_path: Path = args.key
            if key_path.exists():
                key = load_key(key_path)
            else:
                key = new_key_file(key_path)
                console.print(f"created a new P-256 key in {key_path}")
            if args.did:
                did = args.did
            else:
                who = stack.enter_context(Throwaway(key, args.identity_port).serving())
                did = who.did

            def tokens(nsid: str) -> str:
                return sign_token(key, did, aud, nsid)
        else:
            ident = args.handle or args.did
            password = args.app_password or os.environ.get("ATPROTO_APP_PASSWORD", "")
            if not ident or not password:
                raise Failure(EXIT_ERROR, "give --handle (or --did) and --app-password (or "
                              "ATPROTO_APP_PASSWORD), or --key for seed mode")
            if svc_did is None:  # only for the limits check: without it, skip that check
                with contextlib.suppress(Failure):
                    svc_did = service_did(http, args.service)
            pds_url = args.pds or resolve_pds(http, ident, args.plc)
            session = PdsSession.login(http, pds_url, ident, password)
            did = session.did
            upload_token = session.upload_token()
            pds = session

            def tokens(nsid: str) -> str:
                if nsid == GET_LIMITS:
                    assert svc_did is not None
                    return pds.service_auth(svc_did, GET_LIMITS)
                return upload_token

        uploader = Uploader(args.service, did, tokens, console, not args.no_progress)
        stack.callback(uploader.close)
        console.print(f"uploading {path.name} ({path.stat().st_size} bytes) as {did} "
                      f"to {uploader.service}")
        if svc_did:
            uploader.check_limits(path.stat().st_size)
        started = uploader.upload(path, mime)
        job_id = str(started["jobId"])
        console.print(f"job {job_id}: {uploader.job_url(job_id)}")
        status = uploader.follow(job_id, args.timeout)
        if status["state"] == "JOB_STATE_FAILED":
            code = status.get("failureCode", "")
            reason = status.get("error") or status.get("message") or "no reason given"
            exit_code = EXIT_REJECTED if code == "validation_failure" else EXIT_FAILED
            raise Failure(exit_code, f"processing failed ({code or 'unknown'}): {reason}")
        blob = status.get("blob")
        if not isinstance(blob, dict) or "ref" not in blob:
            raise Failure(EXIT_FAILED, "the job completed without a blob")
        cid = str(blob["ref"]["$link"])
        owner = str(status.get("did") or did)
        watch = uploader.watch_url(owner, cid)
        result = Result(job_id, owner, blob, watch + "playlist.m3u8", watch,
                        uploader.job_url(job_id))
        if args.post is not None:
            assert session is not None
            try:
                result.post = session.create_post(args.post, blob,
                                                  uploader.aspect_ratio(owner, cid), args.alt)
            except PdsError as exc:
                return result, f"the video is ready but the post failed: {exc}"
        return result, ""


def report(result: Result, as_json: bool) -> None:
    if as_json:
        out: dict[str, Any] = {"jobId": result.job_id, "did": result.did, "blob": result.blob,
                               "playlistUrl": result.playlist_url, "watchUrl": result.watch_url,
                               "jobUrl": result.job_url}
        if result.post is not None:
            out["post"] = {"uri": result.post.get("uri"), "cid": result.post.get("cid")}
        print(json.dumps(out))
        return
    print(f"blob      {json.dumps(result.blob)}")
    print(f"cid       {result.blob['ref']['$link']}")
    print(f"playlist  {result.playlist_url}")
    print(f"watch     {result.watch_url}")
    if result.post is not None:
        print(f"post      {result.post.get('uri')}")


PDS_EXIT = {"login": EXIT_LOGIN, "unreachable": EXIT_UNREACHABLE, "resolve": EXIT_ERROR,
            "post": EXIT_POST}  # fmt: skip


def cmd_upload(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    try:
        result, post_error = run(args, console)
    except Failure as exc:
        console.print(f"atproto-video upload: {exc}", style="red", highlight=False)
        return exc.code
    except PdsError as exc:
        console.print(f"atproto-video upload: {exc}", style="red", highlight=False)
        return PDS_EXIT.get(exc.kind, EXIT_ERROR)
    report(result, args.json)
    if post_error:
        console.print(f"atproto-video upload: {post_error}", style="red", highlight=False)
        return EXIT_POST
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "upload",
        help="upload a video as a Bluesky user (or a seed-mode key), follow it, post it",
        description="Upload FILE to the video service as a Bluesky user: log in to your PDS "
        "with an app password, get the upload token the Bluesky app gets, upload with a "
        "progress bar, follow the processing, print the blob and the playback URLs, and with "
        "--post post the video. With --key, sign seed-mode tokens instead (local testing, "
        "no PDS).",
        epilog="exit codes: 0 done, 1 other error, 2 usage, 3 login refused, 4 quota, "
               "5 video rejected, 6 service or PDS unreachable, 7 processing failed, "
               "8 post failed",
    )
    parser.add_argument("file", type=Path, help="the video file")
    parser.add_argument("--service", default=DEFAULT_SERVICE,
                        help=f"the video service's base URL (default {DEFAULT_SERVICE}, "
                             "the embedded service of `make run`)")
    parser.add_argument("--service-did", help="the service's DID (default: read from its "
                        "/.well-known/did.json)")
    who = parser.add_argument_group("as a Bluesky user")
    who.add_argument("--handle", help="your handle, e.g. alice.bsky.social")
    who.add_argument("--did", help="your DID (instead of --handle; with --key: sign as it)")
    who.add_argument("--app-password", help="an app password (default: $ATPROTO_APP_PASSWORD)")
    who.add_argument("--pds", help="your PDS's URL, when your DID document cannot be resolved "
                     "publicly (default: from the DID document)")
    who.add_argument("--plc", default=DEFAULT_PLC,
                     help=f"PLC directory for did:plc (default {DEFAULT_PLC})")
    who.add_argument("--post", metavar="TEXT", help="then post the video with this text")
    who.add_argument("--alt", help="alt text of the video in the post")
    seed = parser.add_argument_group("seed mode (local testing, no PDS)")
    seed.add_argument("--key", type=Path, help="sign the tokens with this key (PEM, or 64 "
                      "hex digits of secp256k1; created as a P-256 PEM if missing)")
    seed.add_argument("--identity-port", type=int, default=0, help="with --key and no --did: "
                      "the loopback port of the did:web:localhost identity (default: any)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds to wait for processing (default 1800)")
    parser.add_argument("--json", action="store_true", help="the result as one JSON line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=cmd_upload)
