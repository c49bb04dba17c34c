"""Reaching the pod a task holds, and keeping its dead-man's switch fed while ralph uses it.

``runpod.create``, ``machine.ssh`` and ``machine.local`` publish the fact ``MachineHandle``; later
tasks call ``connect(ctx)`` for a provider to it (an ``SshMachine``, key and host key pinned in
ralph's state folder, or a ``LocalMachine``). The first connection to a pod in this process also
starts its heartbeat: a daemon thread
that rewrites the switch's heartbeat file on the pod every few seconds, over its own SSH
connection. One per pod per process; it dies with the process, which is the point: a ralph that
is killed stops feeding the switch and the pod deletes itself ``heartbeat_timeout_s`` later.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ralph.handlers.facts import MachineHandle
from ralph.handlers.machines.heartbeat import heartbeat_command

from ralph.context import Context
from ralph.handler import TaskBlocked

if TYPE_CHECKING:  # paramiko and cryptography load when a pod is used, not when a handler is
    from ralph.handlers.machines.base import Machine


def provider(handle: MachineHandle, *, connect_timeout: float = 20.0, attempts: int = 3) -> Machine:
    """A fresh provider for the machine: SSH with the host key pinned under the machine's id on
    first contact, or subprocesses in the workspace for this machine."""
    if handle.kind == "local":
        from ralph.handlers.machines.local import LocalMachine

        return LocalMachine(Path(handle.workspace), hash_cache=Path(handle.known_hosts).with_name("hashes.json"))
    from ralph.handlers.machines.ssh import SshMachine

    return SshMachine(handle.target(), known_hosts=Path(handle.known_hosts), connect_timeout=connect_timeout,
                       connect_attempts=attempts)


def ensure_client_key(directory: Path) -> Path:
    """ralph's own ed25519 key for its pods (0600), made on first use; the public half goes to the
    pod as PUBLIC_KEY, which RunPod images add to root's authorized_keys."""
    private = directory / "id_ed25519"
    public = directory / "id_ed25519.pub"
    if private.exists() and public.exists():
        return private
    directory.mkdir(parents=True, exist_ok=True)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    body = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(body)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public.write_bytes(line + b" ralph\n")
    return private


def public_key(private: Path) -> str:
    return private.with_name(private.name + ".pub").read_text().strip()


class Heartbeat(threading.Thread):
    """Rewrites the pod's heartbeat file every ``interval`` seconds until stopped or the process ends.

    Failures (a dropped connection, a busy pod) are counted and retried at the next beat: the
    switch tolerates ``heartbeat_timeout_s`` of silence, several beats' worth.
    """

    def __init__(self, handle: MachineHandle) -> None:
        super().__init__(name=f"ralph-heartbeat-{handle.id}", daemon=True)
        self.handle = handle
        self.command = heartbeat_command(handle.state_base, handle.id)
        self.beats = 0
        self.failures = 0
        self.last_error = ""
        self.last_beat: float | None = None  # time.monotonic() of the last beat that landed
        self._stop_event = threading.Event()
        self._provider = provider(handle, connect_timeout=max(2.0, handle.heartbeat_interval_s), attempts=1)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.beat()
                self._stop_event.wait(self.handle.heartbeat_interval_s)
        finally:
            self._provider.close()

    def beat(self) -> None:
        try:
            self._provider.run(self.command, timeout=max(5.0, self.handle.heartbeat_interval_s * 2))
        except Exception as exc:  # noqa: BLE001 (whatever went wrong, the next beat tries again)
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._provider.close()
        else:
            self.beats += 1
            self.last_beat = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=10)


@dataclass
class _Session:
    handle: MachineHandle
    provider: Machine
    heartbeat: Heartbeat | None  # only pods with a dead-man's switch are fed


_lock = threading.Lock()
_sessions: dict[str, _Session] = {}


def attach(handle: MachineHandle) -> Machine:
    """The process's provider for this pod, its heartbeat started if it was not."""
    with _lock:
        session = _sessions.get(handle.id)
        if session is None or session.handle != handle:
            if session is not None:
                _close(session)
            heartbeat = Heartbeat(handle) if handle.kind == "runpod" else None
            session = _sessions[handle.id] = _Session(handle, provider(handle), heartbeat)
            if heartbeat is not None:
                heartbeat.start()
        return session.provider


def heartbeat_of(pod_id: str) -> Heartbeat | None:
    with _lock:
        session = _sessions.get(pod_id)
        return session.heartbeat if session else None


def detach(pod_id: str) -> None:
    """Stop feeding the pod and close its connections (before terminating it, or at run end)."""
    with _lock:
        session = _sessions.pop(pod_id, None)
    if session is not None:
        _close(session)


def detach_all(state_dir: Path | None = None) -> None:
    """Detach every pod pinned in ``state_dir`` (a run's state folder), or all."""
    with _lock:
        ids = [pid for pid, s in _sessions.items()
               if state_dir is None or Path(s.handle.known_hosts).resolve().is_relative_to(Path(state_dir).resolve())]
    for pod_id in ids:
        detach(pod_id)


def _close(session: _Session) -> None:
    if session.heartbeat is not None:
        session.heartbeat.stop()
    session.provider.close()


def held(ctx: Context) -> MachineHandle | None:
    """The machine this run holds, if it can be reached (a pod being created has no host yet)."""
    handle = ctx.fact(MachineHandle)
    return handle if handle is not None and handle.host else None


def connect(ctx: Context) -> tuple[MachineHandle, Machine]:
    """The pod this run holds and a provider to it; TaskBlocked when no task created one."""
    handle = held(ctx)
    if handle is None:
        raise TaskBlocked(
            "no machine for this file: run the task that creates or names one first "
            "(runpod.create, machine.ssh or machine.local)"
        )
    return handle, attach(handle)

