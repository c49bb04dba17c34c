"""Workflow templates: an API graph under "prompt" plus named "parameters" a task may override.

A parameter maps a friendly name to one or more ``"node.input"`` paths, so ``cfg`` can set both
samplers of the refiner workflow and users change experiments without touching node ids.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any


def load_template(name: str) -> dict[str, Any]:
    """A template shipped in ``ralph.workflows`` by name (``"refiner"`` → ``refiner.json``)."""
    text = resources.files("ralph.workflows").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def parameter_paths(template: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """``{"cfg": [("11", "cfg"), ("12", "cfg")], …}`` from the template's ``parameters``."""
    return {name: [_split(p) for p in paths] for name, paths in template.get("parameters", {}).items()}


def apply_overrides(template: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A new API graph: the template's ``prompt`` with ``overrides`` applied. A key is a parameter
    name (``"denoise2"``) or a direct ``"node.input"`` path (``"12.denoise"``). Raises KeyError for a
    name the template does not define or a path to a node/input it does not have; values are not
    checked here (run validate on the result)."""
    graph = copy.deepcopy(template["prompt"])
    params = parameter_paths(template)
    for key, value in overrides.items():
        if key in params:
            paths = params[key]
        elif "." in key:
            paths = [_split(key)]
        else:
            raise KeyError(f"unknown workflow parameter {key!r}; known: {', '.join(sorted(params))}")
        for node_id, input_name in paths:
            node = graph.get(node_id)
            if node is None or input_name not in node.get("inputs", {}):
                raise KeyError(f"{key!r}: the workflow has no input {input_name!r} on node {node_id!r}")
            node["inputs"][input_name] = copy.deepcopy(value)
    return graph


def _split(path: str) -> tuple[str, str]:
    node_id, _, input_name = path.partition(".")
    return node_id, input_name
