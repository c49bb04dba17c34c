"""Turn parsed NodeSpecs into ComfyUI's API format, mapping loose names to real inputs via the schemas.

People write ``CFG=7.0``, ``sampler=dpmpp_2m``, ``strength 1.0``, ``832x1216`` or just a file
name; ComfyUI wants ``cfg``, ``sampler_name``, ``strength_model``+``strength_clip``,
``width``+``height``, ``ckpt_name``. The schema decides: a name is matched exactly, then
ignoring case and ``_``, then through a short alias table, then as a unique prefix; a
positional value goes to the first free input whose type can hold it. Whatever stays
ambiguous is reported, never guessed. Checks that need only the finished graph (ranges,
allowed values, link types, cycles) are validate.py's job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ralph.handlers.comfyui.finding import Finding
from ralph.handlers.comfyui.nodelist import Item, Link, NodeSpec, PromptRef, Size
from ralph.handlers.comfyui.schema import InputSpec, NodeSchema, looks_like_file


class PromptText(NamedTuple):
    """A task's ``Positive:``/``Negative:`` line: its text and file line."""

    text: str
    line: int | None = None


class LineMap:
    """File lines of nodes and of their (real) inputs; callable as validate's ``line_of``."""

    def __init__(self) -> None:
        self.nodes: dict[str, int] = {}
        self.inputs: dict[tuple[str, str], int] = {}

    def __call__(self, node_id: str, input_name: str | None = None) -> int | None:
        if input_name is not None and (node_id, input_name) in self.inputs:
            return self.inputs[(node_id, input_name)]
        return self.nodes.get(node_id)


class Compiled(NamedTuple):
    graph: dict[str, dict[str, Any]]
    problems: list[Finding]
    line_of: LineMap


# Loose names people use → real input names, tried in order (normalised: lower case, no _ - or spaces).
ALIASES: dict[str, tuple[str, ...]] = {
    "cfgscale": ("cfg",), "guidance": ("cfg",), "guidancescale": ("cfg",), "scale": ("cfg",),
    "sampler": ("sampler_name",), "samplername": ("sampler_name",),
    "sched": ("scheduler",), "schedule": ("scheduler",),
    "batch": ("batch_size",), "batchcount": ("batch_size",),
    "seed": ("seed", "noise_seed"), "noiseseed": ("noise_seed", "seed"),
    "step": ("steps",),
    "prefix": ("filename_prefix",), "filename": ("filename_prefix",),
    "checkpoint": ("ckpt_name",), "ckpt": ("ckpt_name",),
    "lora": ("lora_name",),
    "prompt": ("text",),
    "latent": ("latent_image", "samples"),
}
# One loose name that sets several inputs when the node has all of them.
FANOUT: dict[str, tuple[str, ...]] = {
    "strength": ("strength_model", "strength_clip"),
    "lorastrength": ("strength_model", "strength_clip"),
}
SIZE_NAMES = frozenset({"size", "resolution", "res", "dimensions", "dims"})
SEED_INPUTS = frozenset({"seed", "noise_seed"})


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def compile_workflow(
    nodes: Sequence[NodeSpec],
    schemas: Mapping[str, NodeSchema],
    prompts: Mapping[str, PromptText | tuple | str] | None = None,
) -> Compiled:
    """Build the API graph ``{id: {"inputs", "class_type", "_meta"?}}``.

    ``prompts`` maps "positive"/"negative" (any case) to the task's prompt lines. Required widget
    inputs left out get the schema default; a seed left out gets the schema's (fixed) default, so
    two runs of one file sample the same noise, and an info Finding says so. Node types missing
    from ``schemas`` are passed through with their inputs as written (validate reports them).
    """
    prompt_map = {k.lower(): _prompt(v) for k, v in (prompts or {}).items()}
    graph: dict[str, dict[str, Any]] = {}
    problems: list[Finding] = []
    lines = LineMap()
    for node in nodes:
        lines.nodes[node.node_id] = node.line
        schema = schemas.get(node.class_type)
        builder = _NodeBuilder(node, schema, schemas, nodes, prompt_map, lines, problems)
        inputs = builder.build()
        entry: dict[str, Any] = {"inputs": inputs, "class_type": node.class_type}
        if node.title:
            entry["_meta"] = {"title": node.title}
        graph[node.node_id] = entry
    return Compiled(graph, problems, lines)


def _prompt(value: PromptText | tuple | str) -> PromptText:
    if isinstance(value, str):
        value = PromptText(value)
    text, line = (value[0], value[1] if len(value) > 1 else None)
    text = text.strip()
    # Task files write the prompt in backticks: `elena, …`
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "`\"'":
        text = text[1:-1]
    return PromptText(text, line)


