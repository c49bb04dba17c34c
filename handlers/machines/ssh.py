"""A machine reached over SSH (``user@host:port``, key auth): commands, file info, transfers.

paramiko carries commands and SFTP; bulk transfers go through ``transfer`` (rsync over
OpenSSH with the same key, port and pinned host key, else pipelined SFTP). A dropped
connection is re-established on the next call; a command that was cut off mid-run raises
``ConnectionLost`` rather than being re-run, since commands need not be idempotent.
"""

from __future__ import annotations

import posixpath
import select
import socket
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import paramiko
from ralph.handlers.machines import hashing, remote_shell, transfer
from ralph.handlers.machines.base import (
    CommandFailed,
    CommandResult,
    CommandTimeout,
    FileInfo,
    Machine,
    MachineError,
    Progress,
    TransferResult,
)
from ralph.handlers.machines.hostkeys import HostKeyChanged, HostKeyStore, entry_name

# Preferred first; the others keep older or FIPS-limited servers reachable.
CIPHERS = ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr")
# paramiko's 2 MiB default window caps one stream near window/RTT (~20 MB/s at 100 ms).
WINDOW = 64 * 1024 * 1024
MAX_PACKET = 256 * 1024


class ConnectionLost(MachineError):
    """The SSH connection dropped while an operation was in flight."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    key_file: Path
    user: str = "root"
    alias: str | None = None
    """Name the host key is pinned under (a pod id); default ``[host]:port``."""
    workdir: str | None = None
    """Remote directory commands start in and relative paths resolve against."""

    @property
    def known_hosts_name(self) -> str:
        return entry_name(self.host, self.port, self.alias)


class _PinPolicy(paramiko.MissingHostKeyPolicy):
    """First contact: pin the offered key (paramiko only asks when no key is known)."""

    def __init__(self, store: HostKeyStore, name: str):
        self.store, self.name = store, name

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.store.verify(self.name, key)


_DROPPED = (EOFError, OSError, paramiko.SSHException)


class SshMachine(Machine):
    def __init__(self, target: SshTarget, *, known_hosts: Path, hash_cache: Path | None = None,
                 connect_timeout: float = 20.0, connect_attempts: int = 3,
                 keepalive: float = 15.0):
        """``known_hosts`` and ``hash_cache`` live in ralph's state directory (the hash cache
        defaults to ``sha256-cache.json`` beside ``known_hosts``)."""
        self.target = target
        self.host_keys = HostKeyStore(known_hosts)
        self.hashes = hashing.HashCache(hash_cache or Path(known_hosts).with_name("sha256-cache.json"))
        self.connect_timeout = connect_timeout
        self.connect_attempts = connect_attempts
        self.keepalive = keepalive
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ---------------------------------------------------------------------------
    def transport(self) -> paramiko.Transport:
        """The live transport, connecting (or reconnecting after a drop) when needed."""
        client = self._client
        if client is not None:
            t = client.get_transport()
            if t is not None and t.is_active():
                return t
            self._drop()
        delay = 0.5
        for attempt in range(1, self.connect_attempts + 1):
            try:
                self._client = self._connect()
                transport = self._client.get_transport()
                assert transport is not None  # a client just connected has one
                return transport
            except (paramiko.AuthenticationException, paramiko.BadHostKeyException, HostKeyChanged):
                raise  # retrying cannot fix a refused key
            except (TimeoutError, *_DROPPED) as e:
                if attempt == self.connect_attempts:
                    raise MachineError(f"cannot connect to {self._where()}: {e}") from e
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _connect(self) -> paramiko.SSHClient:
        from fabric import Config, Connection

        t = self.target
        sock = socket.create_connection((t.host, t.port), timeout=self.connect_timeout)
        # Without TCP_NODELAY each small request (channel open, SFTP stat) waits out the peer's
        # delayed ACK: ~40 ms per round trip.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # fabric opens the connection; ralph decides its target, key and host-key policy, so
        # the user's ~/.ssh/config is not read (it could add keys or change the user).
        connection = Connection(
            t.host,
            user=t.user,
            port=t.port,
            connect_timeout=max(1, round(self.connect_timeout)),
            config=Config(overrides={"load_ssh_configs": False}),
            connect_kwargs={
                "key_filename": str(t.key_file),
                "sock": sock,
                "banner_timeout": self.connect_timeout,
                "auth_timeout": self.connect_timeout,
                "look_for_keys": False,
                "allow_agent": False,
            },
        )
        client = connection.client
        name = t.known_hosts_name
        pinned = self.host_keys.pinned(name)
        if pinned is not None:
            # paramiko looks keys up under [host]:port; the pin may be under a pod alias.
            client.get_host_keys().add(entry_name(t.host, t.port), pinned.get_name(), pinned)
        client.set_missing_host_key_policy(_PinPolicy(self.host_keys, name))
        try:
            connection.open()
        except paramiko.BadHostKeyException as e:
            client.close()
            if pinned is None:
                raise
            raise HostKeyChanged(name, e.key, pinned, self.host_keys.path) from None
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        transport.set_keepalive(int(self.keepalive))
        return client

    def _drop(self) -> None:
        for thing in (self._sftp, self._client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # a dead connection may fail to close; it is gone either way
                    pass
        self._sftp = self._client = None

    def close(self) -> None:
        self._drop()

    def _where(self) -> str:
        t = self.target
        return f"{t.user}@{t.host}:{t.port}"

    def sftp(self) -> paramiko.SFTPClient:
        transport = self.transport()
        if self._sftp is None or (channel := self._sftp.get_channel()) is None or channel.closed:
            sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW, max_packet_size=MAX_PACKET)
            if sftp is None:  # paramiko's answer when the server opens no channel
                raise ConnectionLost(f"connection to {self._where()} opened no SFTP channel")
            self._sftp = sftp
        return self._sftp

    def openssh_args(self) -> list[str]:
        """``ssh`` options for OpenSSH tools (rsync -e): same key, port and pinned host key."""
        t = self.target
        self.transport()  # pin the host key on first contact before OpenSSH is asked to trust it
        return ["ssh", "-p", str(t.port), "-i", str(t.key_file), "-l", t.user,
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "Compression=no",
                "-o", f"Ciphers={','.join(CIPHERS)}",
                "-o", f"ConnectTimeout={int(self.connect_timeout)}",
                "-o", f"ServerAliveInterval={int(self.keepalive)}", "-o", "ServerAliveCountMax=3",
                *self.host_keys.openssh_options(t.known_hosts_name)]

    def rsync_spec(self, remote: str) -> str:
        """``user@host:path`` for rsync (the path is protected from the remote shell by ``-s``)."""
        host = f"[{self.target.host}]" if ":" in self.target.host else self.target.host
        return f"{self.target.user}@{host}:{self.path(remote)}"

    def path(self, remote: str) -> str:
        """``remote`` resolved against the target's workdir when relative."""
        wd = self.target.workdir
        return posixpath.join(wd, remote) if wd and not posixpath.isabs(remote) else remote

    # -- commands -----------------------------------------------------------------------------
    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        full = remote_shell.env_exports(env or {}) + command
        if self.target.workdir:
            full = remote_shell.in_dir(self.target.workdir, full)
        try:
            chan = self.transport().open_session()
        except _DROPPED:
            # The command never started, so a fresh connection may safely run it.
            self._drop()
            chan = self.transport().open_session()
        try:
            result = self._exec(chan, full, command, timeout)
        finally:
            chan.close()
        if check and not result.ok:
            raise CommandFailed(command, result)
        return result

    def _exec(self, chan: paramiko.Channel, full: str, shown: str, timeout: float | None) -> CommandResult:
        out, err = bytearray(), bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            chan.exec_command(full)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed or not self.transport_alive():
                    raise ConnectionLost(f"connection to {self._where()} lost while running: {shown}")
                wait = 1.0 if deadline is None else deadline - time.monotonic()
                if wait <= 0 and timeout is not None:
                    raise CommandTimeout(shown, timeout, _result(-1, out, err))
                if chan.eof_received:
                    chan.status_event.wait(min(wait, 1.0))  # output done: only the exit status is due
                else:
                    select.select([chan], [], [], min(wait, 1.0))
        except _DROPPED as e:
            self._drop()
            raise ConnectionLost(f"connection to {self._where()} lost while running: {shown}") from e
        status = chan.recv_exit_status()
        if status == -1 and not self.transport_alive():
            # paramiko reports -1 when the channel closed without an exit status.
            self._drop()
            raise ConnectionLost(f"connection to {self._where()} lost while running: {shown}")
        return _result(status, out, err)

    def transport_alive(self) -> bool:
        t = self._client.get_transport() if self._client else None
        return bool(t and t.is_active())

    # -- files ----------------------------------------------------------------------------------
    def file_info(self, remote: str) -> FileInfo | None:
        try:
            st = self.sftp().stat(self.path(remote))
        except FileNotFoundError:
            return None
        except _DROPPED:
            self._drop()
            try:
                st = self.sftp().stat(self.path(remote))
            except FileNotFoundError:
                return None
        # paramiko's attributes are optional; an SFTP stat answer carries all three.
        return FileInfo(size=st.st_size or 0, mtime=float(st.st_mtime or 0), is_dir=stat.S_ISDIR(st.st_mode or 0))

    def put(self, local: Path, remote: str, *, progress: Progress | None = None,
            **options) -> TransferResult:
        """See ``transfer.upload`` for ``options`` (method, attempts, bwlimit)."""
        return transfer.upload(self, Path(local), remote, progress=progress, **options)

    def get(self, remote: str, local: Path, *, progress: Progress | None = None,
            **options) -> TransferResult:
        """See ``transfer.download`` for ``options``."""
        return transfer.download(self, remote, Path(local), progress=progress, **options)


def _result(code: int, out: bytes | bytearray, err: bytes | bytearray) -> CommandResult:
    return CommandResult(code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
