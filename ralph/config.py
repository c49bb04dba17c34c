"""``ralph.yaml``: the project's configuration, beside the task files.

It lets files written with no ralph-specific lines run unchanged, by mapping task titles
(or numbers) to handlers and giving parameters::

    handlers:                 # project-local handlers, imported from this folder
      greet: my_handlers:Greet
    params:                   # defaults for every task that uses a handler
      runpod.create: {gpu_types: [NVIDIA RTX A5000]}
    tasks:
      "Créer pod RunPod":     # a task title, as written after its number
        handler: runpod.create
        params: {cloud_type: SECURE}
    max_cost_usd: 2.50        # a run stops (and its clean-up runs) before its machine costs more
    default_handler: agent    # the handler of a task with no **Handler** line and no mapping
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RalphError
from .model import Task
from .parser import normalise

CONFIG_NAME = "ralph.yaml"
KEYS = "handlers, params, tasks, max_cost_usd or default_handler"


@dataclass
class TaskConfig:
    handler: str | None
    params: dict[str, Any]
    line: int
    param_lines: dict[str, int] = field(default_factory=dict)  # each param's line in ralph.yaml


@dataclass
class Config:
    path: Path | None = None
    handlers: dict[str, str] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    param_lines: dict[str, dict[str, int]] = field(default_factory=dict)  # handler → param → line in ralph.yaml
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # by normalised title or number
    max_cost_usd: float | None = None
    default_handler: str | None = None

    def for_task(self, number: int, title: str) -> TaskConfig | None:
        return self.tasks.get(str(number)) or self.tasks.get(normalise(title))


def handler_name(task: Task, config: Config) -> str | None:
    """The task's own ``**Handler**`` line, else ralph.yaml's mapping of its title or number,
    else its ``default_handler``."""
    if task.handler:
        return task.handler
    entry = config.for_task(task.number, task.title)
    return (entry.handler if entry else None) or config.default_handler


def load_config(task_file: Path) -> Config:
    path = task_file.resolve().parent / CONFIG_NAME
    if not path.exists():
        return Config()
    import yaml

    from . import yamlnodes

    def fail(message: str, line: int | None = None) -> RalphError:
        return RalphError(message, os.path.relpath(path), line)

    try:
        return _read_config(path, yamlnodes.compose(path.read_text("utf-8")), fail)
    except yaml.YAMLError as error:  # invalid YAML, or a tag no safe loader builds (!!python/...)
        mark = getattr(error, "problem_mark", None)
        raise fail(f"invalid YAML: {getattr(error, 'problem', None) or error}",
                   mark.line + 1 if mark else None) from None
    except RecursionError:
        raise fail("invalid YAML: nested too deeply") from None
    except UnicodeDecodeError:
        raise fail("not valid UTF-8") from None
    except OSError as error:
        raise fail(f"cannot read: {error.strerror}") from None


def _read_config(path: Path, root: Any, fail: Callable[..., RalphError]) -> Config:
    import yaml

    if root is None:
        return Config(path)
    if not isinstance(root, yaml.MappingNode):
        raise fail(f"expected a mapping with keys {KEYS}", root.start_mark.line + 1)
    config = Config(path)
    for key_node, value_node in root.value:
        key = key_node.value
        value = _construct(value_node)
        line = key_node.start_mark.line + 1
        if key == "handlers":
            if not isinstance(value, dict) or not all(isinstance(v, str) and ":" in v for v in value.values()):
                raise fail("handlers: expected 'name: module:Class' entries", line)
            config.handlers = value
        elif key == "params":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise fail("params: expected 'handler.name: {param: value}' entries", line)
            config.params = value
            config.param_lines = {name: _key_lines(node) for name, node in _children(value_node).items()}
        elif key == "tasks":
            if not isinstance(value_node, yaml.MappingNode):
                raise fail("tasks: expected 'task title: {handler: name, params: {...}}' entries", line)
            for title_node, entry_node in value_node.value:
                entry = _construct(entry_node)
                entry_line = title_node.start_mark.line + 1
                if isinstance(entry, str):
                    entry = {"handler": entry}
                if not isinstance(entry, dict) or set(entry) - {"handler", "params"}:
                    raise fail("a task entry takes 'handler' and 'params'", entry_line)
                params = entry.get("params") or {}
                if not isinstance(params, dict):
                    raise fail("params: expected a mapping", entry_line)
                lines = _key_lines(_children(entry_node).get("params"))
                config.tasks[normalise(str(title_node.value))] = TaskConfig(entry.get("handler"), params, entry_line,
                                                                            lines)
        elif key == "max_cost_usd":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise fail(f"max_cost_usd: expected a positive number of US dollars, not {value!r}", line)
            config.max_cost_usd = float(value)
        elif key == "default_handler":
            if not isinstance(value, str) or not value.strip():
                raise fail(f"default_handler: expected a handler's name, not {value!r}", line)
            config.default_handler = value.strip()
        else:
            raise fail(f"unknown key {key!r}; expected {KEYS}", line)
    return config


def _children(node: Any) -> dict[str, Any]:
    """A YAML mapping node's value nodes by key (empty for anything else)."""
    import yaml

    return {str(k.value): v for k, v in node.value} if isinstance(node, yaml.MappingNode) else {}


def _key_lines(node: Any) -> dict[str, int]:
    """A YAML mapping node's keys → their 1-based lines, for problems reported at ralph.yaml:LINE."""
    import yaml

    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value} if isinstance(node, yaml.MappingNode) else {}


def _construct(node: Any) -> Any:
    """The value of a node of the file (its errors keep the file's lines)."""
    from . import yamlnodes

    return yamlnodes.construct(node)
