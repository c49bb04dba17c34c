"""Which handler does each task, with which parameters — decided before anything runs.

``ralph check``, ``ralph run --dry-run`` and ``ralph run`` share this step, so a problem
that would stop a run is found without touching any file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config, handler_name, load_config
from .errors import RalphError
from .facts import Fact
from .handler import Handler, Param, Problem
from .model import Task, TaskFile
from .parser import parse_file, task_yaml
from .registry import Registry


@dataclass
class Step:
    task: Task
    handler_name: str | None
    handler: Handler | None = None
    params: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Plan:
    file: TaskFile
    config: Config
    steps: list[Step]

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.steps for p in s.problems]

    def step(self, number: int) -> Step:
        return next(s for s in self.steps if s.task.number == number)


def make_plan(path: Path, *, deep: bool = True) -> Plan:
    """Parse ``path`` and resolve every task's handler and parameters.

    ``deep`` also asks each handler for the problems it can find statically (``ralph check``).
    Raises ``ParseError``/``RalphError`` for a file or config that cannot be read at all.
    """
    file, _ = parse_file(path)
    config = load_config(path)
    registry = Registry(config.handlers, config.path.parent if config.path else None)
    steps: list[Step] = []
    for task in file.tasks:
        name = handler_name(task, config)
        step = Step(task, name)
        steps.append(step)
        problems = step.problems
        if name is None:
            problems.append(
                Problem(task.line, f"{task.label} has no handler: add '**Handler**: name' or map it in ralph.yaml")
            )
            continue
        try:
            step.handler = registry.load(name)()
        except RalphError as error:
            problems.append(Problem(task.fields["handler"].line if task.handler else task.line, error.message))
            continue
        try:
            step.params, param_problems = _params(step.handler, task, config)
        except RalphError as error:
            problems.append(Problem(error.line or task.line, error.message))
            continue
        problems.extend(param_problems)
        if deep and not param_problems:
            problems.extend(step.handler.validate(file, task, step.params))
    if deep:
        for step, problem in unmet_needs(steps):
            step.problems.append(problem)
    return Plan(file, config, steps)


def unmet_needs(steps: Iterable[Step]) -> list[tuple[Step, Problem]]:
    """Each fact a task needs that no earlier task provides (and no parameter stands in for)."""
    provided: set[type[Fact]] = set()
    unmet: list[tuple[Step, Problem]] = []
    for step in steps:
        if step.handler is None:
            continue
        for need in step.handler.needs:
            if need.fact not in provided and not need.waived(step.params):
                message = (f"task {step.task.number} ({step.handler.name}) needs {need.fact.what}: "
                           f"no earlier task provides one{need.instead()}")
                unmet.append((step, Problem(step.task.line, message)))
        provided.update(step.handler.provides)
    return unmet


def missing_env(steps: Iterable[Step], environ: Mapping[str, str] = os.environ) -> list[Problem]:
    """One error per environment variable the steps' handlers need and that is not set (empty
    counts as not set), at the first task that needs it.  The value itself is never shown."""
    problems: list[Problem] = []
    reported: set[str] = set()
    for step in steps:
        if step.handler is None:
            continue
        for variable, what in step.handler.needs_env.items():
            if variable not in reported and not environ.get(variable, "").strip():
                reported.add(variable)
                where = f"task {step.task.number} ({step.handler.name})"
                problems.append(Problem(step.task.line, f"{where}: set {variable} ({what})"))
    return problems


def _params(handler: Handler, task: Task, config: Config) -> tuple[dict[str, Any], list[Problem]]:
    """Defaults, then ralph.yaml's per-handler params, its per-task params, then the task's yaml block."""
    values: dict[str, Any] = {k: p.default for k, p in handler.params.items() if not p.required}
    where: dict[str, int] = {}
    from_config: dict[str, int] = {}  # parameters ralph.yaml set, by their line there
    values.update(config.params.get(handler.name, {}))
    for key in config.params.get(handler.name, {}):
        from_config[key] = config.param_lines.get(handler.name, {}).get(key, 1)
    entry = config.for_task(task.number, task.title)
    if entry:
        values.update(entry.params)
        from_config.update({key: entry.param_lines.get(key, entry.line) for key in entry.params})
    block = task_yaml(task)
    if block:
        data, where = block
        values.update(data)
        for key in data:
            from_config.pop(key, None)
    config_path = os.path.relpath(config.path) if config.path else None
    problems = []
    for key, value in values.items():
        spec = handler.params.get(key)
        line, path = (from_config[key], config_path) if key in from_config else (where.get(key, task.line), None)
        if spec is None:
            known = ", ".join(sorted(handler.params)) or "none"
            problems.append(Problem(line, f"{task.label}: unknown parameter {key!r} for {handler.name} (known: "
                                          f"{known})",
                                    path=path))
        elif message := _type_problem(key, value, spec):
            problems.append(Problem(line, f"{task.label}: {message}", path=path))
    for key, spec in handler.params.items():
        if spec.required and key not in values:
            problems.append(Problem(task.line, f"{task.label}: {handler.name} needs parameter {key!r} ({spec.help})"))
    return values, problems


def _type_problem(key: str, value: Any, spec: Param) -> str | None:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        return f"parameter {key!r} must be {names}, not {type(value).__name__} ({value!r})"
    if spec.choices is not None and value not in spec.choices:
        return f"parameter {key!r} must be one of {', '.join(map(str, spec.choices))}, not {value!r}"
    return None
