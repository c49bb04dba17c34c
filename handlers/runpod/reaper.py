"""Which pods are ralph's, whose they are, and killing the ones nobody runs any more.

Every pod ralph creates is named ``ralph-<owner>-t<task>-<random>``, where ``<owner>`` is a short
hash of this host and the task file's absolute path. Before the create call, the name goes into a
machine-wide ledger (``$RALPH_STATE_HOME``, else ``$XDG_STATE_HOME/ralph``, else
``~/.local/state/ralph``: ``pods.jsonl``) with the task file and its state folder; the pod id
follows the moment the API returns it.

The reaper lists the account's pods and, for each named ``ralph-…``:
* owner in the ledger, created on this host, its task file's run lock free → nobody runs it: an
  orphan of a crash. Terminated, and counted only once ``get_pod`` reads it gone.
* its run lock held (a live ``ralph run``, possibly this one) → spared; the current run's own
  file is spared anyway, since the run resumes its pods.
* owner unknown here (another machine, a lost ledger) → reported, never killed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ralph.handlers.runpod.api import APIError, AuthError, NotFound, RunPodAPI, TransientAPIError

from ralph.state import state_home

PREFIX = "ralph-"
_NAME = re.compile(r"ralph-([0-9a-f]{8})-")


def owner_id(task_file: Path, host: str | None = None) -> str:
    """Eight hex digits naming (this host, this task file)."""
    text = f"{host or socket.gethostname()}\0{Path(task_file).resolve()}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def owner_prefix(task_file: Path) -> str:
    """The name prefix every pod of this task file carries."""
    return f"{PREFIX}{owner_id(task_file)}-"


def new_pod_name(task_file: Path, task_number: int) -> str:
    return f"{owner_prefix(task_file)}t{task_number}-{secrets.token_hex(3)}"


def owner_of(name: str) -> str | None:
    match = _NAME.match(name)
    return match.group(1) if match else None


@dataclass
class LedgerEntry:
    name: str
    owner: str
    host: str
    task_file: str
    state_dir: str
    pod_id: str | None = None
    gone: bool = False


class Ledger:
    """Append-only JSON lines: one line per fact (named, got an id, gone), folded on reading.

    Lines are written with one ``write`` on an ``O_APPEND`` file and fsynced, so concurrent runs
    never interleave and a SIGKILL loses nothing already recorded.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_home() / "pods.jsonl"

    def _append(self, record: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def named(self, name: str, task_file: Path, state_dir: Path) -> None:
        """Before the create call: after a crash, the name is how the pod is found again."""
        self._append({"name": name, "owner": owner_of(name) or "", "host": socket.gethostname(),
                      "task_file": str(Path(task_file).resolve()), "state_dir": str(Path(state_dir).resolve()),
                      "at": time.time()})

    def created(self, name: str, pod_id: str) -> None:
        self._append({"name": name, "pod_id": pod_id, "at": time.time()})

    def gone(self, name: str) -> None:
        self._append({"name": name, "gone": True, "at": time.time()})

    def entries(self) -> dict[str, LedgerEntry]:
        found: dict[str, LedgerEntry] = {}
        if not self.path.exists():
            return found
        for line in self.path.read_text("utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line of a machine that lost power
            name = record.get("name")
            if "task_file" in record:
                found[name] = LedgerEntry(name, record["owner"], record["host"], record["task_file"],
                                          record["state_dir"])
            elif name in found:
                if record.get("pod_id"):
                    found[name].pod_id = record["pod_id"]
                if record.get("gone"):
                    found[name].gone = True
        return found

    def by_owner(self) -> dict[str, LedgerEntry]:
        """The latest entry of each owner: where its task file and run lock are."""
        return {e.owner: e for e in self.entries().values()}


def lock_held(lock: Path) -> bool:
    """Whether a live process holds this run lock (``ralph.state.RunLock``: an exclusive flock).

    flock belongs to an open file description, so the lock this very process holds through
    another descriptor counts as held too.
    """
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@dataclass
class Termination:
    pod_id: str
    gone: bool
    acknowledged: int  # terminate requests RunPod answered 2xx (or 404: already gone)
    errors: list[str]  # the other answers to terminate requests, in order
    seconds: float
    read_errors: list[str] = field(default_factory=list)  # reads of the pod that failed meanwhile

    @property
    def requests(self) -> int:
        return self.acknowledged + len(self.errors)

    def describe(self) -> str:
        """``3 terminate requests: 1 acknowledged, 2 failed (last: …)`` — never "acknowledged" for an error."""
        text = f"{self.requests} terminate request(s): {self.acknowledged} acknowledged"
        if self.errors:
            text += f", {len(self.errors)} failed (last: {self.errors[-1]})"
        if self.read_errors:
            text += f"; {len(self.read_errors)} read(s) of the pod failed (last: {self.read_errors[-1]})"
        return text


def terminate_and_confirm(api: RunPodAPI, pod_id: str, *, timeout_s: float, poll_s: float = 2.0,
                          first_resend_s: float = 5.0) -> Termination:
    """Ask RunPod to delete the pod until a read says it is gone, or ``timeout_s`` passes.

    An acknowledged terminate is not a done one (dstack#1551 kept billing): only ``get_pod`` →
    None counts. While the pod still reads, the request is sent again with backoff (5 s, 10 s,
    20 s… at most 60 s apart).
    """
    started = time.monotonic()
    deadline = started + timeout_s
    acknowledged = 0
    errors: list[str] = []
    read_errors: list[str] = []
    resend_s, next_send = first_resend_s, started
    while True:
        if time.monotonic() >= next_send:
            try:
                api.terminate_pod(pod_id)
                acknowledged += 1
            except AuthError:
                raise
            except NotFound:
                acknowledged += 1  # already gone; the read below confirms
            except APIError as exc:
                errors.append(str(exc))
            next_send = time.monotonic() + resend_s
            resend_s = min(60.0, resend_s * 2)
        try:
            if api.get_pod(pod_id) is None:
                return Termination(pod_id, True, acknowledged, errors, time.monotonic() - started, read_errors)
        except TransientAPIError as exc:
            read_errors.append(str(exc))
        if time.monotonic() >= deadline:
            return Termination(pod_id, False, acknowledged, errors, time.monotonic() - started, read_errors)
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


@dataclass
class ReapReport:
    reaped: list[str] = field(default_factory=list)  # "name (id): why"
    spared: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def reap(api: RunPodAPI, *, current_state_dir: Path | None, ledger: Ledger | None = None,
         confirm_s: float = 60.0, poll_s: float = 2.0,
         log: Callable[[str], None] = lambda message: None) -> ReapReport:
    """Terminate ralph's pods that no live run owns; see the module docstring for the rules."""
    ledger = ledger or Ledger()
    owners = ledger.by_owner()
    here = socket.gethostname()
    current = Path(current_state_dir).resolve() if current_state_dir else None
    report = ReapReport()
    for pod in api.list_pods():
        if not pod.name.startswith(PREFIX):
            continue
        label = f"{pod.name} ({pod.id})"
        entry = owners.get(owner_of(pod.name) or "")
        if entry is None or entry.host != here:
            report.unknown.append(f"{label}: not created from this machine's ledger; left alone")
            continue
        if current is not None and Path(entry.state_dir) == current:
            report.spared.append(f"{label}: this run's own pod")
            continue
        if lock_held(Path(entry.state_dir) / "lock"):
            report.spared.append(f"{label}: {entry.task_file} is being run")
            continue
        log(f"reaping {label}: {entry.task_file} is not being run")
        done = terminate_and_confirm(api, pod.id, timeout_s=confirm_s, poll_s=poll_s)
        if done.gone:
            ledger.gone(pod.name)
            report.reaped.append(f"{label}: orphan of {entry.task_file}, terminated and confirmed gone")
        else:
            report.failed.append(f"{label}: still there {done.seconds:.0f} s after {done.describe()}")
    return report
