"""A real HTTP(S) artifact server on 127.0.0.1 for the fetcher tests, with scripted misbehaviour.

Each path is a :class:`Route` saying what to serve and how to misbehave: answer some
statuses first (503, 429...), drop the connection after N body bytes, stall after N
bytes until released, serve slowly, honour ``Range`` (206) or ignore it (200), redirect,
require a bearer token. Every request is recorded (:attr:`ArtifactServer.seen`) so a
test can assert what the client sent (``Range``, ``If-Range``, ``Authorization``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    data: bytes = b""
    etag: str | None = '"v1"'
    ranges: bool = True  # honour Range with 206
    statuses: list[int] = field(default_factory=list)  # answered first, one per request
    retry_after: str | None = None  # sent with those statuses
    drops: list[int] = field(default_factory=list)  # per request: body bytes before a drop
    stalls: list[int] = field(default_factory=list)  # per request: body bytes before a stall
    chunk_delay: float = 0.0  # seconds between 16 KiB chunks
    token: str | None = None  # required bearer token
    redirect: str | None = None  # answer 302 to this URL
    redirect_status: int = 302
    declare_length: bool = True  # False: no Content-Length, the body ends at close


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]  # lower-case names

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: ArtifactServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        with owner.lock:
            owner.seen.append(Seen(self.path, headers))
            route = owner.routes.get(self.path.partition("?")[0])
            status = route.statuses.pop(0) if route and route.statuses else None
            drop = route.drops.pop(0) if route and route.drops else None
            stall = route.stalls.pop(0) if route and route.stalls else None
        owner.requests.release()
        if route is None:
            self._empty(404)
            return
        if status is not None:
            extra = {"Retry-After": route.retry_after} if route.retry_after is not None else {}
            self._empty(status, extra)
            return
        if route.redirect is not None:
            self._empty(route.redirect_status, {"Location": route.redirect})
            return
        if route.token is not None and headers.get("authorization") != f"Bearer {route.token}":
            self._empty(401)
            return
        self._serve(route, headers, drop, stall)

    def _empty(self, status: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(
        self, route: Route, headers: dict[str, str], drop: int | None, stall: int | None
    ) -> None:
        data = route.data
        start = 0
        wanted = headers.get("range")
        if_range = headers.get("if-range")
        if route.ranges and wanted and (if_range is None or if_range == route.etag):
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if route.declare_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        if route.etag is not None:
            self.send_header("ETag", route.etag)
        self.end_headers()
        limit = len(body)
        if drop is not None:
            limit = min(limit, drop)
        if stall is not None:
            limit = min(limit, stall)
        try:
            for pos in range(0, limit, 16384):
                self.wfile.write(body[pos : min(pos + 16384, limit)])
                if route.chunk_delay:
                    self.wfile.flush()
                    time.sleep(route.chunk_delay)
            self.wfile.flush()
            if stall is not None:
                self.server.owner.stalled.set()
                self.server.owner.release.wait(30)
            if drop is not None or stall is not None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True


class ArtifactServer:
    """A threaded HTTP(S) server on 127.0.0.1 serving :attr:`routes` (see module docs)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.requests = threading.Semaphore(0)
        self.release = threading.Event()  # lets stalled responses finish
        self.stalled = threading.Event()  # set when a response starts stalling
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [s.path for s in self.seen]

    def requests_to(self, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path == path]

    def start(self) -> ArtifactServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextlib.contextmanager
def running(tls: ssl.SSLContext | None = None) -> Iterator[ArtifactServer]:
    server = ArtifactServer(tls).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA certificate (PEM) a client should trust
    cert: Path  # the server's certificate for 127.0.0.1 and localhost
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_pki(directory: Path) -> Pki | None:
    """A throw-away CA and a server certificate signed by it, made with the openssl CLI.

    None when the openssl command is not available.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [
            *(openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2"),
            *("-subj", "/CN=KeyStone test CA"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        ],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            *(openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key),
            *("-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext),
        ],
    ]
    for step in steps:
        subprocess.run([str(a) for a in step], check=True, capture_output=True)
    return Pki(ca, cert, key)
