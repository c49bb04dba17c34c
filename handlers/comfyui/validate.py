"""Check an API-format graph against node schemas offline, the way ComfyUI's /prompt would — and a
little stricter where ComfyUI silently changes what was asked (a width rounded down, an unknown
input ignored, a node that feeds no output skipped)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ralph.handlers.comfyui.finding import Finding, LineOf, no_lines
from ralph.handlers.comfyui.schema import InputSpec, NodeSchema, Schemas


def is_link(value: Any) -> bool:
    """``["9", 0]``: ComfyUI treats any two-element list as a link."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and not isinstance(value[0], bool) and isinstance(value[1], int) and not isinstance(value[1], bool))


def validate(api_graph: Any, schemas: Mapping[str, NodeSchema], line_of: LineOf | None = None) -> list[Finding]:
    """All problems found in ``api_graph`` (``{id: {"class_type", "inputs"}}``), errors and warnings.

    ``line_of(node_id, input_or_None)`` gives file lines (compile's LineMap; None for a graph
    that comes from no file). File choices (checkpoints, images) are checked only when
    ``schemas.files_listed`` says the lists are the server's real ones.
    """
    return _Validator(api_graph, schemas, line_of or no_lines).run()


class _Validator:
    def __init__(self, graph: Any, schemas: Mapping[str, NodeSchema], line_of: LineOf) -> None:
        # Keys are strings in JSON; a graph built in Python may use ints, which links then name as strings.
        self.graph = {str(k): v for k, v in graph.items()} if isinstance(graph, Mapping) else {}
        self.schemas, self.line_of = schemas, line_of
        self.files_listed = isinstance(schemas, Schemas) and schemas.files_listed
        self.problems: list[Finding] = []
        if not isinstance(graph, Mapping):
            self.add(None, None, None, "the workflow is not a JSON object of nodes", code="shape")

    def add(self, node_id: str | None, class_type: str | None, input_name: str | None, message: str,
            severity: str = "error", code: str = "") -> None:
        line = self.line_of(node_id, input_name) if node_id is not None else None
        self.problems.append(Finding(line, node_id, class_type, input_name, message, severity, code))  # type: ignore[arg-type]

    def node(self, node_id: str) -> tuple[str | None, Mapping[str, Any]]:
        entry = self.graph.get(node_id)
        if not isinstance(entry, Mapping):
            return None, {}
        class_type = entry.get("class_type")
        inputs = entry.get("inputs")
        return (class_type if isinstance(class_type, str) else None), (inputs if isinstance(inputs, Mapping) else {})

    def run(self) -> list[Finding]:
        for node_id in self.graph:
            self.check_node(str(node_id))
        self.check_cycles()
        self.check_outputs()
        return self.problems

    # --- one node -------------------------------------------------------------------------------

    def check_node(self, node_id: str) -> None:
        entry = self.graph.get(node_id)
        if not isinstance(entry, Mapping):
            self.add(node_id, None, None, "is not an object with class_type and inputs", code="shape")
            return
        class_type, inputs = self.node(node_id)
        if class_type is None:
            self.add(node_id, None, None, "has no class_type", code="shape")
            return
        if not isinstance(entry.get("inputs", {}), Mapping):
            self.add(node_id, class_type, None, "inputs is not an object", code="shape")
        schema = self.schemas.get(class_type)
        if schema is None:
            close = difflib.get_close_matches(class_type, list(self.schemas), n=3, cutoff=0.6)
            if close:  # a misspelt name, whatever the server holds
                self.add(node_id, class_type, None, f"unknown node type {class_type!r}; did you mean "
                         f"{' or '.join(close)}?", code="unknown-node")
            elif self.files_listed:  # the server that runs it says so
                self.add(node_id, class_type, None, f"unknown node type {class_type!r} (is its custom node pack "
                         "installed?)", code="unknown-node")
            else:  # a custom node no server has described to ralph yet: the run asks the live one
                self.add(node_id, class_type, None, f"node type {class_type!r} is not among the schemas ralph "
                         "knows (shipped, or cached from servers it ran on): the live server checks it before "
                         "the prompt", severity="warning", code="unknown-node")
            return
        for name, wanted in schema.inputs.items():
            if wanted.required and name not in inputs:
                self.add(node_id, class_type, name, f"missing required input ({wanted.type})", code="missing-input")
        for name, value in inputs.items():
            spec = schema.inputs.get(name)
            if spec is None:
                if name not in schema.hidden:
                    close = difflib.get_close_matches(str(name), list(schema.inputs), n=2, cutoff=0.6)
                    hint = f"did you mean {' or '.join(close)}? " if close else ""
                    self.add(node_id, class_type, str(name),
                             f"{class_type} has no such input; ComfyUI would ignore it ({hint}inputs: "
                             f"{', '.join(schema.inputs) or 'none'})", code="unknown-input")
            elif is_link(value):
                self.check_link(node_id, class_type, spec, value)
            elif not spec.is_widget:
                self.add(node_id, class_type, name,
                         f"expects a link to a {spec.type} output, e.g. [\"4\", 0], got {value!r}", code="not-a-link")
            else:
                self.check_value(node_id, class_type, schema, spec, value)

    def check_link(self, node_id: str, class_type: str, spec: InputSpec, value: list) -> None:
        source_id, index = str(value[0]), value[1]
        if source_id not in self.graph:
            self.add(node_id, class_type, spec.name, f"links to node {source_id}, which is not in the workflow",
                     code="dangling-link")
            return
        source_type, _ = self.node(source_id)
        source = self.schemas.get(source_type) if source_type else None
        if source is None:
            return  # that node's own problem is reported on it
        if not 0 <= index < len(source.outputs):
            self.add(node_id, class_type, spec.name,
                     f"links to output {index} of node {source_id} ({source_type}), which has "
                     f"{len(source.outputs)} output(s): {', '.join(source.output_names) or 'none'}",
                     code="bad-output")
            return
        out_type = source.outputs[index]
        out_types = frozenset(t.strip() for t in out_type.split(","))
        if "*" in out_types or "*" in spec.types or out_types & spec.types:
            return
        label = f" ({source.output_names[index]})" if index < len(source.output_names) else ""
        self.add(node_id, class_type, spec.name,
                 f"gets {out_type} from node {source_id} ({source_type}) output {index}{label}, "
                 f"but expects {spec.type}", code="type-mismatch")

    def check_value(self, node_id: str, class_type: str, schema: NodeSchema, spec: InputSpec, value: Any) -> None:
        def bad(message: str, code: str = "bad-value") -> None:
            self.add(node_id, class_type, spec.name, message, code=code)

        if spec.type == "INT":
            if isinstance(value, bool) or not isinstance(value, int):
                bad(f"expects a whole number, got {value!r}")
                return
            self.check_range(spec, value, bad)
            step = spec.config.get("step")
            if spec.name in ("width", "height") and value % 8 and (
                    (isinstance(step, int) and step % 8 == 0) or "LATENT" in schema.outputs):
                bad(f"{value} is not a multiple of 8; ComfyUI would silently use {value // 8 * 8}",
                    code="not-multiple-of-8")
        elif spec.type == "FLOAT":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                bad(f"expects a number, got {value!r}")
                return
            self.check_range(spec, value, bad)
        elif spec.type == "BOOLEAN":
            if not isinstance(value, bool):
                bad(f"expects true or false, got {value!r}")
        elif spec.type == "STRING":
            if not isinstance(value, str):
                bad(f"expects text, got {value!r}")
        elif spec.type == "COMBO":
            options = list(spec.options or ())
            if value in options or (spec.is_file and not self.files_listed):
                return
            close = difflib.get_close_matches(str(value), [str(o) for o in options], n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            if spec.is_file:
                bad(f"{value!r} is not on the server; {hint}it has: {', '.join(map(str, options)) or 'none'}",
                    code="missing-file")
            else:
                bad(f"{value!r} is not allowed; {hint}allowed: {', '.join(map(str, options))}", code="bad-choice")

    @staticmethod
    def check_range(spec: InputSpec, value: float, bad) -> None:
        low, high = spec.minimum, spec.maximum
        if isinstance(low, (int, float)) and value < low:
            bad(f"{value} is below the minimum {low}", "out-of-range")
        elif isinstance(high, (int, float)) and value > high:
            bad(f"{value} is above the maximum {high}", "out-of-range")

    # --- whole graph ----------------------------------------------------------------------------

    def edges(self) -> dict[str, list[str]]:
        """node → nodes it reads from (only links to nodes that exist)."""
        upstream: dict[str, list[str]] = {}
        for node_id in self.graph:
            _, inputs = self.node(node_id)
            upstream[str(node_id)] = [str(v[0]) for v in inputs.values() if is_link(v) and str(v[0]) in self.graph]
        return upstream

    def check_cycles(self) -> None:
        upstream = self.edges()
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        reported: set[str] = set()
        for start in upstream:
            if start in state:
                continue
            path: list[str] = [start]
            iters = [iter(upstream[start])]
            state[start] = 1
            while iters:  # iterative DFS: a deep random graph must not hit the recursion limit
                nxt = next(iters[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    iters.pop()
                elif state.get(nxt) == 1:
                    cycle = path[path.index(nxt):] + [nxt]
                    if reported.intersection(cycle):
                        continue  # one report per tangle of loops is enough to find it
                    reported.update(cycle)
                    class_type, _ = self.node(nxt)
                    self.add(nxt, class_type, None,
                             "is part of a cycle: " + " ← ".join(cycle) + " (each reads from the next)",
                             code="cycle")
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    iters.append(iter(upstream[nxt]))

    def check_outputs(self) -> None:
        if not self.graph:
            self.add(None, None, None, "the workflow has no nodes", code="no-output")
            return
        outputs = []
        for node_id in self.graph:
            class_type, _ = self.node(str(node_id))
            schema = self.schemas.get(class_type) if class_type else None
            if schema is not None and schema.output_node:
                outputs.append(str(node_id))
        classes = [self.node(str(node_id))[0] for node_id in self.graph]
        if not outputs and not self.files_listed and any(c and self.schemas.get(c) is None for c in classes):
            return  # a node ralph has no schema for may be the output: the live server will tell
        if not outputs:
            first = str(next(iter(self.graph)))
            self.problems.append(Finding(self.line_of(first, None), None, None, None,
                                         "no output node (such as SaveImage): ComfyUI would refuse the workflow "
                                         "(prompt_no_outputs)", "error", "no-output"))
            return
        upstream = self.edges()
        used = set(outputs)
        todo = list(outputs)
        while todo:
            for source in upstream.get(todo.pop(), ()):
                if source not in used:
                    used.add(source)
                    todo.append(source)
        for node_id in self.graph:
            if str(node_id) not in used:
                class_type, _ = self.node(str(node_id))
                self.add(str(node_id), class_type, None, "feeds no output node; ComfyUI will not run it",
                         "warning", "unused-node")
