"""The SSH port forward, over a real sshd on loopback, to a real HTTP server behind it."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ralph.handlers.machines.forwarding import TunnelError, forward
from ralph.handlers.machines.local import LocalMachine
from ralph.handlers.machines.ssh import SshMachine, SshTarget
from ralph.handlers.machines.tunnel import Tunnel

from tests.far.sshd import SshServer
from tests.waiting import wait_for


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(b'{"hello": "pod"}')
        elif self.path == "/stream":
            # A long-lived stream, as a ComfyUI WebSocket is: a line every 20 ms until cut.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for n in range(100_000):
                    self.wfile.write(f"event {n}\n".encode())
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._send(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def ssh(sshd: SshServer, tmp_path: Path) -> Iterator[SshMachine]:
    provider = SshMachine(SshTarget(sshd.host, sshd.port, sshd.client_key, user=sshd.user),
                           known_hosts=tmp_path / "state" / "known_hosts", connect_attempts=1,
                           connect_timeout=5)
    yield provider
    provider.close()


def _thread_names(port: int) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"tunnel-{port}")]


def test_http_through_the_tunnel_both_ways(ssh: SshMachine, http_server: int) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)  # bigger than one SSH window's worth of packets
    with forward(ssh, remote_port=http_server) as tunnel:
        assert isinstance(tunnel, Tunnel) and tunnel.port != http_server
        with httpx.Client(base_url=tunnel.url, timeout=10) as client:
            assert client.get("/hello").json() == {"hello": "pod"}
            assert client.get("/nothing").status_code == 404
            echoed = client.post("/echo", content=body).content
        digest, _, back = echoed.partition(b"\n")
        assert digest.decode() == hashlib.sha256(body).hexdigest() and back == body
        # Several clients at once, each its own channel.
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(httpx.get(f"{tunnel.url}/hello").status_code))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [200] * 8
        assert tunnel.connections >= 9 and tunnel.error is None
        port = tunnel.port
    # Closed cleanly: no thread left, the port no longer accepts.
    assert _thread_names(port) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_close_cuts_a_long_lived_stream(ssh: SshMachine, http_server: int) -> None:
    with forward(ssh, remote_port=http_server) as tunnel:
        sock = socket.create_connection(("127.0.0.1", tunnel.port), timeout=5)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while got.count(b"event") < 5:
            got += sock.recv(4096)
        port = tunnel.port
    t0 = time.monotonic()
    # The client sees the end of the stream promptly, not a hang.
    rest = b""
    while chunk := sock.recv(4096):
        rest += chunk
    assert time.monotonic() - t0 < 3
    assert _thread_names(port) == [] and tunnel.error is None
    sock.close()


def test_dropped_ssh_connection_cuts_streams_with_a_clear_error_and_reconnects(
        ssh: SshMachine, sshd: SshServer, http_server: int) -> None:
    with forward(ssh, remote_port=http_server) as tunnel:
        stream = socket.create_connection(("127.0.0.1", tunnel.port), timeout=10)
        stream.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while got.count(b"event") < 3:
            got += stream.recv(4096)
        tunnel.check()  # all well so far
        assert sshd.drop_connections() >= 1
        t0 = time.monotonic()
        try:
            while stream.recv(4096):
                pass
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 30, "the stream hung after the SSH connection dropped"
        stream.close()
        wait_for(lambda: tunnel.error is not None, what="the tunnel to record the lost connection")
        with pytest.raises(TunnelError, match=rf"SSH connection to root@127.0.0.1:{sshd.port} lost"):
            tunnel.check()
        # The next connection opens a fresh SSH connection.
        assert httpx.get(f"{tunnel.url}/hello", timeout=10).json() == {"hello": "pod"}


def test_ssh_server_gone_and_far_port_closed_are_named(ssh: SshMachine, sshd: SshServer,
                                                        http_server: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with forward(ssh, remote_port=closed_port) as tunnel:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{tunnel.url}/hello", timeout=5)
        with pytest.raises(TunnelError, match=rf"could not connect to 127.0.0.1:{closed_port}"):
            tunnel.check()
    with forward(ssh, remote_port=http_server) as tunnel:
        assert httpx.get(f"{tunnel.url}/hello", timeout=5).status_code == 200
        sshd.stop()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{tunnel.url}/hello", timeout=5)
        with pytest.raises(TunnelError, match=r"SSH connection to root@127\.0\.0\.1:\d+ unavailable.*cannot connect"):
            tunnel.check()


def test_local_machine_needs_no_tunnel(tmp_path: Path, http_server: int) -> None:
    local = LocalMachine(tmp_path / "root", hash_cache=tmp_path / "cache.json")
    with forward(local, remote_port=http_server) as direct:
        assert direct.port == http_server
        assert httpx.get(f"{direct.url}/hello").json() == {"hello": "pod"}
