"""Processes ralph starts, which die with it.

Each command (a shell step, a criterion's command, rsync and the ssh it starts) runs as the
leader of its own process group, so a timeout or Ctrl-C kills the command *and* whatever it
started.  Two things make the groups die with ralph even when ralph is SIGKILLed:

* on Linux the leader gets a parent-death signal (SIGKILL when the thread that started it
  ends: only the direct child, the kernel clears it for grandchildren);
* a small warden process, started with the first child, holds a pipe from ralph: when the
  pipe closes (ralph exited, however it died) it kills every group ralph started.  It drops a
  group once the group is empty, so an unrelated process that later gets its number is safe.

A Ctrl-C that comes while a child starts (before any caller holds it to kill) is raised once
it is held: the runner's signal handler goes through ``raise_when_safe``.

A grandchild that leaves its group on purpose (``setsid nohup server &``: a service meant to
outlive the run) is not ralph's to kill.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

_WARDEN = r"""
import os, select, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups, pending = set(), b""
while True:
    if select.select([0], [], [], 1.0)[0]:
        data = os.read(0, 4096)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            (groups.add if line[:1] == b"+" else groups.discard)(int(line[1:]))
    for group in list(groups):
        try:
            os.killpg(group, 0)
        except OSError:
            groups.discard(group)  # empty: its number may be given to another process
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""

_warden: subprocess.Popen[bytes] | None = None
_warden_lock = threading.Lock()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when ralph (the starting thread) dies."""
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _tell_warden(message: str) -> None:
    """``message`` to the warden, started first if need be (``""``: only start it).  What is
    written stays readable in the pipe after ralph dies, so a group told of is never missed."""
    global _warden
    with _warden_lock:
        if _warden is None or _warden.poll() is not None:
            _warden = subprocess.Popen(
                [sys.executable, "-I", "-c", _WARDEN],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C to ralph's terminal group does not reach it
            )
        assert _warden.stdin is not None
        if not message:
            return
        try:
            _warden.stdin.write(message.encode() + b"\n")
            _warden.stdin.flush()
        except BrokenPipeError:
            _warden = None


_starting = 0  # > 0 while the main thread starts a child that no caller holds yet
_deferred: BaseException | None = None  # what a signal handler raised meanwhile


def raise_when_safe(error: BaseException) -> None:
    """For a signal handler (Python runs them in the main thread): raise ``error`` now, or, while
    the main thread is starting a child (a Ctrl-C there would leave it running, held by no one),
    as soon as the child is held, so that leaving kills it."""
    global _deferred
    if _starting:
        _deferred = error
        return
    raise error


@contextmanager
def _holding_signals() -> Iterator[None]:
    global _starting
    main = threading.current_thread() is threading.main_thread()
    _starting += main
    try:
        yield
    finally:
        _starting -= main


def _raise_deferred() -> None:
    global _deferred
    if _deferred is not None and not _starting and threading.current_thread() is threading.main_thread():
        error, _deferred = _deferred, None
        raise error


def start(argv: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` in a new process group that dies with ralph."""
    with _holding_signals():
        _tell_warden("")  # up before the child: once it exists, telling the warden is one write
        process = subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, **options)
        _tell_warden(f"+{process.pid}")
    try:
        _raise_deferred()
    except BaseException:  # a Ctrl-C came while it started: it must not outlive this
        kill(process)
        process.wait()
        raise
    return process


def kill(process: subprocess.Popen[Any]) -> None:
    """SIGKILL the process's whole group: the command and everything it started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


@contextmanager
def running(argv: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """``start``, and on leaving by an exception (a timeout, Ctrl-C) kill the whole group."""
    with _holding_signals():
        process = start(argv, **options)
    with process:  # its exit waits for the process: the group must be killed before it
        try:
            _raise_deferred()  # a Ctrl-C that came while it started
            yield process
        except BaseException:
            kill(process)
            raise


def run(argv: list[str], *, timeout: float | None = None, stdin: int | IO[Any] | None = subprocess.DEVNULL,
        **options: Any) -> subprocess.CompletedProcess[bytes]:
    """Run to the end, output captured; past ``timeout`` the whole group is killed and
    ``subprocess.TimeoutExpired`` raised (a background child holding the pipes cannot hang it)."""
    with running(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(process)
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(argv, timeout or 0, out, err) from None
    return subprocess.CompletedProcess(argv, process.returncode, out, err)
