"""``atproto-video try-upload``: upload a clip to a running service as a throwaway identity.

A smoke test for an install (the chart's ``helm test`` runs it): a fresh P-256 key, a
``did:web:localhost%3A<port>`` identity whose DID document this process serves on loopback
while it runs, a service-auth token signed with that key, one ``uploadVideo`` call and
``getJobStatus`` polls until the job ends. The service resolves the identity over loopback,
so it must run on the same host with VIDEO_ALLOW_PRIVATE_ENDPOINTS=1 (development and test
installs only). Without a file, ffmpeg makes a short test clip.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atproto_video.api.identity import MULTICODEC_P256, MULTICODEC_SECP256K1, b58encode

UPLOAD = "app.bsky.video.uploadVideo"
STATUS = "app.bsky.video.getJobStatus"
TERMINAL = ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED")


#: The JWT algorithm and the DID document's multicodec prefix for each curve we sign with.
_CURVES: dict[str, tuple[str, bytes]] = {
    "secp256r1": ("ES256", MULTICODEC_P256),
    "secp256k1": ("ES256K", MULTICODEC_SECP256K1),
}


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A signing key from a file: PEM (PKCS#8 or SEC1, P-256 or secp256k1) or 64 hex digits
    (a secp256k1 private key, as atproto tools print them)."""
    data = path.read_bytes()
    text = data.strip()
    if len(text) == 64 and all(c in b"0123456789abcdefABCDEF" for c in text):
        return ec.derive_private_key(int(text, 16), ec.SECP256K1())
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise ValueError(f"{path}: not a P-256 or secp256k1 private key")
    return key


def new_key_file(path: Path) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key written to ``path`` (mode 0600), for the next runs to reuse."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


class Throwaway:
    """A did:web identity on 127.0.0.1:<port> (a free port by default), alive while its server
    runs, signing with ``key`` (default: a fresh P-256 key)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None, port: int = 0) -> None:
        self.key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        self.alg, multicodec = _CURVES[self.key.curve.name]
        doc: dict[str, Any] = {}
        body = b""

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == "/.well-known/did.json"
                self.send_response(200 if found else 404)
                self.send_header("content-type", "application/did+ld+json")
                self.send_header("content-length", str(len(body) if found else 0))
                self.end_headers()
                if found:
                    self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.did = f"did:web:localhost%3A{self._httpd.server_address[1]}"
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        doc.update({
            "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
            "id": self.did,
            "verificationMethod": [{
                "id": f"{self.did}#atproto",
                "type": "Multikey",
                "controller": self.did,
                "publicKeyMultibase": "z" + b58encode(multicodec + point),
            }],
        })  # fmt: skip
        body = json.dumps(doc).encode()

    @contextmanager
    def serving(self) -> Iterator[Throwaway]:
        thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()

    def token(self, aud: str, lxm: str, ttl_s: int = 300) -> str:
        return sign_token(self.key, self.did, aud, lxm, ttl_s)


def sign_token(key: ec.EllipticCurvePrivateKey, iss: str, aud: str, lxm: str,
               ttl_s: int = 300) -> str:
    """A service-auth JWT (seed mode: ``aud`` = the video service's DID, ``lxm`` = the method),
    ES256 or ES256K after the key's curve; the service accepts either S form."""
    alg = _CURVES[key.curve.name][0]
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "lxm": lxm, "iat": now, "exp": now + ttl_s,
              "jti": secrets.token_hex(16)}  # fmt: skip
    return jwt.encode(claims, key, algorithm=alg, headers={"typ": "JWT"})


def make_clip(ffmpeg: str, dest: Path, seconds: int) -> Path:
    """A small H.264 test pattern with a tone, the kind of file a phone uploads."""
    subprocess.run(
        [ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc=size=320x240:rate=30:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(dest)],
        check=True, timeout=120,
    )  # fmt: skip
    return dest


def try_upload(url: str, video: Path, service_did: str, timeout_s: float) -> int:
    base = url.rstrip("/")
    with Throwaway().serving() as who, httpx.Client(timeout=60) as client:
        with video.open("rb") as body:
            resp = client.post(
                f"{base}/xrpc/{UPLOAD}",
                params={"did": who.did, "name": video.name},
                content=body,
                headers={"authorization": f"Bearer {who.token(service_did, UPLOAD)}",
                         "content-type": "video/mp4"},
            )  # fmt: skip
        print(resp.status_code, resp.text, flush=True)
        if resp.status_code != 200:
            return 1
        job_id = resp.json()["jobId"]
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            status = client.get(f"{base}/xrpc/{STATUS}", params={"jobId": job_id}, timeout=10)
            state = status.json().get("jobStatus", {}) if status.status_code == 200 else {}
            line = f"{state.get('state')} {state.get('progress')}"
            if line != last:
                print(line, flush=True)
                last = line
            if state.get("state") in TERMINAL:
                print(json.dumps(state, indent=2))
                return 0 if state["state"] == "JOB_STATE_COMPLETED" else 1
            if time.monotonic() > deadline:
                print(f"job {job_id} not finished after {timeout_s:.0f}s", file=sys.stderr)
                return 1
            time.sleep(1)


def cmd_try_upload(args: argparse.Namespace) -> int:
    if args.video is not None:
        return try_upload(args.url, args.video, args.service_did, args.timeout)
    with tempfile.TemporaryDirectory(prefix="try-upload-") as tmp:
        clip = make_clip(args.ffmpeg, Path(tmp) / "try-upload.mp4", args.seconds)
        return try_upload(args.url, clip, args.service_did, args.timeout)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "try-upload",
        help="upload a clip as a throwaway identity and wait for the job (smoke test)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", help="the service's base URL, e.g. http://127.0.0.1:2585")
    parser.add_argument("video", type=Path, nargs="?", help="a video file (default: a test clip)")
    parser.add_argument(
        "--service-did",
        default="did:web:localhost%3A2585",
        help="the service's VIDEO_SERVICE_DID (the token's audience)",
    )
    parser.add_argument("--seconds", type=int, default=2, help="length of the generated clip")
    parser.add_argument(
        "--ffmpeg",
        default=os.environ.get("VIDEO_FFMPEG_PATH", "ffmpeg"),
        help="ffmpeg for the generated clip",
    )
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds to wait for the job to end")  # fmt: skip
    parser.set_defaults(func=cmd_try_upload)
