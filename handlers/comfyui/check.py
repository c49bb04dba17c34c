"""The offline pipeline in one call: node list → API graph → validate → lint."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

from ralph.handlers.comfyui.compile import LineMap, PromptText, compile_workflow
from ralph.handlers.comfyui.lint import lint
from ralph.handlers.comfyui.nodelist import parse_node_list
from ralph.handlers.comfyui.problem import Problem
from ralph.handlers.comfyui.schema import NodeSchema
from ralph.handlers.comfyui.validate import validate


class Checked(NamedTuple):
    graph: dict
    problems: list[Problem]  # parse, compile, validate, then lint findings, each group in file order
    line_of: LineMap

    @property
    def ok(self) -> bool:
        """No errors (warnings and info allowed): the graph may be sent."""
        return not any(p.is_error for p in self.problems)


def check_node_list(text: str, first_line: int, schemas: Mapping[str, NodeSchema],
                    prompts: Mapping[str, PromptText | tuple | str] | None = None, *,
                    provided_files: Collection[str] | None = None, family: str | None = None) -> Checked:
    """Parse, compile, validate and lint one node-list code block."""
    parsed = parse_node_list(text, first_line)
    compiled = compile_workflow(parsed.nodes, schemas, prompts)
    found: list[Problem] = []
    if parsed.nodes:  # with none, the parser has said so on the block's line already
        found = validate(compiled.graph, schemas, compiled.line_of)
        found += lint(compiled.graph, schemas, compiled.line_of, provided_files=provided_files, family=family)
    ordered = sorted(parsed.problems + compiled.problems, key=_by_line) + sorted(found, key=_by_line)
    return Checked(compiled.graph, ordered, compiled.line_of)


def _by_line(problem: Problem) -> int:
    return problem.line if problem.line is not None else 0
