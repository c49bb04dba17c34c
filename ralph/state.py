"""What ralph remembers between runs, in ``.ralph/<task file>/`` beside the task file.

* ``state.json`` — per task: the handler's own memory (a pod id, a prompt id), its outcome,
  the fingerprint of its text when it was done; and the resources tasks share (a pod), with
  which task holds them and which tasks used them.  Rewritten atomically on every change,
  so what a handler saves survives a SIGKILL the instant ``save`` returns.
* ``events.jsonl`` — an append-only log of what happened, one JSON object a line.
* ``lock`` — held while a run goes on; the OS releases it when the process dies.

What is not one file's but this machine's (the pod ledger, measured speeds) lives in
``state_home()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import EnvironmentFailure, LockedError
from .secrets import redact, redact_data, shows_secret
from .textfile import write_atomically


def now() -> str:
    """The time in UTC, as people read it in task files and logs."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def state_home() -> Path:
    """ralph's machine-wide state folder: ``$RALPH_STATE_HOME``, else ``$XDG_STATE_HOME/ralph``,
    else ``~/.local/state/ralph``."""
    if os.environ.get("RALPH_STATE_HOME"):
        return Path(os.environ["RALPH_STATE_HOME"])
    if os.environ.get("XDG_STATE_HOME"):
        return Path(os.environ["XDG_STATE_HOME"]) / "ralph"
    return Path.home() / ".local" / "state" / "ralph"


def unwritable(path: Path, error: OSError, kept: str) -> EnvironmentFailure:
    """The one-line report of a file ralph could not write, named as the task file's folder sees it."""
    shown = Path(*path.parts[-3:]) if ".ralph" in path.parts[-3:-2] else Path(path.name)
    return EnvironmentFailure(f"cannot write {shown}: {error.strerror or error}; {kept}")


def _compact(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def state_dir_for(task_file: Path) -> Path:
    """The state folder of the file itself: every link to it shares the same one."""
    real = task_file.resolve()
    return real.parent / ".ralph" / real.stem


class RunState:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"
        self.data: dict[str, Any] = {"version": 1, "tasks": {}, "resources": {}}
        if self.path.exists():
            self.data = json.loads(self.path.read_text("utf-8"))
        self._encoded: dict[str, str] = {}  # each task's '"number": record' as JSON, as last saved

    def save(self, task: int | None = None) -> None:
        """Write the state to disk; ``task``: the one task record that changed since the last
        save, so only its JSON is made again (a run of N tasks saves O(N) times)."""
        if task is None:
            self._encoded.clear()
        else:
            self._encoded.pop(str(task), None)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, self._json().encode("utf-8"))
        except OSError as error:
            kept = "it keeps its last complete version" if self.path.exists() else "nothing was saved"
            raise unwritable(self.path, error, kept) from None

    def _json(self) -> str:
        """``data`` as compact JSON (the encoder that indents is pure Python), keys sorted,
        with no secret in it."""
        tasks = self.data["tasks"]
        for key in tasks.keys() - self._encoded.keys():
            self._encoded[key] = f"{_compact(key)}: {_compact(tasks[key])}"
        records = "{" + ", ".join([self._encoded[key] for key in sorted(tasks)]) + "}"
        fields = (f"{_compact(k)}: {records if k == 'tasks' else _compact(v)}" for k, v in sorted(self.data.items()))
        body = "{" + ", ".join(fields) + "}"
        if shows_secret(body):
            self._encoded.clear()
            body = _compact(redact_data(self.data))
        return body

    def task(self, number: int) -> dict[str, Any]:
        record: dict[str, Any] = self.data["tasks"].setdefault(str(number), {})
        return record

    def records(self) -> dict[int, TaskRecord]:
        return {int(number): TaskRecord.of(entry) for number, entry in self.data["tasks"].items()}

    def memory(self, number: int) -> TaskMemory:
        return TaskMemory(self, number)

    @property
    def resources(self) -> Resources:
        return Resources(self)


@dataclass(frozen=True)
class TaskRecord:
    """What the state holds of one task: its last outcome and the Result ``run`` reported."""

    status: str | None = None
    seconds: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None  # summary, data, cost_usd, files

    @classmethod
    def of(cls, entry: dict[str, Any]) -> TaskRecord:
        return cls(entry.get("status"), entry.get("seconds"), entry.get("error"), entry.get("result"))


