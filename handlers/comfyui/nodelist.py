"""Read the node-list notation people write in task files into NodeSpecs that remember their lines.

The notation (one node per ``Node N:`` header, details on arrow lines below it)::

    Node 9:  ApplyInstantID (weight 0.85)
             → inputs: instantid[3,0], insightface[4,0], controlnet[6,0],
                       image[5,0], model[2,0]
             → params: steps=30, CFG=7.0, sampler=dpmpp_2m
             → outputs: model, positive, negative

``name[9,0]`` is output 0 of node 9. The parenthesised part after the type holds values in
loose forms: positional (``bigLove.safetensors``, ``832x1216``), ``key value`` (``strength 1.0``),
``key: value`` / ``key=value``, and ``POSITIVE prompt``. Nothing here knows node schemas:
matching loose names to real inputs is the compiler's job. Every item keeps its file line so
that any later error can point at it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ralph.handlers.comfyui.finding import Finding


@dataclass(frozen=True)
class Link:
    """Output ``output`` of node ``node`` — ComfyUI's ``["9", 0]``."""

    node: str
    output: int

    def to_api(self) -> list:
        return [self.node, self.output]


@dataclass(frozen=True)
class Size:
    """``832x1216``: width and height at once."""

    width: int
    height: int


@dataclass(frozen=True)
class PromptRef:
    """``POSITIVE prompt``: the task's ``Positive:`` (or ``Negative:``) line."""

    which: str  # "positive" | "negative"


@dataclass(frozen=True)
class Item:
    """One value as written: ``name`` is None for a positional value."""

    name: str | None
    value: Any  # Link | Size | PromptRef | str | int | float | bool
    line: int
    text: str
    section: str  # "args" (in the parentheses), "inputs", "params" or "outputs"


@dataclass
class NodeSpec:
    """One ``Node N:`` entry. ``items`` holds args, inputs and params in file order;
    ``outputs`` only documents what the author expects to come out."""

    node_id: str
    class_type: str
    line: int
    title: str | None = None
    items: list[Item] = field(default_factory=list)
    outputs: list[Item] = field(default_factory=list)


class ParsedNodeList(NamedTuple):
    nodes: list[NodeSpec]
    problems: list[Finding]


_ARROW = r"(?:→|->|-->|=>|⇒|➜|➔)"
_HEADER = re.compile(r"^\s*node\s+([^\s:]+)\s*:\s*(.*?)\s*$", re.IGNORECASE)
_SECTION = re.compile(rf"^\s*{_ARROW}\s*([A-Za-z_]+)\s*:\s*(.*?)\s*$")
_BARE_ARROW = re.compile(rf"^\s*{_ARROW}")
_NODE_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
_CLASS = re.compile(r"^([A-Za-z_][\w.+\- ]*?)\s*(?=\(|#|\s[-–—:|]\s|:\s|$)")
_LINK = re.compile(r"^\[\s*[\"']?([A-Za-z0-9_.\-]+)[\"']?\s*,\s*([-+]?\d+)\s*\]$")
_NAMED_LINK = re.compile(r"^([A-Za-z_][\w ]*?)\s*[=:]?\s*(\[.*\])$")
_KEY_VALUE = re.compile(r"^([A-Za-z_][\w .\-]*?)\s*[=:]\s*(.*)$")
_KEY_NUMBER = re.compile(r"^([A-Za-z_][\w ]*?)\s+([-+]?(?:\d+\.?\d*|\.\d+))$")
_SIZE = re.compile(r"^(\d+)\s*[x×X*]\s*(\d+)$")
_PROMPT = re.compile(r"^(positive|negative|pos|neg)(?:\s+prompt)?$", re.IGNORECASE)
_INT = re.compile(r"^[-+]?\d+$")
_FLOAT = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?$")
_SECTIONS = {
    "inputs": "inputs", "input": "inputs", "in": "inputs", "links": "inputs",
    "params": "params", "param": "params", "parameters": "params", "widgets": "params", "settings": "params",
    "outputs": "outputs", "output": "outputs", "out": "outputs",
}
_CLOSE = {"(": ")", "[": "]", "{": "}"}


def parse_node_list(text: str, first_line: int) -> ParsedNodeList:
    """Parse a node list. ``first_line`` is the 1-based file line of ``text``'s first line
    (the line after the opening fence). Never raises on bad input: what cannot be read
    becomes a Finding on its line."""
    nodes: list[NodeSpec] = []
    problems: list[Finding] = []
    seen: dict[str, int] = {}
    node: NodeSpec | None = None
    section: str | None = None  # open section that an indented line may continue
    skipped = False  # the last header was unreadable or a duplicate: its detail lines have no node
    for offset, raw in enumerate(text.splitlines()):
        line = first_line + offset
        stripped = raw.strip()
        if not stripped:
            section = None
            continue
        if stripped.startswith(("#", "//")):
            continue
        header = _HEADER.match(raw)
        if header:
            node, section = _parse_header(header.group(1), header.group(2), line, problems), None
            skipped = node is None
            if node is None:
                continue
            if node.node_id in seen:
                problems.append(Finding(line, node.node_id, node.class_type, None,
                                        f"node {node.node_id} is defined twice (first on line {seen[node.node_id]})",
                                        code="duplicate-node"))
                node, skipped = None, True
                continue
            seen[node.node_id] = line
            nodes.append(node)
            continue
        match = _SECTION.match(raw)
        if match:
            name = _SECTIONS.get(match.group(1).lower())
            if node is None:
                where = "belongs to a `Node` line that could not be read" if skipped \
                    else "comes before any `Node N:` line"
                problems.append(Finding(line, None, None, None, f"this line {where}", code="syntax"))
                section = None
            elif name is None:
                problems.append(Finding(line, node.node_id, node.class_type, None,
                                        f"unknown section {match.group(1)!r} (expected inputs, params or outputs)",
                                        code="syntax"))
                section = None
            else:
                section = name
                _add_items(node, section, match.group(2), line, problems)
            continue
        if section is not None and node is not None and raw[:1].isspace() and not _BARE_ARROW.match(raw):
            _add_items(node, section, stripped, line, problems)
            continue
        problems.append(Finding(line, node.node_id if node else None, node.class_type if node else None, None,
                                "cannot read this line: expected `Node N: Type`, `→ inputs: …`, `→ params: …` "
                                "or `→ outputs: …`", code="syntax"))
        section = None
    if not nodes and not problems:
        problems.append(Finding(first_line, None, None, None, "no `Node N: Type` line found", code="syntax"))
    return ParsedNodeList(nodes, problems)


