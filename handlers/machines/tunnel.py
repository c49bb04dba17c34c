"""A local port forward over an existing SSH connection (``ssh -L`` without a second login).

ComfyUI on a pod listens on 127.0.0.1 only, so it is reached through this tunnel and never
through a public port. A listening socket on this machine's 127.0.0.1 accepts connections;
each is carried in a paramiko ``direct-tcpip`` channel to ``remote_host:remote_port`` as the
pod sees it, pumped both ways by one thread per connection (``forwarding.forward`` makes one for an SSH machine).

Each new connection asks the provider for its transport, so after the SSH connection drops
the next connection reconnects; connections open at the drop are closed at once (their
clients see the end of stream rather than hanging) and ``tunnel.error`` says why, which
``tunnel.check()`` raises as ``TunnelError``.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

import paramiko
from ralph.handlers.machines.base import MachineError
from ralph.handlers.machines.forwarding import TunnelError

_BUFFER = 1 << 16
_POLL_S = 0.5  # how often an idle connection looks at the transport (drop detection)


class Tunnel:
    """A listening socket on 127.0.0.1 whose connections are forwarded over SSH.

    ``transport`` returns a live paramiko transport (reconnecting when needed); ``where``
    names the SSH side in error messages.
    """

    def __init__(self, transport: Callable[[], paramiko.Transport], remote_port: int, *,
                 remote_host: str = "127.0.0.1", local_port: int = 0, where: str = "the SSH server"):
        self._transport = transport
        self.remote_host, self.remote_port = remote_host, remote_port
        self.where = where
        self.error: str | None = None
        """The latest failure to carry a connection, for messages; None while all went well."""
        self.connections = 0
        self._lock = threading.Lock()
        self._open: set[tuple[socket.socket, paramiko.Channel | None]] = set()
        self._threads: set[threading.Thread] = set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", local_port))
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name=f"tunnel-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check(self) -> None:
        """Raise ``TunnelError`` if a connection could not be carried or was cut by a drop."""
        if self.error:
            raise TunnelError(self.error)

    # -- serving ----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, peer = self._listener.accept()
            except OSError:
                return  # the listener was closed
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(client, peer), daemon=True,
                                      name=f"tunnel-{self.port}-{peer[1]}")
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    return
                self.connections += 1
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket, peer: tuple[str, int]) -> None:
        target = f"{self.remote_host}:{self.remote_port}"
        chan: paramiko.Channel | None = None
        entry: tuple[socket.socket, paramiko.Channel | None] = (client, None)
        try:
            try:
                transport = self._transport()
                chan = transport.open_channel("direct-tcpip", (self.remote_host, self.remote_port), peer)
            except paramiko.ChannelException as e:
                # The SSH server is there, but nothing listens at the far port (or it is refused).
                self.error = f"{self.where} could not connect to {target}: {e.args[-1] if e.args else e}"
                return
            except (MachineError, paramiko.SSHException, EOFError, OSError) as e:
                self.error = f"SSH connection to {self.where} unavailable, cannot reach {target}: {e}"
                return
            entry = (client, chan)
            with self._lock:
                if self._closed.is_set():
                    return
                self._open.add(entry)
            self._pump(client, chan, transport, target)
        finally:
            with self._lock:
                self._open.discard(entry)
                self._threads.discard(threading.current_thread())
            for thing in (chan, client):
                if thing is not None:
                    try:
                        thing.close()
                    except (OSError, EOFError, paramiko.SSHException):
                        pass

    def _pump(self, client: socket.socket, chan: paramiko.Channel, transport: paramiko.Transport,
              target: str) -> None:
        """Copy both ways until both sides have ended (half-closes are passed on)."""
        client_open = chan_open = True
        while client_open or chan_open:
            watched = ([client] if client_open else []) + ([chan] if chan_open else [])
            try:
                readable, _, _ = select.select(watched, [], [], _POLL_S)
            except (OSError, ValueError):
                return  # a socket was closed under us by close()
            if client in readable:
                try:
                    data = client.recv(_BUFFER)
                except OSError:
                    return  # the local client went away: nothing wrong with the tunnel
                try:
                    if data:
                        chan.sendall(data)
                    else:
                        client_open = False
                        chan.shutdown_write()
                except (OSError, EOFError, paramiko.SSHException):
                    break
            if chan in readable:
                try:
                    data = chan.recv(_BUFFER)
                except (OSError, EOFError, paramiko.SSHException):
                    break
                if not data and not chan.eof_received:
                    break  # closed without an end of stream: the link went (checked below)
                try:
                    if data:
                        client.sendall(data)
                    else:
                        chan_open = False
                        client.shutdown(socket.SHUT_WR)
                except OSError:
                    return  # the local client went away
            if not transport.is_active():
                break
        if client_open or chan_open:
            self._note_drop(transport, target)

    def _note_drop(self, transport: paramiko.Transport, target: str) -> None:
        """Record a connection cut by the SSH link going away (not by ``close()`` or the far end)."""
        # paramiko closes the channels a moment before it marks the transport inactive.
        for _ in range(20):
            if not transport.is_active() or self._closed.is_set():
                break
            self._closed.wait(0.05)
        if not self._closed.is_set() and not transport.is_active():
            self.error = f"SSH connection to {self.where} lost; a forwarded connection to {target} was cut"

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop listening, cut every forwarded connection and wait for their threads."""
        self._closed.set()
        try:
            # close() alone does not wake a thread blocked in accept(); shutdown() does (Linux).
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            open_now, threads = list(self._open), list(self._threads)
        for client, chan in open_now:
            for thing in (chan, client):
                if thing is None:
                    continue
                try:
                    if isinstance(thing, socket.socket):
                        thing.shutdown(socket.SHUT_RDWR)
                    thing.close()
                except (OSError, EOFError, paramiko.SSHException):
                    pass
        self._acceptor.join(5)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
