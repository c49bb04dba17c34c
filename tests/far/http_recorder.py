"""A plain HTTP relay on loopback that writes down every request it passes on.

It stands on the network between ralph and a real server (the test ComfyUI), so a test can
assert what ralph asked for, not what it says it asked for.  It relays GET and POST with their
bodies; a WebSocket upgrade is answered 502, which a client must survive (it polls instead).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length"}


class Recorder:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self._lock = threading.Lock()

    def paths(self, method: str = "GET") -> list[str]:
        with self._lock:
            return [path for m, path in self.requests if m == method]

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


def _handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Relay(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._relay()

        def do_POST(self) -> None:
            self._relay()

        def _relay(self) -> None:
            recorder.record(self.command, self.path)
            if self.headers.get("Upgrade", "").lower() == "websocket":
                self._answer(502, b"no websocket through the recorder", {})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            upstream = http.client.HTTPConnection(recorder.host, recorder.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                kept = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP}
                self._answer(answer.status, data, kept)
            finally:
                upstream.close()

        def _answer(self, status: int, data: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Relay


@contextmanager
def recording(upstream: str) -> Iterator[tuple[str, Recorder]]:
    """A relay to ``upstream`` on a free loopback port: its URL and what it saw."""
    recorder = Recorder(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(recorder))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()
