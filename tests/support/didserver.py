"""A loopback HTTP server that plays a PLC directory and did:web hosts for test identities."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tests.support.identity import Identity


class DidServer:
    """Serves ``GET /<did>`` (PLC style) and ``/.well-known/did.json`` (did:web style)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.fail_with: int | None = None
        self.web_did: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if outer.fail_with is not None:
                    self.send_response(outer.fail_with)
                    self.end_headers()
                    return
                if self.path == "/.well-known/did.json" and outer.web_did:
                    doc = outer.docs.get(outer.web_did)
                else:
                    doc = outer.docs.get(unquote(self.path.lstrip("/")))
                if doc is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("content-type", "application/did+ld+json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> DidServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def publish(self, ident: Identity) -> None:
        self.docs[ident.did] = ident.document()
