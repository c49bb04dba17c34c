"""The offline pipeline in one call: node list → API graph → validate → lint."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

from ralph.handlers.comfyui.compile import LineMap, PromptText, compile_workflow
from ralph.handlers.comfyui.finding import Finding
from ralph.handlers.comfyui.lint import lint
from ralph.handlers.comfyui.nodelist import parse_node_list
from ralph.handlers.comfyui.schema import NodeSchema
from ralph.handlers.comfyui.validate import validate


class Checked(NamedTuple):
    graph: dict
    problems: list[Finding]  # parse, compile, validate, then lint findings, each group in file order
    line_of: LineMap

    @property
    def ok(self) -> bool:
        """No errors (warnings and info allowed): the graph may be sent."""
        return not any(p.is_error for p in self.problems)


class CompiledList(NamedTuple):
    graph: dict
    problems: list[Finding]  # parse and compile findings, in file order
    line_of: LineMap
    has_nodes: bool


def compile_node_list(text: str, first_line: int, schemas: Mapping[str, NodeSchema],
                      prompts: Mapping[str, PromptText | tuple | str] | None = None) -> CompiledList:
    """Parse and compile one node-list code block (no validation yet: overrides may follow)."""
    parsed = parse_node_list(text, first_line)
    compiled = compile_workflow(parsed.nodes, schemas, prompts)
    problems = sorted(parsed.problems + compiled.problems, key=_by_line)
    return CompiledList(compiled.graph, problems, compiled.line_of, bool(parsed.nodes))


def check_graph(graph: dict, schemas: Mapping[str, NodeSchema], line_of: LineMap | None = None, *,
                provided_files: Collection[str] | None = None, family: str | None = None) -> list[Finding]:
    """Validation errors, then lint findings, each group in file order."""
    found = sorted(validate(graph, schemas, line_of), key=_by_line)
    return found + sorted(lint(graph, schemas, line_of, provided_files=provided_files, family=family), key=_by_line)


def check_node_list(text: str, first_line: int, schemas: Mapping[str, NodeSchema],
                    prompts: Mapping[str, PromptText | tuple | str] | None = None, *,
                    provided_files: Collection[str] | None = None, family: str | None = None) -> Checked:
    """Parse, compile, validate and lint one node-list code block."""
    compiled = compile_node_list(text, first_line, schemas, prompts)
    problems = list(compiled.problems)
    if compiled.has_nodes:  # with none, the parser has said so on the block's line already
        problems += check_graph(compiled.graph, schemas, compiled.line_of,
                                provided_files=provided_files, family=family)
    return Checked(compiled.graph, problems, compiled.line_of)


def _by_line(problem: Finding) -> int:
    return problem.line if problem.line is not None else 0
