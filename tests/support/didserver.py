"""A loopback HTTP server that plays a PLC directory and did:web hosts for test identities."""

from __future__ import annotations

import gzip
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
        # While set, answers wait for it (requests are recorded first): lookups in flight.
        self.gate: threading.Event | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if outer.gate is not None:
                    outer.gate.wait(30)
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


class HostileDidHost:
    """A did:web host on loopback that answers ``/.well-known/did.json`` with a hostile body.

    ``endless``: a chunked body that never ends; ``declared``: a Content-Length of 1 GiB;
    ``gzip``: a small gzip body that inflates past any sane bound; ``drip``: one byte at a
    time, slowly, for ever. ``sent`` counts the body bytes it got onto the socket before the
    client went away.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    outer.answer(self)
                except OSError:
                    pass  # the client hung up: what a bounded reader does
                finally:
                    outer.done.set()
                    self.close_connection = True

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.did = f"did:web:localhost%3A{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "application/did+ld+json")
        block = b" " * 65536
        if self.mode == "gzip":
            body = gzip.compress(b'{"id": "' + b" " * (50 << 20) + b'"}')
            h.send_header("content-encoding", "gzip")
            h.send_header("content-length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            self.sent += len(body)
            return
        if self.mode == "declared":
            h.send_header("content-length", str(1 << 30))
        else:
            h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        while not self._stop.is_set() and self.sent < 1 << 30:
            if self.mode == "drip":
                h.wfile.write(b"1\r\n \r\n")
                h.wfile.flush()
                self.sent += 1
                self._stop.wait(0.2)
            elif self.mode == "declared":
                h.wfile.write(block)
                self.sent += len(block)
            else:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.sent += len(block)

    def start(self) -> HostileDidHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
