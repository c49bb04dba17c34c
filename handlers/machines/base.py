"""What ralph needs from "a machine a task's commands run on".

A provider runs shell commands and moves files to and from that machine. ``LocalMachine``
(this machine) and ``SshMachine`` (any ``user@host:port``, including a RunPod pod once its
SSH endpoint is known) implement it; pod creation and termination live elsewhere.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

Progress = Callable[[int, int], None]
"""Called as ``progress(bytes_done, total)`` while a transfer runs."""


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class MachineError(Exception):
    """A provider could not do what was asked (connection, transfer, verification)."""


class CommandFailed(MachineError):
    def __init__(self, command: str, result: CommandResult):
        self.command = command
        self.result = result
        tail = (result.stderr or result.stdout).strip()[-2000:]
        super().__init__(f"command exited {result.exit_code}: {command}\n{tail}")


class CommandTimeout(MachineError):
    def __init__(self, command: str, timeout: float, partial: CommandResult):
        self.command = command
        self.timeout = timeout
        self.partial = partial
        super().__init__(f"command still running after {timeout:g}s: {command}")


class TransferFailed(MachineError):
    """A transfer ended but the copy does not match the source (size or sha256)."""


@dataclass(frozen=True)
class FileInfo:
    size: int
    mtime: float
    is_dir: bool


@dataclass(frozen=True)
class TransferResult:
    source: str
    destination: str
    size: int
    sha256: str
    bytes_sent: int
    """Payload bytes that crossed the link in this call (0 when skipped, the tail when resumed)."""
    resumed_from: int
    """Bytes already present at the destination from an interrupted earlier transfer."""
    skipped: bool
    """The destination already held the same size and sha256; nothing was sent."""
    method: str
    seconds: float


class Machine(abc.ABC):
    """A machine: commands run in its working directory, relative paths resolve there."""

    @abc.abstractmethod
    def run(self, command: str, *, check: bool = True, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        """Run ``command`` in a POSIX shell; quote values with ``remote_shell``.

        ``check`` raises ``CommandFailed`` on a non-zero exit; ``timeout`` raises ``CommandTimeout``.
        """

    @abc.abstractmethod
    def put(self, local: Path, remote: str, *, progress: Progress | None = None) -> TransferResult:
        """Copy a local file to ``remote``, resuming, verifying and skipping what is already there."""

    @abc.abstractmethod
    def get(self, remote: str, local: Path, *, progress: Progress | None = None) -> TransferResult:
        """Copy ``remote`` to a local file, with the same guarantees as ``put``."""

    @abc.abstractmethod
    def file_info(self, remote: str) -> FileInfo | None:
        """Size, mtime and kind of ``remote``, or None when it does not exist."""

    def exists(self, remote: str) -> bool:
        return self.file_info(remote) is not None

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the provider must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
