#!/usr/bin/env python3
"""A tiny key/value store over HTTP: the demo's dependency with a health endpoint.

GET /healthz -> 200 "ok"; GET /kv/<key> -> value or 404; PUT /kv/<key> stores the body.
"""

import argparse
import http.server
import sys

STORE: dict[str, bytes] = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, b"ok\n")
        elif self.path.startswith("/kv/") and self.path[4:] in STORE:
            self._reply(200, STORE[self.path[4:]])
        else:
            self._reply(404, b"not found\n")

    def do_PUT(self) -> None:
        if not self.path.startswith("/kv/"):
            self._reply(404, b"not found\n")
            return
        length = int(self.headers.get("Content-Length", "0"))
        STORE[self.path[4:]] = self.rfile.read(length)
        self._reply(204, b"")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print("kv-store:", fmt % args, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"kv-store listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