class TaskMemory(MutableMapping[str, Any]):
    """A handler's own persistent memory: every assignment is on disk when it returns."""

    def __init__(self, state: RunState, number: int) -> None:
        self._state = state
        self._number = number
        self._data: dict[str, Any] = state.task(number).setdefault("memory", {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._state.save(self._number)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._state.save(self._number)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class Resources:
    """Things tasks share, such as a pod: who holds each, and who used it.

    When a clean-up task releases a resource, the tasks that held or used it are no longer
    done in a useful sense (their pod is gone): the runner redoes them if work remains.
    """

    def __init__(self, state: RunState) -> None:
        self._state = state
        self._data: dict[str, Any] = state.data["resources"]

    def hold(self, name: str, value: Any, *, task: int) -> None:
        self._data[name] = {"value": value, "owner": task, "generation": uuid.uuid4().hex, "users": [task]}
        self._state.save(task)

    def get(self, name: str, *, released: bool = False) -> Any | None:
        """The resource's value; one since released only when ``released`` is asked for."""
        entry = self._data.get(name)
        return None if entry is None or (entry.get("released") and not released) else entry["value"]

    def use(self, name: str, *, task: int) -> Any | None:
        """The resource's value, recording that ``task`` depends on it."""
        entry = self._data.get(name)
        if entry is None or entry.get("released"):
            return None
        if task not in entry["users"]:
            entry["users"].append(task)
            self._state.save(task)
        return entry["value"]

    def release(self, name: str) -> None:
        entry = self._data.get(name)
        if entry is not None and not entry.get("released"):
            entry["released"] = now()
            self._state.save()

    def held(self) -> list[tuple[Any, int]]:
        """(value, task that holds it) of each resource not released."""
        return [(e["value"], e["owner"]) for e in list(self._data.values()) if not e.get("released")]

    def released_users(self) -> set[int]:
        """Tasks that held or used a resource that has since been released."""
        return {user for entry in self._data.values() if entry.get("released") for user in entry["users"]}


class EventLog:
    """Whole lines or nothing: a line the disk had no room for is cut back off the log."""

    def __init__(self, directory: Path, run_id: str) -> None:
        self.path = directory / "events.jsonl"
        self.run_id = run_id
        self.failed = False  # reported once; later lines are dropped so clean-up still runs
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise unwritable(self.path, error, "nothing was changed") from None

    def write(self, event: str, **fields: Any) -> None:
        if self.failed:
            return
        record = {"time": now(), "run": self.run_id, "event": event, **fields}
        line = (redact(json.dumps(record, ensure_ascii=False, default=str)) + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            # Written straight through, so a crash of ralph loses nothing; not fsynced: a log
            # is not worth a disk round trip per line (state.json and the task file are).
            while line:
                line = line[os.write(self._fd, line) :]
        except OSError as error:
            os.ftruncate(self._fd, size)
            self.failed = True
            raise unwritable(self.path, error, "it keeps every whole line written before") from None

    def close(self) -> None:
        os.close(self._fd)


class RunLock:
    """One run per task file: an exclusive ``flock`` that dies with the process holding it.

    Two locks: the task file's own (its inode, which every hard link shares; ralph holds it
    open for the whole run, so a second name of the file stays locked after ralph's first
    write replaces the file) and ``lock`` in the state folder, which says who holds it.
    Symbolic links lead to the same state folder, so to the same ``lock``.
    """

    def __init__(self, directory: Path, task_file: Path) -> None:
        self.path = directory / "lock"
        self.task_file = task_file
        self._fd: int | None = None
        self._file_fd: int | None = None

    def acquire(self) -> None:
        file_fd = self._lock_task_file()
        try:
            self._acquire_state_lock()
        except BaseException:
            if file_fd is not None:
                os.close(file_fd)
            raise
        self._file_fd = file_fd

    def _lock_task_file(self) -> int | None:
        try:
            fd = os.open(self.task_file, os.O_RDONLY)
        except FileNotFoundError:
            return None  # nothing to share with another name (the state lock still holds)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"already being run by {self._holder()}", self.task_file) from None
        return fd

    def _holder(self) -> str:
        """Who runs the file: the state lock's holder, else a run through another name of it."""
        elsewhere = "a ralph run through another name of this file (a hard link)"
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return elsewhere
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return elsewhere  # this name's lock is free: its content is an earlier run's
        except BlockingIOError:
            return _describe(os.read(fd, 4096).decode("utf-8", "replace").strip())
        finally:
            os.close(fd)

    def _acquire_state_lock(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise unwritable(self.path, error, "nothing was changed") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip()
            os.close(fd)
            raise LockedError(f"already being run by {_describe(holder)} (lock {self.path})", self.task_file) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": now(), "argv": sys.argv[1:]}
        with contextlib.suppress(OSError):  # who holds the lock is a courtesy; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self) -> None:
        for fd in (self._fd, self._file_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._file_fd = None


def lock_holder(directory: Path) -> dict[str, Any] | None:
    """Who runs the file now (pid, host, since, argv), read without taking the lock; None when no
    run holds it."""
    try:
        fd = os.open(directory / "lock", os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        try:
            info = json.loads(os.read(fd, 4096).decode("utf-8", "replace"))
        except ValueError:
            info = None
        return info if isinstance(info, dict) else {}
    finally:
        os.close(fd)


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "another ralph process"