class _NodeBuilder:
    """Maps one node's items onto its schema's inputs."""

    def __init__(self, node: NodeSpec, schema: NodeSchema | None, schemas: Mapping[str, NodeSchema],
                 nodes: Sequence[NodeSpec], prompts: Mapping[str, PromptText], lines: LineMap,
                 problems: list[Finding]) -> None:
        self.node, self.schema, self.schemas = node, schema, schemas
        self.by_id = {n.node_id: n for n in nodes}
        self.prompts, self.lines, self.problems = prompts, lines, problems
        self.values: dict[str, Any] = {}
        self.set_on: dict[str, int] = {}

    def problem(self, item: Item | None, input_name: str | None, message: str, severity: str = "error",
                code: str = "compile") -> None:
        line = item.line if item else self.node.line
        self.problems.append(Finding(line, self.node.node_id, self.node.class_type, input_name, message,
                                     severity, code))  # type: ignore[arg-type]

    def build(self) -> dict[str, Any]:
        if self.schema is None:
            for item in self.node.items:
                self._raw(item)
            return self.values
        positional = []
        for item in self.node.items:
            if item.name is None:
                positional.append(item)
            else:
                self._named(item)
        for item in positional:  # after named values, so that "(file, strength 1.0)" cannot misplace the file
            self._positional(item)
        self._defaults()
        if len(self.node.outputs) > len(self.schema.outputs):
            self.problem(self.node.outputs[0], None,
                         f"lists {len(self.node.outputs)} outputs but {self.node.class_type} has "
                         f"{len(self.schema.outputs)} ({', '.join(self.schema.output_names) or 'none'})",
                         "warning", "outputs")
        order = list(self.schema.inputs)
        return dict(sorted(self.values.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))

    # --- assignment -----------------------------------------------------------------------------

    def _set(self, name: str, value: Any, item: Item) -> None:
        if name in self.values:
            self.problem(item, name, f"set twice (also on line {self.set_on[name]})", code="duplicate-input")
            return
        spec = self.schema.inputs.get(name) if self.schema else None
        self.values[name] = _coerce(spec, value) if spec else _api_value(value)
        self.set_on[name] = item.line
        self.lines.inputs[(self.node.node_id, name)] = item.line

    def _raw(self, item: Item) -> None:
        """Unknown node type: keep what was written so validate can still report on it."""
        if isinstance(item.value, Size):
            self._set("width", item.value.width, item)
            self._set("height", item.value.height, item)
        elif isinstance(item.value, PromptRef):
            self._prompt_into("text", item)
        elif item.name is not None:
            self._set(item.name, item.value, item)

    def _named(self, item: Item) -> None:
        assert self.schema is not None and item.name is not None
        if isinstance(item.value, Size) or normalise(item.name) in SIZE_NAMES:
            self._size(item)
            return
        targets = self._resolve(item.name, item.value)
        if isinstance(targets, str):
            self.problem(item, None, targets, code="unknown-input")
            return
        for target in targets:
            if isinstance(item.value, PromptRef):
                self._prompt_into(target, item)
            else:
                self._set(target, item.value, item)

    def _size(self, item: Item) -> None:
        assert self.schema is not None
        if not isinstance(item.value, Size):
            self.problem(item, None, f"{item.text!r}: write a size as WIDTHxHEIGHT, e.g. 832x1216")
        elif "width" in self.schema.inputs and "height" in self.schema.inputs:
            self._set("width", item.value.width, item)
            self._set("height", item.value.height, item)
        else:
            self.problem(item, None, f"{self.node.class_type} has no width/height inputs for {item.text!r}")

    def _prompt_into(self, target: str, item: Item) -> None:
        which = item.value.which
        prompt = self.prompts.get(which)
        if prompt is None:
            self.problem(item, target, f"uses the {which} prompt but the task has no `{which.capitalize()}:` line",
                         code="missing-prompt")
            return
        self._set(target, prompt.text, item)

    def _resolve(self, name: str, value: Any) -> list[str] | str:
        """Real input name(s) for a loose name, or an error message."""
        assert self.schema is not None
        inputs = self.schema.inputs
        if name in inputs:
            return [name]
        key = normalise(name)
        same = [n for n in inputs if normalise(n) == key]
        if len(same) == 1:
            return same
        fan = FANOUT.get(key)
        if fan and all(t in inputs for t in fan):
            return list(fan)
        for alias in ALIASES.get(key, ()):
            if alias in inputs:
                return [alias]
        prefixed = [n for n in inputs if key and normalise(n).startswith(key)]
        if isinstance(value, Link):  # a link cannot go into a typed-in value when a link input fits
            prefixed = [n for n in prefixed if not inputs[n].is_widget] or prefixed
        if len(prefixed) == 1:
            return prefixed
        if isinstance(value, Link):
            by_type = self._free_link_inputs(value)
            if len(by_type) == 1:
                return by_type
        if len(prefixed) > 1:
            return f"{name!r} could be any of {', '.join(prefixed)}: use the full name"
        close = difflib.get_close_matches(name, list(inputs), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        return (f"{self.node.class_type} has no input {name!r}{hint} "
                f"(its inputs: {', '.join(inputs) or 'none'})")

    def _source_type(self, link: Link) -> str | None:
        source = self.by_id.get(link.node)
        schema = self.schemas.get(source.class_type) if source else None
        if schema is None or not 0 <= link.output < len(schema.outputs):
            return None
        return schema.outputs[link.output]

    def _free_link_inputs(self, link: Link) -> list[str]:
        """Unset link inputs that accept the linked output's type."""
        assert self.schema is not None
        out_type = self._source_type(link)
        if out_type is None:
            return []
        return [n for n, s in self.schema.inputs.items()
                if not s.is_widget and n not in self.values and (out_type in s.types or "*" in s.types)]

    def _positional(self, item: Item) -> None:
        assert self.schema is not None
        value = item.value
        if isinstance(value, Size):
            self._size(item)
            return
        free = [s for s in self.schema.inputs.values() if s.name not in self.values]
        if isinstance(value, PromptRef):
            texts = [s.name for s in free if s.type == "STRING"]
            target = "text" if "text" in texts else (texts[0] if texts else None)
            if target is None:
                self.problem(item, None, f"{self.node.class_type} has no free text input for {item.text!r}")
            else:
                self._prompt_into(target, item)
            return
        if isinstance(value, Link):
            targets = self._free_link_inputs(value)
            if targets:
                self._set(targets[0], value, item)
            else:
                self.problem(item, None, f"no free input of {self.node.class_type} takes {item.text!r}: "
                                         "write name[node, output]")
            return
        if isinstance(value, (bool, int, float)):
            kinds = ("BOOLEAN",) if isinstance(value, bool) else (
                ("INT", "FLOAT") if isinstance(value, int) or float(value).is_integer() else ("FLOAT",))
            fits = [s.name for s in free if s.type in kinds]
            if len(fits) == 1:
                self._set(fits[0], value, item)
            elif fits:
                self.problem(item, None, f"{item.text!r} could be {', '.join(fits)}: write name=value",
                             code="ambiguous")
            else:
                self.problem(item, None, f"no free input of {self.node.class_type} takes the number {item.text!r}")
            return
        choice = self._string_target(free, str(value))
        if isinstance(choice, str):
            self._set(choice, value, item)
        else:
            self.problem(item, None, choice[0], code="unknown-value")

    def _string_target(self, free: list[InputSpec], value: str) -> str | tuple[str]:
        """The input a positional string belongs to: a choice listing it, else a file choice for a
        file name (snapshot lists are examples), else a text input. An error message in a tuple."""
        low = value.lower()
        tiers = [
            [s.name for s in free if s.type == "COMBO" and any(str(o).lower() == low for o in s.options or ())],
            [s.name for s in free if s.is_file and looks_like_file(value)],
            [s.name for s in free if s.type == "STRING"],
        ]
        for tier in tiers:
            if tier:
                return tier[0]
        for spec in free:
            if spec.type == "COMBO" and not spec.is_file:
                close = difflib.get_close_matches(value, [str(o) for o in spec.options or ()], n=1, cutoff=0.6)
                if close:
                    return (f"{value!r} is not a value of {spec.name}; did you mean {close[0]!r}?",)
        return (f"no free input of {self.node.class_type} takes {value!r}",)

    def _defaults(self) -> None:
        assert self.schema is not None
        for spec in self.schema.inputs.values():
            if not spec.required or not spec.is_widget or spec.name in self.values or spec.default is None:
                continue
            self.values[spec.name] = spec.default
            if spec.name in SEED_INPUTS or spec.config.get("control_after_generate"):
                self.problem(None, spec.name,
                             f"not given: using the fixed seed {spec.default} so that runs are reproducible "
                             f"(ComfyUI's UI would randomise it); set {spec.name}=N to choose another",
                             "info", "default-seed")


def _api_value(value: Any) -> Any:
    if isinstance(value, Link):
        return value.to_api()
    if isinstance(value, Size):
        return f"{value.width}x{value.height}"
    if isinstance(value, PromptRef):
        return value.which
    return value


def _coerce(spec: InputSpec, value: Any) -> Any:
    """Fix only what is unambiguous (7 for a FLOAT, 1.0 for an INT, a choice's case);
    anything else is left for validate to report."""
    value = _api_value(value)
    if isinstance(value, bool) or isinstance(value, list):
        return value
    if spec.type == "FLOAT" and isinstance(value, int):
        return float(value)
    if spec.type == "INT" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.type == "STRING" and isinstance(value, (int, float)):
        return str(value)
    if spec.type == "COMBO" and isinstance(value, str) and value not in (spec.options or ()):
        for option in spec.options or ():
            if isinstance(option, str) and option.lower() == value.lower():
                return option
    return value