def _parse_header(node_id: str, rest: str, line: int, problems: list[Finding]) -> NodeSpec | None:
    if not _NODE_ID.match(node_id):
        problems.append(Finding(line, None, None, None, f"bad node id {node_id!r} (use letters, digits, _ . -)",
                                code="syntax"))
        return None
    match = _CLASS.match(rest)
    if not match or not match.group(1).strip():
        problems.append(Finding(line, node_id, None, None, f"no node type after `Node {node_id}:`", code="syntax"))
        return None
    class_type = match.group(1).strip()
    node = NodeSpec(node_id, class_type, line)
    tail = rest[match.end():].lstrip()
    if tail.startswith("("):
        end = _closing(tail, 0)
        if end < 0:
            problems.append(Finding(line, node_id, class_type, None, "unclosed `(` after the node type",
                                    code="syntax"))
            return node
        _add_items(node, "args", tail[1:end], line, problems)
        tail = tail[end + 1:].strip()
    if tail:
        node.title = f"{class_type} {tail}"
    return node


def _closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (quotes respected), or -1."""
    stack: list[str] = []
    quote = ""
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif stack and ch == stack[-1]:
            stack.pop()
            if not stack:
                return i
    return -1


def split_items(text: str) -> tuple[list[str], str | None]:
    """Split on commas outside brackets and quotes. Returns the pieces and an error message
    when brackets or quotes do not balance (the pieces are then best effort)."""
    pieces: list[str] = []
    stack: list[str] = []
    quote = ""
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'`" and (i == 0 or not text[i - 1].isalnum()):  # an apostrophe inside a word is not a quote
            quote = ch
        elif ch in _CLOSE:
            stack.append(_CLOSE[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch:
                return [text], f"unbalanced {ch!r}"
        elif ch == "," and not stack:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    if quote:
        return pieces, f"unclosed quote {quote}"
    if stack:
        return pieces, f"unclosed {'([{'[')]}'.index(stack[-1])]!r}"
    return pieces, None


def _add_items(node: NodeSpec, section: str, text: str, line: int, problems: list[Finding]) -> None:
    pieces, error = split_items(text)
    if error:
        problems.append(Finding(line, node.node_id, node.class_type, None, f"cannot read {text!r}: {error}",
                                code="syntax"))
        return
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue  # trailing comma before a continuation line
        if section == "outputs":
            name = re.sub(r"\s*\(.*\)\s*$", "", piece).strip()  # "latent (noisy)": the note is a comment
            node.outputs.append(Item(name or piece, None, line, piece, section))
            continue
        item = parse_item(piece, line, section)
        if isinstance(item, str):
            problems.append(Finding(line, node.node_id, node.class_type, None, item, code="syntax"))
        else:
            node.items.append(item)


def parse_item(piece: str, line: int, section: str) -> Item | str:
    """One comma-separated piece → an Item, or an error message."""
    piece = piece.strip()
    named_link = _NAMED_LINK.match(piece)
    if named_link:
        value = parse_value(named_link.group(2))
        if not isinstance(value, Link):
            return f"{piece!r}: a link is written name[node, output], e.g. model[9,0]"
        return Item(named_link.group(1).strip(), value, line, piece, section)
    if _PROMPT.match(piece):
        which = "positive" if piece.lower().startswith("pos") else "negative"
        return Item(None, PromptRef(which), line, piece, section)
    key_value = _KEY_VALUE.match(piece)
    if key_value and not _SIZE.match(piece):
        if not key_value.group(2).strip():
            return f"{piece!r}: no value after {key_value.group(1).strip()!r}"
        return Item(key_value.group(1).strip(), parse_value(key_value.group(2)), line, piece, section)
    key_number = _KEY_NUMBER.match(piece)
    if key_number:
        return Item(key_number.group(1).strip(), parse_value(key_number.group(2)), line, piece, section)
    value = parse_value(piece)
    if isinstance(value, str) and value.startswith("["):
        return f"{piece!r}: a link is written name[node, output], e.g. model[9,0]"
    return Item(None, value, line, piece, section)


def parse_value(text: str) -> Any:
    """A written value → Link, Size, bool, int, float or str (quotes removed)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        return text[1:-1]
    link = _LINK.match(text)
    if link:
        return Link(link.group(1), int(link.group(2)))
    size = _SIZE.match(text)
    if size:
        return Size(int(size.group(1)), int(size.group(2)))
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text
