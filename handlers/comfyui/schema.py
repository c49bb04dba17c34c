"""Node schemas from ComfyUI's ``/object_info``, in a shape the compiler and validator can query.

``/object_info`` describes each input as ``[TYPE, {config}]`` where TYPE is a type name
(``"INT"``, ``"MODEL"``…) or, for a choice, either the list of options itself (classic nodes) or
``"COMBO"`` with ``config["options"]`` (nodes written against ComfyUI's V3 API). Both shapes
become ``InputSpec(type="COMBO", options=…)`` here so nothing downstream has to care.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Types a user types in as a value; everything else arrives through a link.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

# Choices whose options are files on the server (models, input images): the options in an
# offline snapshot are only what that server happened to have.
_FILE_EXT = re.compile(
    r"\.(safetensors|ckpt|pt|pth|bin|gguf|onnx|sft|pkl|png|jpe?g|webp|gif|bmp|tiff?|mp4|webm|wav|mp3|flac)$",
    re.IGNORECASE,
)


def looks_like_file(value: object) -> bool:
    """True for a string with a model/image/audio file extension."""
    return isinstance(value, str) and bool(_FILE_EXT.search(value.strip()))


@dataclass(frozen=True)
class InputSpec:
    """One input of a node type."""

    name: str
    type: str  # "COMBO" for choices, else the type name; unions look like "IMAGE,MASK"
    required: bool
    options: tuple[Any, ...] | None = None  # for COMBO only
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES

    @property
    def is_file(self) -> bool:
        """A choice among files on the server. An empty option list counts: a server without
        any model of that kind lists none."""
        if self.type != "COMBO":
            return False
        if self.config.get("image_upload") or self.config.get("video_upload") or self.config.get("audio_upload"):
            return True
        opts = self.options or ()
        return not opts or any(looks_like_file(o) for o in opts)

    @property
    def is_image_upload(self) -> bool:
        return self.type == "COMBO" and bool(self.config.get("image_upload"))

    @property
    def default(self) -> Any:
        return self.config.get("default")

    @property
    def minimum(self) -> float | None:
        return self.config.get("min")

    @property
    def maximum(self) -> float | None:
        return self.config.get("max")

    @property
    def types(self) -> frozenset[str]:
        """The type as a set; ComfyUI writes unions as comma-separated names."""
        return frozenset(t.strip() for t in self.type.split(",") if t.strip())


@dataclass(frozen=True)
class NodeSchema:
    """One node type: inputs in ComfyUI's order (required, then optional), outputs, output flag."""

    class_type: str
    inputs: Mapping[str, InputSpec]
    hidden: frozenset[str]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool

    @property
    def widgets(self) -> list[InputSpec]:
        return [s for s in self.inputs.values() if s.is_widget]


class Schemas(Mapping[str, NodeSchema]):
    """All node types known to one server (or snapshot), each read from its ``/object_info``
    entry when first asked for: a workflow uses a dozen of the hundreds a server lists.

    ``files_listed`` says whether the file choices (checkpoints, LoRAs, images) are the
    server's real lists: True for a live ``/object_info``, False for a snapshot whose lists
    are examples — then a file missing from a list is not an error.
    """

    def __init__(self, entries: Mapping[str, Any], *, files_listed: bool) -> None:
        self._entries = {str(k): v for k, v in entries.items() if isinstance(v, Mapping)}
        self._read: dict[str, NodeSchema] = {}
        self.files_listed = files_listed

    def __getitem__(self, key: str) -> NodeSchema:
        if key not in self._read:
            self._read[key] = node_schema(key, self._entries[key])
        return self._read[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _input_spec(name: str, raw: Any, required: bool) -> InputSpec:
    """Normalise one ``[TYPE, {config}]`` entry; unknown shapes become a wildcard, never a crash."""
    if isinstance(raw, str):  # seen in hand-written schemas: just the type name
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        return InputSpec(name, "*", required)
    head = raw[0]
    config = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if isinstance(head, (list, tuple)):
        return InputSpec(name, "COMBO", required, tuple(head), config)
    if head == "COMBO":
        opts = config.get("options", ())
        return InputSpec(name, "COMBO", required, tuple(opts) if isinstance(opts, (list, tuple)) else (), config)
    return InputSpec(name, str(head), required, None, config)


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one (object_info's sections are optional)."""
    return value if isinstance(value, Mapping) else {}


def node_schema(class_type: str, info: Mapping[str, Any]) -> NodeSchema:
    """Build one NodeSchema from its ``/object_info`` entry."""
    section = _mapping(info.get("input"))
    order = _mapping(info.get("input_order"))
    inputs: dict[str, InputSpec] = {}
    for kind in ("required", "optional"):
        group = _mapping(section.get(kind))
        names = [n for n in order.get(kind, ()) if n in group] if isinstance(order.get(kind), list) else []
        names += [n for n in group if n not in names]  # input_order is missing on old servers
        for name in names:
            inputs[name] = _input_spec(str(name), group[name], kind == "required")
    hidden = _mapping(section.get("hidden"))
    outputs = tuple(str(t) if not isinstance(t, list) else "COMBO" for t in info.get("output") or ())
    output_names = info.get("output_name") or outputs
    return NodeSchema(
        class_type=class_type,
        inputs=inputs,
        hidden=frozenset(map(str, hidden)),
        outputs=outputs,
        output_names=tuple(str(n) for n in output_names),
        output_node=bool(info.get("output_node")),
    )


def schemas_from_object_info(data: Mapping[str, Any], *, files_listed: bool = True) -> Schemas:
    """Schemas from a parsed ``/object_info`` answer (what the HTTP client gets from a live server,
    hence ``files_listed=True`` by default)."""
    return Schemas(data, files_listed=files_listed)


def load_object_info(path: str | Path, *, files_listed: bool = False) -> Schemas:
    """Schemas from a saved ``/object_info`` JSON file (a snapshot: file lists are examples unless
    the caller knows the file was just fetched from the server that will run the workflow)."""
    return schemas_from_object_info(json.loads(Path(path).read_text(encoding="utf-8")), files_listed=files_listed)
