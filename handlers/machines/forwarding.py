"""A port on a machine, reachable from here: through an SSH tunnel, or as it is on this machine::

    with forward(provider, remote_port=8188) as port:
        httpx.get(f"{port.url}/system_stats")

Apart from tunnel.py so that this machine (``LocalMachine``) reaches its own ports without
loading the SSH stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ralph.handlers.machines.base import Machine, MachineError

if TYPE_CHECKING:
    from ralph.handlers.machines.tunnel import Tunnel


class TunnelError(MachineError):
    """The tunnel could not carry a connection: the SSH link dropped or the far port refused."""


class Direct:
    """The same interface as ``Tunnel`` for a machine that is this one: no forwarding needed."""

    error: str | None = None

    def __init__(self, port: int):
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check(self) -> None:
        """Nothing can drop: there is no tunnel."""

    def close(self) -> None:
        """Nothing to close."""


@contextmanager
def forward(provider: Machine, remote_port: int, *, remote_host: str = "127.0.0.1",
            local_port: int = 0) -> Iterator[Tunnel | Direct]:
    """Forward a 127.0.0.1 port here to ``remote_host:remote_port`` on ``provider``'s machine.

    An ``SshMachine`` gets a real tunnel over its SSH connection; a provider without
    ``transport()`` (``LocalMachine``) is this machine, so the port is used as it is.
    """
    transport = getattr(provider, "transport", None)
    if transport is None:
        yield Direct(remote_port)
        return
    target = getattr(provider, "target", None)
    where = f"{target.user}@{target.host}:{target.port}" if target is not None else "the SSH server"
    from ralph.handlers.machines.tunnel import Tunnel

    tunnel = Tunnel(transport, remote_port, remote_host=remote_host, local_port=local_port, where=where)
    try:
        yield tunnel
    finally:
        tunnel.close()
