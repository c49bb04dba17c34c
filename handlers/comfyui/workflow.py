"""The workflow a task asks for: its own node list, or a template with overrides, and its sweep.

What is written in the task is what runs: the node list is compiled, the task's prompts
filled in, and every problem reported at the task file's line.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ralph.handlers.comfyui.check import check_graph, compile_node_list
from ralph.handlers.comfyui.compile import LineMap, PromptText
from ralph.handlers.comfyui.finding import Finding
from ralph.handlers.comfyui.nodelist import parse_node_list
from ralph.handlers.comfyui.parameters import infer_parameters
from ralph.handlers.comfyui.schema import NodeSchema, schemas_from_object_info
from ralph.handlers.comfyui.template import apply_overrides, load_template
from ralph.handlers.comfyui.validate import validate as validate_graph

from ralph.model import Task, TaskFile

NODE_LINE = re.compile(r"^\s*Node\s+\d+\s*:", re.M)


@dataclass
class Variant:
    label: str  # "cfg=5 seed=1", or "base" without a sweep
    values: dict[str, Any]  # the swept parameters' values
    graph: dict[str, Any]


@dataclass
class Workflow:
    graph: dict[str, Any]
    parameters: dict[str, list[str]]  # name → "node.input" paths
    problems: list[Finding] = field(default_factory=list)
    line_of: LineMap | None = None
    fallback_line: int = 0  # where problems without a line of their own are reported

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)

    def values(self) -> dict[str, Any]:
        """Each named parameter's current value (the first path's)."""
        out = {}
        for name, paths in self.parameters.items():
            node_id, _, input_name = paths[0].partition(".")
            out[name] = self.graph.get(node_id, {}).get("inputs", {}).get(input_name)
        return out

    def variants(self, sweep: Mapping[str, list[Any]], seeds: list[int]) -> list[Variant]:
        axes = dict(sweep)
        if seeds:
            axes["seed"] = seeds
        if not axes:
            return [Variant("base", {}, self.graph)]
        names = list(axes)
        template = {"prompt": self.graph, "parameters": self.parameters}
        variants = []
        for combination in itertools.product(*(axes[n] for n in names)):
            values = dict(zip(names, combination, strict=True))
            label = " ".join(f"{n}={v}" for n, v in values.items())
            variants.append(Variant(label, values, apply_overrides(template, values)))
        return variants


CACHE_NAME = "object_info.json"  # node classes live servers described, in the task file's state folder


def snapshot_schemas(cache_dir: Path | None = None) -> Mapping[str, NodeSchema]:
    """Node schemas for checking a workflow with no server at hand: those live servers gave
    (cached in ``cache_dir``), else the snapshot shipped with ralph.  Their file lists are not
    trusted: a new pod may hold other files."""
    return schemas_from_object_info(_snapshot(cache_dir), files_listed=False)


def cache_schemas(object_info: dict[str, Any], cache_dir: Path) -> None:
    """Keep what a live server said of these node classes for ``ralph check``: merged into the
    snapshot, written only when something changed."""
    from ralph.textfile import write_atomically

    known = _snapshot(cache_dir)
    if all(known.get(name) == entry for name, entry in object_info.items()):
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(cache_dir / CACHE_NAME, json.dumps({**known, **object_info}).encode("utf-8"))


def has_cache(cache_dir: Path) -> bool:
    return (cache_dir / CACHE_NAME).is_file()


def _snapshot(cache_dir: Path | None) -> dict[str, Any]:
    cached = cache_dir / CACHE_NAME if cache_dir else None
    if cached is not None and cached.is_file():
        return _read_json(cached)
    with resources.as_file(resources.files("ralph.workflows").joinpath(CACHE_NAME)) as shipped:
        return _read_json(shipped)


def _read_json(path: Path) -> dict[str, Any]:
    """A snapshot, parsed once per process while the file is unchanged (a run's plan and its
    task both read it); callers never modify what it returns."""
    stat = path.stat()
    return _parsed(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def class_types(task: Task, params: Mapping[str, Any]) -> set[str]:
    """The node classes the task's workflow names, read without any schema (what to ask a live
    server about); empty when there is no workflow to read."""
    if params.get("template"):
        try:
            graph = load_template(params["template"])["prompt"]
        except (FileNotFoundError, ModuleNotFoundError):
            return set()
        return {str(node["class_type"]) for node in graph.values() if isinstance(node, dict) and "class_type" in node}
    found = node_list_block(task)
    return {node.class_type for node in parse_node_list(*found).nodes} if found else set()


def live_schemas(object_info: dict[str, Any]) -> Mapping[str, NodeSchema]:
    return schemas_from_object_info(object_info, files_listed=True)


def family_of(file: TaskFile) -> str | None:
    """The model family the Context names (``BigLove XL (SDXL-based)`` → sdxl)."""
    checkpoint = file.context.get("checkpoint")
    if checkpoint and re.search(r"sdxl|\bxl\b", checkpoint.value, re.I):
        return "sdxl"
    return None


def node_list_block(task: Task) -> tuple[str, int] | None:
    for block in task.code_blocks:
        if NODE_LINE.search(block.text):
            return block.text, block.first_line
    return None


def build(
    file: TaskFile,
    task: Task,
    params: Mapping[str, Any],
    schemas: Mapping[str, NodeSchema],
    provided_files: list[str] | None = None,
) -> Workflow:
    """The task's workflow with ``params['overrides']`` applied, checked against ``schemas``."""
    block = task.code("yaml", "yml")
    fallback = block.line if block else task.line
    family = family_of(file)
    if params.get("template"):
        try:
            template = load_template(params["template"])
        except (FileNotFoundError, ModuleNotFoundError):
            return Workflow({}, {}, [_problem(fallback, f"no workflow template {params['template']!r} in workflows/")])
        graph, parameters = template["prompt"], template["parameters"]
        problems: list[Finding] = []
        line_of = None
    else:
        found = node_list_block(task)
        if found is None:
            return Workflow({}, {}, [_problem(task.line, "no workflow: write a node list (Node 1: …) or set template")])
        prompts = {key: PromptText(item.text, item.line) for key, item in task.prompts.items()}
        compiled = compile_node_list(*found, schemas, prompts)
        graph, problems, line_of = compiled.graph, list(compiled.problems), compiled.line_of
        parameters = infer_parameters(graph, {key: item.text for key, item in task.prompts.items()})
        if any(p.is_error for p in problems) or not compiled.has_nodes:
            return Workflow(graph, parameters, problems, line_of, fallback)
    try:
        graph = apply_overrides({"prompt": graph, "parameters": parameters}, params.get("overrides") or {})
    except KeyError as error:
        return Workflow(graph, parameters, problems + [_problem(fallback, str(error.args[0]))], line_of, fallback)
    # Checked once, after the overrides: what runs is what is checked.
    problems += check_graph(graph, schemas, line_of, provided_files=provided_files, family=family)
    axes = dict(params.get("sweep") or {}) | ({"seed": params["seeds"]} if params.get("seeds") else {})
    for name, values in axes.items():
        if name not in parameters and "." not in name:
            problems.append(_problem(fallback, f"sweep: unknown workflow parameter {name!r}; known: "
                                               f"{', '.join(sorted(parameters))}"))
            continue
        problems += _sweep_problems(graph, parameters, name, values, schemas, problems, fallback)
    return Workflow(graph, parameters, problems, line_of, fallback)


def _sweep_problems(graph: dict[str, Any], parameters: dict[str, Any], name: str, values: Any,
                    schemas: Mapping[str, NodeSchema], known: list[Finding], line: int) -> list[Finding]:
    """Each swept value checked like an override (range, type, choices): the findings a value adds
    to the base graph's, at the task's yaml block, named by the value."""
    found: list[Finding] = []
    seen = {(p.node_id, p.input, p.message) for p in known}
    for value in values if isinstance(values, list) else [values]:
        try:
            variant = apply_overrides({"prompt": graph, "parameters": parameters}, {name: value})
        except KeyError as error:
            found.append(_problem(line, f"sweep {name}={value!r}: {error.args[0]}"))
            continue
        for problem in validate_graph(variant, schemas):
            if (problem.node_id, problem.input, problem.message) not in seen:
                found.append(replace(problem, line=line, message=f"sweep {name}={value!r}: {problem.message}"))
    return found


def graph_digest(graph: Mapping[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:12]


def _problem(line: int, message: str) -> Finding:
    return Finding(line, None, None, None, message)
