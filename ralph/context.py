"""What a handler sees while it runs a task."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .facts import Fact
from .measures import Measures
from .model import Task, TaskFile
from .paths import display_path
from .state import EventLog, Resources, TaskMemory, TaskRecord

F = TypeVar("F", bound=Fact)


class ProgressBar(Protocol):
    def update(self, completed: float, total: float | None = None, description: str | None = None) -> None: ...


class Reporter(Protocol):
    """Where the runner tells people what happens (the terminal, or nothing in tests)."""

    def log(self, task: Task, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, description: str, total: float | None,
                 unit: str = "bytes") -> AbstractContextManager[ProgressBar]: ...


@dataclass
class RunInfo:
    """What a handler's before_run/after_run hooks see: the run, not one task."""

    file: TaskFile
    resources: Resources
    workdir: Path  # the folder of the task file: relative paths are relative to it
    state_dir: Path
    run_id: str
    reporter: Reporter
    events: EventLog


@dataclass(frozen=True)
class EstimateContext:
    """What a handler's ``estimate`` sees: the file, where it lives, and this machine's measures."""

    file: TaskFile
    workdir: Path  # the folder of the task file: relative paths are relative to it
    state_dir: Path  # read only: an estimate writes nothing
    measures: Measures


@dataclass(kw_only=True)
class Context(RunInfo):
    """What a handler's ``run`` and checks see: the run, and the task at hand."""

    task: Task
    params: dict[str, Any]
    memory: TaskMemory  # the handler's own memory, on disk as soon as it is assigned
    records: Mapping[int, TaskRecord] = field(default_factory=dict)  # what the state holds of each task
    waiting: threading.Event | None = None  # set once this task reports progress (ralph/warmup.py)

    def publish(self, fact: Fact) -> None:
        """Hand ``fact`` to the tasks after this one (it replaces one of its kind), on disk at once."""
        self.resources.hold(fact.key, fact.record(), task=self.task.number)

    def fact(self, kind: type[F], *, even_released: bool = False) -> F | None:
        """The fact of this kind an earlier task published, or None; this task then depends on it
        (redone if it is released).  ``even_released``: also one since released, for the record
        (the machine a session used)."""
        value = self.resources.get(kind.key, released=True) if even_released else self.resources.use(
            kind.key, task=self.task.number)
        return kind.from_record(value)

    def withdraw(self, kind: type[Fact]) -> None:
        """The fact of this kind no longer holds (the machine is gone): tasks that used it are redone."""
        self.resources.release(kind.key)

    def log(self, message: str) -> None:
        self.events.write("log", task=self.task.number, message=message)
        self.reporter.log(self.task, message)

    @contextmanager
    def progress(self, description: str, total: float | None = None, unit: str = "bytes") -> Iterator[ProgressBar]:
        """A progress bar for a long step: ``with ctx.progress("upload", size) as bar: bar.update(n)``;
        ``unit`` other than bytes ("steps") is shown as done/total. Its first update tells the run
        that this task is waiting on a machine: later tasks' slow imports begin (ralph/warmup.py)."""
        with self.reporter.progress(description, total, unit) as bar:
            yield bar if self.waiting is None else _Waiting(bar, self.waiting)

    def hold(self, name: str, value: Any) -> None:
        """Record a resource this task created for later tasks, before any long wait (a pod being
        created, before it is a machine anyone can reach; a fact is published with ``publish``)."""
        self.resources.hold(name, value, task=self.task.number)

    def use(self, name: str) -> Any | None:
        """A resource an earlier task created, or None; this task is then redone if it goes."""
        return self.resources.use(name, task=self.task.number)

    def release(self, name: str) -> None:
        self.resources.release(name)

    def path(self, relative: str) -> Path:
        """A path as people write it (and as ``display_path`` writes it): relative to the task
        file's folder, ``~/…``, or absolute."""
        return (self.workdir / Path(relative).expanduser()).resolve()

    def display_path(self, path: str | os.PathLike[str]) -> str:
        """``path`` as ralph writes it for people (task file, documents, messages): relative to
        the task file's folder, or ``~/…`` under the home folder, else as given."""
        return display_path(path, self.workdir)


@dataclass
class _Waiting:
    """A progress bar whose updates say that the task is waiting on a machine."""

    bar: ProgressBar
    waiting: threading.Event

    def update(self, completed: float, total: float | None = None, description: str | None = None) -> None:
        if not self.waiting.is_set():
            self.waiting.set()
        self.bar.update(completed, total, description)
