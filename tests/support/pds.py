"""A real atproto PDS and PLC directory on loopback, for tests of the Bluesky flow.

``tests/support/pds/start-net.js`` runs the official ``@atproto/pds`` and
``@did-plc/server`` npm packages in one Node process bound to 127.0.0.1, on free ports,
with one account. :class:`LocalPDS` starts it, speaks XRPC to it over HTTP (httpx) the way
the Bluesky app does, and can make the PDS unreachable while the PLC directory stays up.

The node modules live outside the repo, installed by ``scripts/install-test-deps.sh``
(keyed by ``package-lock.json`` and the Node ABI); see :func:`node_modules_dir`.

Usage::

    with LocalPDS() as pds:
        token = pds.service_auth(pds.pds_service_did, "com.atproto.repo.uploadBlob")
        ...
        with pds.pds_down():
            ...  # connection refused on pds_url; plc_url still answers
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from .tempdirs import make_owned_dir

__all__ = [
    "PDS_DIR",
    "LocalPDS",
    "PDSAccount",
    "PDSError",
    "XrpcError",
    "js_client_call",
    "node_modules_dir",
]

PDS_DIR = Path(__file__).resolve().parent / "pds"
OutageMode = Literal["refuse", "error", "hang"]


class PDSError(RuntimeError):
    """The loopback network could not be installed, started or driven."""


class XrpcError(PDSError):
    """An XRPC call answered with an error status."""

    def __init__(self, nsid: str, status: int, body: Any) -> None:
        self.nsid, self.status, self.body = nsid, status, body
        name = body.get("error") if isinstance(body, dict) else None
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{nsid}: HTTP {status} {name}: {msg}")

    @property
    def error(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None


@dataclass(frozen=True)
class PDSAccount:
    """An account on the local PDS (did:plc registered in the local PLC directory)."""

    did: str
    handle: str
    password: str
    email: str = ""


# --------------------------------------------------------------------------- node modules
def _cache_roots() -> list[Path]:
    roots = []
    if os.environ.get("ATPROTO_VIDEO_CACHE_DIR"):
        roots.append(Path(os.environ["ATPROTO_VIDEO_CACHE_DIR"]))
    roots.append(Path("/var/cache/atproto-video"))
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots.append(Path(xdg) / "atproto-video")
    return roots


def node_modules_key(node: str = "node") -> str:
    """Cache key; must match ``pds_key`` in scripts/install-test-deps.sh."""
    digest = hashlib.sha256((PDS_DIR / "package-lock.json").read_bytes()).hexdigest()[:16]
    abi = subprocess.run(
        [node, "-p", "process.versions.modules"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return f"{digest}-abi{abi}"


def node_modules_dir(node: str = "node") -> Path:
    """The installed node_modules for tests/support/pds.

    ``$ATPROTO_VIDEO_PDS_NODE_MODULES`` wins; then the install script's cache dirs; then
    ``tests/support/pds/node_modules`` (a developer's own ``npm ci`` there).
    """
    explicit = os.environ.get("ATPROTO_VIDEO_PDS_NODE_MODULES")
    if explicit:
        return Path(explicit)
    if shutil.which(node) is None:
        raise PDSError("node not found: run scripts/install-test-deps.sh")
    key = node_modules_key(node)
    for root in _cache_roots():
        d = root / "pds-node" / key
        if (d / ".complete").is_file():
            return d / "node_modules"
    local = PDS_DIR / "node_modules"
    if (local / "@atproto" / "pds").is_dir():
        return local
    raise PDSError(
        f"PDS node modules for lock key {key} not installed: run scripts/install-test-deps.sh"
    )


def _node_env(node: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["NODE_PATH"] = str(node_modules_dir(node))
    env.setdefault("NODE_ENV", "test")
    env.update(extra or {})
    return env


def js_client_call(
    method: str,
    service_url: str,
    *,
    token: str | None = None,
    params: Mapping[str, Any] | None = None,
    body: bytes | None = None,
    encoding: str = "video/mp4",
    query: Mapping[str, str] | None = None,
    node: str = "node",
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Call ``app.bsky.video.<method>`` on ``service_url`` with @atproto/api (client-call.js).

    Returns the script's JSON: ``{"ok": True, "status", "data", "headers"}`` when the JS
    client accepted the answer (lexicon-valid), else ``{"ok": False, "status", "error",
    "message", "invalidResponse", ...}``. ``query`` adds undeclared query params on the wire
    (social-app's ``did``/``name`` on uploadVideo).
    """
    with tempfile.TemporaryDirectory(prefix="atproto-video-jsclient-") as tmp:
        spec: dict[str, Any] = {"method": method, "service": service_url}
        if token is not None:
            spec["token"] = token
        if params:
            spec["params"] = dict(params)
        if query:
            spec["query"] = dict(query)
        if body is not None:
            path = Path(tmp) / "body"
            path.write_bytes(body)
            spec["bodyFile"] = str(path)
            spec["encoding"] = encoding
        res = subprocess.run(
            [node, str(PDS_DIR / "client-call.js"), json.dumps(spec)],
            env=_node_env(node),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if res.returncode != 0:
        raise PDSError(f"client-call.js exited {res.returncode}: {res.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# --------------------------------------------------------------------------- LocalPDS
class LocalPDS:
    """PLC directory + PDS on 127.0.0.1 (one Node process), with one account.

    Knobs map to start-net.js env vars: ``plc_doc_format`` ("current" renders keys as
    Multikey like plc.directory, "legacy" as @did-plc/server 0.0.1 does),
    ``blob_upload_limit`` (bytes; PDS answers 413 above it), ``extra_accounts``
    (``{handle: password}`` created at start).
    """

    def __init__(
        self,
        *,
        handle: str = "alice.test",
        password: str = "alice-pass",
        plc_doc_format: Literal["current", "legacy"] = "current",
        blob_upload_limit: int | None = None,
        extra_accounts: Mapping[str, str] | None = None,
        node: str = "node",
        start_timeout: float = 90.0,
        log_enabled: bool = False,
    ) -> None:
        self._handle = handle
        self._password = password
        self.plc_doc_format = plc_doc_format
        self.blob_upload_limit = blob_upload_limit
        self._extra_accounts = dict(extra_accounts or {})
        self._node = node
        self._start_timeout = start_timeout
        self._log_enabled = log_enabled
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._info: dict[str, Any] | None = None
        self._http: httpx.Client | None = None
        self._sessions: dict[str, str] = {}
        self._accounts: dict[str, PDSAccount] = {}
        self._log: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalPDS:
        """Start PLC + PDS, wait until the account exists. Returns self."""
        if self._proc is not None:
            raise PDSError("already started")
        nm_env = _node_env(self._node)  # fails early and clearly when not installed
        self._dir = make_owned_dir("atproto-video-pdsnet-")
        atexit.register(self.stop)
        try:
            last = ""
            for _attempt in range(3):
                last = self._spawn(nm_env)
                if not last:
                    break
                if "EADDRINUSE" not in last:  # a free port was taken meanwhile: retry
                    break
            if self._info is None:
                raise PDSError(f"start-net.js did not start:\n{last}")
        except BaseException:
            self.stop()
            raise
        info = self._info
        self._http = httpx.Client(timeout=30.0, trust_env=False)
        for a in info["accounts"]:
            acct = PDSAccount(a["did"], a["handle"], a["password"], a.get("email", ""))
            self._accounts[acct.did] = acct
        return self

    def _spawn(self, nm_env: dict[str, str]) -> str:
        """One start attempt; '' on success, else the process output."""
        assert self._dir is not None
        info_file = self._dir / "info.json"
        info_file.unlink(missing_ok=True)
        data_dir = self._dir / "data"
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir()
        env = dict(nm_env)
        env.update(
            INFO_FILE=str(info_file),
            DATA_DIR=str(data_dir),
            BIND_HOST="127.0.0.1",
            HANDLE=self._handle,
            PASSWORD=self._password,
            PLC_DOC_FORMAT=self.plc_doc_format,
            EXIT_ON_STDIN_CLOSE="1",
            LOG_ENABLED="true" if self._log_enabled else "false",
            TMPDIR=str(self._dir),
        )
        for k in ("PLC_PORT", "PDS_PORT", "CONTROL_PORT"):
            env.pop(k, None)  # always free ports
        if self.blob_upload_limit is not None:
            env["BLOB_UPLOAD_LIMIT"] = str(self.blob_upload_limit)
        if self._extra_accounts:
            env["EXTRA_ACCOUNTS"] = ",".join(f"{h}:{p}" for h, p in self._extra_accounts.items())
        log_path = self._dir / "net.log"
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        proc = subprocess.Popen(
            [self._node, str(PDS_DIR / "start-net.js")],
            env=env,
            cwd=self._dir,
            stdin=subprocess.PIPE,  # closed by stop() or by our death: the node side exits
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._proc = proc
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if info_file.is_file():
                self._info = json.loads(info_file.read_text())
                return ""
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        self._kill_proc()
        self._log.close()
        self._log = None
        out = log_path.read_text(errors="replace")[-4000:]
        return out or "timed out without output"

    def _kill_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def stop(self) -> None:
        """SIGTERM the node process by PID (SIGKILL after 15 s) and remove its data. Idempotent."""
        if self._http is not None:
            self._http.close()
            self._http = None
        self._kill_proc()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._info = None
        self._sessions.clear()
        self._accounts.clear()
        atexit.unregister(self.stop)

    def __enter__(self) -> LocalPDS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ properties
    @property
    def info(self) -> dict[str, Any]:
        """The JSON start-net.js printed when ready."""
        if self._info is None or self._proc is None:
            raise PDSError("not started")
        return self._info

    @property
    def pid(self) -> int:
        """PID of the node process running PLC + PDS."""
        self.info  # noqa: B018 (raises when not started)
        assert self._proc is not None
        return self._proc.pid

    @property
    def pds_url(self) -> str:
        """``http://localhost:PORT``: the #atproto_pds endpoint in users' DID documents."""
        return str(self.info["pdsUrl"])

    @property
    def pds_direct_url(self) -> str:
        """``http://127.0.0.1:PORT``: the same PDS without name resolution."""
        return f"http://127.0.0.1:{self.info['pdsPort']}"

    @property
    def plc_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the PLC directory (set as the service's PLC URL)."""
        return str(self.info["plcUrl"])

    @property
    def control_url(self) -> str:
        return str(self.info["controlUrl"])

    @property
    def pds_service_did(self) -> str:
        """The PDS's service DID (``did:web:localhost``): the Bluesky-mode token audience."""
        return str(self.info["pdsServiceDid"])

    @property
    def account(self) -> PDSAccount:
        """The account created at start."""
        return self._accounts[self.info["did"]]

    @property
    def accounts(self) -> list[PDSAccount]:
        return list(self._accounts.values())

    @property
    def did(self) -> str:
        return self.account.did

    @property
    def handle(self) -> str:
        return self.account.handle

    @property
    def password(self) -> str:
        return self.account.password

    @property
    def startup_ms(self) -> int:
        """Start-up time measured inside the node process (module load to ready)."""
        return int(self.info["startupMs"])

    @property
    def log_path(self) -> Path:
        """Combined stdout/stderr of the node process (kept until ``stop()``)."""
        if self._dir is None:
            raise PDSError("not started")
        return self._dir / "net.log"

    def rss_bytes(self) -> int:
        """Resident memory of the node process (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise PDSError("no VmRSS")

    # ------------------------------------------------------------------ accounts
    def create_account(self, handle: str, password: str | None = None) -> PDSAccount:
        """Create another account (handle must end in ``.test``) via the PDS's createAccount."""
        res = self._client.post(
            f"{self.control_url}/accounts", json={"handle": handle, "password": password}
        )
        if res.status_code != 200:
            raise PDSError(f"create_account({handle!r}): {res.status_code} {res.text}")
        a = res.json()
        acct = PDSAccount(a["did"], a["handle"], a["password"], a.get("email", ""))
        self._accounts[acct.did] = acct
        return acct

    def _account(self, account: PDSAccount | str | None) -> PDSAccount:
        if account is None:
            return self.account
        if isinstance(account, PDSAccount):
            return account
        for a in self._accounts.values():
            if account in (a.did, a.handle):
                return a
        raise PDSError(f"unknown account {account!r}")

    # ------------------------------------------------------------------ XRPC
    @property
    def _client(self) -> httpx.Client:
        if self._http is None:
            raise PDSError("not started")
        return self._http

    def xrpc(
        self,
        nsid: str,
        *,
        method: Literal["GET", "POST"] = "GET",
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """Raw XRPC request to the PDS (no status check)."""
        h = dict(headers or {})
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        return self._client.request(
            method,
            f"{self.pds_direct_url}/xrpc/{nsid}",
            params=params,
            json=json_body,
            content=content,
            headers=h,
        )

    def _xrpc_json(self, nsid: str, **kw: Any) -> Any:
        res = self.xrpc(nsid, **kw)
        body: Any
        try:
            body = res.json()
        except ValueError:
            body = res.text
        if res.status_code != 200:
            raise XrpcError(nsid, res.status_code, body)
        return body

    def access_token(self, account: PDSAccount | str | None = None, *, fresh: bool = False) -> str:
        """The account's session access JWT (createSession, cached)."""
        acct = self._account(account)
        if fresh or acct.did not in self._sessions:
            body = self._xrpc_json(
                "com.atproto.server.createSession",
                method="POST",
                json_body={"identifier": acct.handle, "password": acct.password},
            )
            self._sessions[acct.did] = body["accessJwt"]
        return self._sessions[acct.did]

    def _authed(self, account: PDSAccount | str | None, nsid: str, **kw: Any) -> Any:
        """XRPC as the account; log in again once if the cached session was refused."""
        try:
            return self._xrpc_json(nsid, token=self.access_token(account), **kw)
        except XrpcError as e:
            if e.status not in (400, 401) or e.error not in ("ExpiredToken", "InvalidToken"):
                raise
            return self._xrpc_json(nsid, token=self.access_token(account, fresh=True), **kw)

    def service_auth(
        self,
        aud: str,
        lxm: str | None,
        exp: float | None = None,
        *,
        account: PDSAccount | str | None = None,
    ) -> str:
        """A service-auth JWT from com.atproto.server.getServiceAuth, as the Bluesky app gets it.

        Logs in, then ``GET getServiceAuth?aud=&lxm=&exp=`` with the session token. ``exp``
        is the absolute expiry in seconds; @atproto/api encodes this integer parameter as
        ``Number(exp) | 0``, so a fractional value (social-app sends ``now + 1800.x``) is
        truncated the same way here. ``lxm=None`` omits it (the PDS then mints a token that
        is not accepted as service auth). Raises :class:`XrpcError` (e.g. ``BadExpiration``
        for more than an hour ahead).
        """
        params: dict[str, str] = {"aud": aud}
        if lxm is not None:
            params["lxm"] = lxm
        if exp is not None:
            params["exp"] = str(int(exp))
        body = self._authed(account, "com.atproto.server.getServiceAuth", params=params)
        return str(body["token"])

    def upload_blob(
        self, data: bytes, mime_type: str = "video/mp4", *, token: str | None = None
    ) -> dict[str, Any]:
        """uploadBlob to the PDS; returns the blob JSON (``{"$type": "blob", ...}``).

        ``token`` defaults to the account's session token; pass a service-auth JWT to upload
        the way the video service does.
        """
        body = self._xrpc_json(
            "com.atproto.repo.uploadBlob",
            method="POST",
            content=data,
            headers={"content-type": mime_type},
            token=token or self.access_token(),
        )
        blob: dict[str, Any] = body["blob"]
        return blob

    def create_post_with_video(
        self,
        blob_json: Mapping[str, Any],
        *,
        text: str = "video test",
        alt: str | None = None,
        aspect_ratio: tuple[int, int] | None = (16, 9),
        account: PDSAccount | str | None = None,
    ) -> dict[str, Any]:
        """createRecord of an app.bsky.feed.post embedding ``blob_json`` as app.bsky.embed.video.

        ``blob_json`` is the blob (``{"$type": "blob", "ref": ..., ...}``) or uploadBlob's
        whole answer (``{"blob": {...}}``). Returns createRecord's answer (``uri``, ``cid``...).
        The PDS validates the record, so a malformed blob ref raises :class:`XrpcError`.
        """
        blob = blob_json["blob"] if "blob" in blob_json and "ref" not in blob_json else blob_json
        acct = self._account(account)
        embed: dict[str, Any] = {"$type": "app.bsky.embed.video", "video": dict(blob)}
        if alt is not None:
            embed["alt"] = alt
        if aspect_ratio is not None:
            embed["aspectRatio"] = {"width": aspect_ratio[0], "height": aspect_ratio[1]}
        record = {
            "$type": "app.bsky.feed.post",
            "text": text,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "embed": embed,
        }
        body: dict[str, Any] = self._authed(
            acct,
            "com.atproto.repo.createRecord",
            method="POST",
            json_body={"repo": acct.did, "collection": "app.bsky.feed.post", "record": record},
        )
        return body

    def get_blob(self, cid: str, did: str | None = None) -> bytes:
        """com.atproto.sync.getBlob (only answers once a record references the blob)."""
        res = self.xrpc("com.atproto.sync.getBlob", params={"did": did or self.did, "cid": cid})
        if res.status_code != 200:
            try:
                body: Any = res.json()
            except ValueError:
                body = res.text
            raise XrpcError("com.atproto.sync.getBlob", res.status_code, body)
        return res.content

    def did_document(self, did: str | None = None) -> dict[str, Any]:
        """The DID document as the PLC directory serves it."""
        res = self._client.get(f"{self.plc_url}/{did or self.did}")
        res.raise_for_status()
        doc: dict[str, Any] = res.json()
        return doc

    # ------------------------------------------------------------------ outages
    def stop_pds(self, mode: OutageMode = "refuse") -> None:
        """Make the PDS unreachable; the PLC directory stays up.

        ``refuse``: listener closed, open connections dropped (connection refused);
        ``error``: every request answered 503; ``hang``: requests never answered.
        """
        self._control("/pds/stop", {"mode": mode})

    def start_pds(self) -> None:
        """Undo :meth:`stop_pds`: same port, same data."""
        self._control("/pds/start", {})

    @contextlib.contextmanager
    def pds_down(self, mode: OutageMode = "refuse") -> Iterator[None]:
        self.stop_pds(mode)
        try:
            yield
        finally:
            self.start_pds()

    def _control(self, path: str, body: dict[str, Any]) -> None:
        res = self._client.post(f"{self.control_url}{path}", json=body)
        if res.status_code != 200:
            raise PDSError(f"control {path}: {res.status_code} {res.text}")
