"""What a handler sees while it runs a task."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .measures import Measures
from .model import Task, TaskFile
from .paths import display_path
from .state import EventLog, Resources, TaskMemory


class ProgressBar(Protocol):
    def update(self, completed: float, total: float | None = None, description: str | None = None) -> None: ...


class Reporter(Protocol):
    """Where the runner tells people what happens (the terminal, or nothing in tests)."""

    def log(self, task: Task, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def progress(self, description: str, total: float | None) -> AbstractContextManager[ProgressBar]: ...


@dataclass
class RunInfo:
    """What a handler's before_run/after_run hooks see: the run, not one task."""

    file: TaskFile
    resources: Resources
    workdir: Path
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


@dataclass
class Context:
    file: TaskFile
    task: Task
    params: dict[str, Any]
    memory: TaskMemory  # the handler's own memory, on disk as soon as it is assigned
    resources: Resources
    workdir: Path  # the folder of the task file: relative paths are relative to it
    state_dir: Path
    run_id: str
    reporter: Reporter
    events: EventLog
    results: Mapping[int, dict[str, Any]] = field(default_factory=dict)  # earlier tasks' recorded Results

    def result_of(self, key: str) -> Any | None:
        """``data[key]`` from the latest earlier task whose result has it (e.g. the images a
        ComfyUI task produced, for the task that evaluates them)."""
        for number in sorted((n for n in self.results if n < self.task.number), reverse=True):
            data = self.results[number].get("data") or {}
            if key in data:
                return data[key]
        return None

    def log(self, message: str) -> None:
        self.events.write("log", task=self.task.number, message=message)
        self.reporter.log(self.task, message)

    def progress(self, description: str, total: float | None = None) -> AbstractContextManager[ProgressBar]:
        """A progress bar for a long step: ``with ctx.progress("upload", size) as bar: bar.update(n)``."""
        return self.reporter.progress(description, total)

    def hold(self, name: str, value: Any) -> None:
        """Record a resource this task created (a pod) for later tasks, before any long wait."""
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
