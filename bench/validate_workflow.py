"""Time the offline ComfyUI check of the example task's workflow beside a trivial reference.

Run: .venv/bin/python bench/validate_workflow.py
Reference: a JSON round trip of the same API graph (what merely sending it costs).
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

from ralph.handlers.comfyui.compile import compile_workflow
from ralph.handlers.comfyui.lint import lint
from ralph.handlers.comfyui.nodelist import parse_node_list
from ralph.handlers.comfyui.schema import load_object_info
from ralph.handlers.comfyui.validate import validate

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "roadmap" / "ralph" / "RALPH-001-grain-reduction.md"
SCHEMAS = REPO / "tests" / "data" / "comfyui-object-info-subset.json"  # the 12 node types the example uses


def example_block() -> tuple[str, int]:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, text in enumerate(lines) if "Workflow Order" in text) + 1
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[start + 1:end]), start + 2


def best_us(fn, number: int) -> float:
    """Best of 5 repeats, in microseconds per call (best is least disturbed by the machine)."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    text, first = example_block()
    schema_path = SCHEMAS
    schemas = load_object_info(schema_path)
    prompts = {"positive": ("elena, a portrait", 111), "negative": ("grainy", 112)}
    parsed = parse_node_list(text, first)
    compiled = compile_workflow(parsed.nodes, schemas, prompts)
    graph = compiled.graph

    rows = [
        ("reference: json.dumps+loads of the graph", best_us(lambda: json.loads(json.dumps(graph)), 2000)),
        ("load_object_info (12 node types)", best_us(lambda: load_object_info(schema_path), 200)),
        ("parse_node_list", best_us(lambda: parse_node_list(text, first), 500)),
        ("compile_workflow", best_us(lambda: compile_workflow(parsed.nodes, schemas, prompts), 500)),
        ("validate", best_us(lambda: validate(graph, schemas, compiled.line_of), 500)),
        ("lint", best_us(lambda: lint(graph, schemas, compiled.line_of, provided_files=set()), 500)),
    ]

    def whole() -> None:
        p = parse_node_list(text, first)
        c = compile_workflow(p.nodes, schemas, prompts)
        validate(c.graph, schemas, c.line_of)

    rows.append(("parse+compile+validate", best_us(whole, 300)))
    print(f"python {sys.version.split()[0]}; example: {len(parsed.nodes)} nodes, {len(text.splitlines())} lines")
    reference = rows[0][1]
    for name, us in rows:
        print(f"{name:45s} {us:9.1f} µs  ({us / reference:6.1f}× reference)")


if __name__ == "__main__":
    main()
