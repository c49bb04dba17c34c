"""Reading a RALPH task file into a ``TaskFile``.

mistune finds the blocks (so a checkbox inside a code fence is code, not a criterion) and
``positions`` says where each starts; the key/value details are read from the file's own
lines.  Anything ralph could not later write back safely is an error with its line.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParseError
from .model import (
    PRIORITIES,
    RESULTS_BEGIN,
    RESULTS_END,
    STATUSES,
    CodeBlock,
    Criterion,
    Field,
    Item,
    Task,
    TaskFile,
)
from .positions import Token, parse_blocks
from .textfile import DecodeError, Text

FIELD = re.compile(r"^[ \t]*\*\*(?P<key>[^*]+?)(?::\*\*|\*\*[ \t]*:)[ \t]*(?P<value>.*?)[ \t]*$")
STATUS_LINE = re.compile(r"^(?P<prefix>[ \t]*\*\*Status(?::\*\*|\*\*[ \t]*:)[ \t]*)(?P<value>[A-Za-z_]+)(?P<rest>.*)$")
CHECKBOX = re.compile(r"^\[(?P<mark>[ xX])\](?:[ \t]+(?P<text>.*))?$", re.S)
CHECKBOX_LINE = re.compile(r"^(?P<prefix>[ \t>]*(?:[*+-]|\d{1,9}[.)])[ \t]+\[)(?P<mark>[ xX])(?P<rest>\].*)$")
TASK_HEADING = re.compile(r"^(?P<number>\d{1,6})[.)][ \t]+(?P<title>.+?)[ \t]*$")
PROMPT = re.compile(
    r"^[ \t]*(?:[*+-][ \t]+)?\**(?P<key>positive|negative)(?:[ \t]+prompt)?\**[ \t]*:\**[ \t]*(?P<value>.+?)[ \t]*$",
    re.I,
)


def normalise(text: str) -> str:
    """Text as ralph compares it (section and field names, titles, criteria, check patterns):
    lower-case, accents removed, spaces collapsed."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


# Section names as people write them, in English or French (compared normalised).
SECTIONS = {normalise(name): section for name, section in {
    "overview": "overview",
    "aperçu": "overview",
    "success criteria": "success_criteria",
    "critères de succès": "success_criteria",
    "context": "context",
    "contexte": "context",
    "tasks": "tasks",
    "tâches": "tasks",
    "constraints": "constraints",
    "contraintes": "constraints",
    "exit conditions": "exit_conditions",
    "conditions de sortie": "exit_conditions",
}.items()}


@dataclass
class _Blocks:
    """The blocks of one region of the file, flattened from mistune's tree."""

    paragraphs: list[tuple[int, str]] = field(default_factory=list)  # top level only
    items: list[tuple[int, str]] = field(default_factory=list)  # top-level list items: first line
    checkboxes: list[Criterion] = field(default_factory=list)
    code: list[CodeBlock] = field(default_factory=list)
    html_lines: set[int] = field(default_factory=set)


def parse_file(path: Path) -> tuple[TaskFile, Text]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ParseError(f"cannot read: {error.strerror}", path) from None
    return parse_bytes(data, path)


def parse_bytes(data: bytes, path: Path) -> tuple[TaskFile, Text]:
    try:
        text = Text.decode(data)
    except DecodeError as error:
        raise ParseError(str(error), path, error.line) from None
    return _Reader(path, text).read(), text


class _Reader:
    def __init__(self, path: Path, text: Text) -> None:
        self.path = path
        self.text = text
        self.code_lines: set[int] = set()
        self.html_lines: set[int] = set()  # raw HTML blocks (comments): their text is not fields

    def error(self, message: str, line: int) -> ParseError:
        return ParseError(message, self.path, line)

    def read(self) -> TaskFile:
        tokens = parse_blocks(self.text.normalised())
        headings = [t for t in tokens if t["type"] == "heading"]
        title = next((h for h in headings if h["attrs"]["level"] == 1), None)
        if title is None:
            raise self.error("no title: expected a first line like '# RALPH-TASK: <title>'", 1)
        file = TaskFile(
            path=self.path,
            title=re.sub(r"^RALPH-TASK:\s*", "", title["text"].strip()),
            title_line=title["line"] + 1,
            last_line=len(self.text.lines),
        )
        for _ in self._walk(tokens):
            pass  # collects code-fence lines, needed before reading any region
        regions = self._regions(headings)
        for (kind, heading, start, stop), blocks in zip(regions, self._blocks(tokens, regions), strict=False):
            if kind == "task":
                file.tasks.append(self._task(heading, start, stop, blocks))
            elif kind == "overview":
                file.overview = "\n".join(text for _, text in blocks.paragraphs)
            elif kind == "success_criteria":
                file.success_criteria = blocks.checkboxes
            elif kind == "context":
                file.context = self._context(blocks)
            elif kind == "constraints":
                file.constraints = [Item(text, line + 1) for line, text in blocks.items]
            elif kind == "exit_conditions":
                results = self._results_block(blocks, start, stop)
                file.results = results
                file.exit_conditions = [
                    Item(text, line + 1) for line, text in blocks.items if not _inside(line + 1, results)
                ]
        if file.results is None:
            file.results = self._trailing_results(regions)
            # Such a block may sit in any section: its lines are ralph's, not the section's.
            file.constraints = [c for c in file.constraints if not _inside(c.line, file.results)]
            file.success_criteria = [c for c in file.success_criteria if not _inside(c.line, file.results)]
        if not file.tasks and not re.match(r"RALPH-TASK:", title["text"].strip()):
            raise self.error("not a RALPH task file: no '# RALPH-TASK: <title>' line and no task "
                             "('### 1. <title>')", file.title_line)
        seen: dict[int, Task] = {}
        for task in file.tasks:
            if task.number in seen:
                raise self.error(f"task number {task.number} already used on line {seen[task.number].line}", task.line)
            seen[task.number] = task
        return file

    # -- structure ---------------------------------------------------------------------

    def _regions(self, headings: list[Token]) -> list[tuple[str, Token, int, int]]:
        """(kind, heading, first line, stop line) for each section and task, 0-based lines."""
        end = len(self.text.lines)
        has_tasks_section = any(
            h["attrs"]["level"] == 2 and SECTIONS.get(normalise(h["text"])) == "tasks" for h in headings
        )
        regions: list[tuple[str, Token, int, int]] = []
        section: str | None = None
        for index, heading in enumerate(headings):
            level = heading["attrs"]["level"]
            if level == 2:
                section = SECTIONS.get(normalise(heading["text"]))
            if level <= 2 and section and section != "tasks":
                stop = _next_heading_line(headings, index, 2, end)
                regions.append((section, heading, heading["line"], stop))
            elif level in (3, 4) and (section == "tasks" or not has_tasks_section):
                if TASK_HEADING.match(heading["text"].strip()):
                    stop = _next_heading_line(headings, index, level, end)
                    regions.append(("task", heading, heading["line"], stop))
        return regions

    def _walk(self, tokens: list[Token], depth: int = 0) -> Iterator[tuple[Token, int]]:
        """Every token with its list depth; records code and HTML block lines on the way."""
        for token in tokens:
            if token["type"] == "block_code" and "line" in token:
                self.code_lines.update(range(token["line"], token["line"] + self._code_height(token)))
            elif token["type"] == "block_html" and "line" in token:
                self.html_lines.update(range(token["line"], token["line"] + _raw_height(token)))
            yield token, depth
            children = token.get("children")
            if children:
                yield from self._walk(children, depth + (token["type"] == "list_item"))

    def _blocks(self, tokens: list[Token], regions: list[tuple[str, Token, int, int]]) -> list[_Blocks]:
        """The top-level blocks of each region, in one pass over the document."""
        starts = [start for _, _, start, _ in regions]
        found = [_Blocks() for _ in regions]
        for token in tokens:
            line = _first_line(token)
            if line is None:  # an empty list item: nothing to read
                continue
            index = bisect_right(starts, line) - 1
            if index >= 0 and line < regions[index][3]:
                self._collect(token, found[index], top_level=True)
        return found

    def _collect(self, token: Token, blocks: _Blocks, top_level: bool) -> None:
        kind = token["type"]
        if kind == "block_code":
            if token.get("style") == "fenced":
                info = (token.get("attrs") or {}).get("info", "") or ""
                blocks.code.append(CodeBlock(info.strip(), token["raw"], token["line"] + 1))
        elif kind == "block_html":
            blocks.html_lines.add(token["line"])
        elif kind == "paragraph" and top_level:
            blocks.paragraphs.append((token["line"], token["text"]))
        elif kind == "list":
            for item in token["children"]:
                self._item(item, blocks, top_level)
        elif kind == "block_quote":
            for child in token["children"]:
                self._collect(child, blocks, top_level=False)

    def _item(self, item: Token, blocks: _Blocks, top_level: bool) -> None:
        children = item["children"]
        head = children[0] if children else None
        if head is not None and head["type"] in ("block_text", "paragraph"):
            first_line = head["text"].split("\n", 1)[0]
            line = head["line"]
            box = CHECKBOX.match(first_line)
            if box and box.group("text") and line not in self.code_lines:
                if not CHECKBOX_LINE.match(self.text.lines[line]):
                    raise self.error("checkbox item ralph cannot edit in place", line + 1)
                text = " ".join(box.group("text").split())
                blocks.checkboxes.append(Criterion(text, box.group("mark") != " ", line + 1))
            elif top_level:
                blocks.items.append((line, first_line.strip()))
            children = children[1:]
        for child in children:
            self._collect(child, blocks, top_level=False)

    # -- regions -------------------------------------------------------------------------

    def _task(self, heading: Token, start: int, stop: int, blocks: _Blocks) -> Task:
        match = TASK_HEADING.match(heading["text"].strip())
        assert match
        stop = _trim_end(self.text.lines, start, stop)
        task = Task(int(match["number"]), match["title"], start + 1, stop)
        task.results = self._results_block(blocks, start, stop)
        for line in range(start + 1, stop):
            if line in self.code_lines or line in self.html_lines or _inside(line + 1, task.results):
                continue
            source = self.text.lines[line]
            found = FIELD.match(source)
            if found and found["key"].strip().lower() not in task.fields:
                key = found["key"].strip().lower()
                task.fields[key] = Field(found["key"].strip(), found["value"], line + 1)
            prompt = PROMPT.match(source)
            if prompt:
                value = prompt["value"].strip()
                if len(value) > 1 and value[0] == value[-1] == "`":
                    value = value[1:-1]
                task.prompts.setdefault(prompt["key"].lower(), Item(value, line + 1))
        self._check_fields(task)
        task.criteria = [c for c in blocks.checkboxes if not _inside(c.line, task.results)]
        task.code_blocks = [b for b in blocks.code if not _inside(b.line, task.results)]
        task.fingerprint = self._fingerprint(task, start, stop)
        return task

    def _check_fields(self, task: Task) -> None:
        status = task.fields.get("status")
        if status is None:
            raise self.error(f"{task.label} has no '**Status**: PENDING' line", task.line)
        found = STATUS_LINE.match(self.text.lines[status.line - 1])
        if not found or found["value"].upper() not in STATUSES:
            raise self.error(f"unknown status {status.value!r}; expected one of {', '.join(STATUSES)}", status.line)
        status.value = found["value"].upper()
        priority = task.fields.get("priority")
        if priority is not None:
            value = priority.value.split()[0].upper() if priority.value.split() else ""
            if value not in PRIORITIES:
                raise self.error(f"unknown priority {priority.value!r}; expected HIGH, MEDIUM or LOW", priority.line)
            priority.value = value
        handler = task.fields.get("handler")
        if handler is not None:
            handler.value = handler.value.strip("`").strip()

    def _results_block(self, blocks: _Blocks, start: int, stop: int) -> tuple[int, int] | None:
        begin = next((n for n in sorted(blocks.html_lines) if self.text.lines[n].strip() == RESULTS_BEGIN), None)
        if begin is None:
            return None
        for line in range(begin + 1, stop):
            if self.text.lines[line].strip() == RESULTS_END:
                return begin + 1, line + 1
        raise self.error(f"ralph results block has no closing '{RESULTS_END}'", begin + 1)

    def _trailing_results(self, regions: list[tuple[str, Token, int, int]]) -> tuple[int, int] | None:
        """The file's block where ralph appends it, at the end, when no Exit Conditions hold it.

        A section ralph does not know (``## Notes``) may follow Exit Conditions; the block
        appended after it must still be found, or every run would append another.  A block
        inside a task's section is that task's.
        """
        end = len(self.text.lines) - 1
        while end >= 0 and not self.text.lines[end].strip():
            end -= 1
        if end < 0 or self.text.lines[end].strip() != RESULTS_END:
            return None
        begin = next(
            (n for n in range(end - 1, -1, -1) if n in self.html_lines and self.text.lines[n].strip() == RESULTS_BEGIN),
            None,
        )
        if begin is None or any(kind == "task" and start <= begin < stop for kind, _, start, stop in regions):
            return None
        return begin + 1, end + 1

    def _code_height(self, token: Token) -> int:
        """Lines a code block spans, fences included.

        Only a closing fence that is really there counts: a fence left open inside a list
        item ends with the item, and the line after it is markdown again.
        """
        height = _raw_height(token)
        if token.get("style") != "fenced":
            return height
        height += 1  # the opening fence
        close = token["line"] + height
        marker: str = token.get("marker", "```")
        if close < len(self.text.lines) and re.fullmatch(
            rf"[ \t>]*{re.escape(marker[0])}{{{len(marker)},}}[ \t]*", self.text.lines[close]
        ):
            height += 1
        return height

    def _context(self, blocks: _Blocks) -> dict[str, Field]:
        context: dict[str, Field] = {}
        for line, text in blocks.items:
            found = FIELD.match(text)
            if found:
                context[normalise(found["key"])] = Field(found["key"].strip(), found["value"], line + 1)
        return context

    def _fingerprint(self, task: Task, start: int, stop: int) -> str:
        """A hash of the task as a person wrote it: ralph's own edits (and blank lines) do not change it."""
        digest = hashlib.sha256()
        status_line = task.fields["status"].line
        for line in range(start, stop):
            if _inside(line + 1, task.results) or line + 1 == status_line or not self.text.lines[line].strip():
                continue
            source = self.text.lines[line]
            box = CHECKBOX_LINE.match(source)
            if box and line not in self.code_lines:
                source = box["prefix"] + " " + box["rest"]
            digest.update(unicodedata.normalize("NFC", source.rstrip()).encode() + b"\n")
        return digest.hexdigest()[:16]


def _first_line(token: Token) -> int | None:
    if "line" in token:
        return int(token["line"])
    for child in token.get("children", ()):
        line = _first_line(child)
        if line is not None:
            return line
    return None


def _next_heading_line(headings: list[Token], index: int, level: int, end: int) -> int:
    for heading in headings[index + 1 :]:
        if heading["attrs"]["level"] <= level:
            return int(heading["line"])
    return end


def _trim_end(lines: list[str], start: int, stop: int) -> int:
    """The section without its trailing blank lines and ``---`` separator (1-based last line)."""
    while stop > start + 1 and (not lines[stop - 1].strip() or re.fullmatch(r" {0,3}(?:-[ \t]*){3,}", lines[stop - 1])):
        stop -= 1
    return stop


def _raw_height(token: Token) -> int:
    """Lines of a block's raw text (code without its fences, or an HTML block)."""
    raw: str = token.get("raw", "")
    return raw.count("\n") + (0 if raw.endswith("\n") or not raw else 1)


def _inside(line: int, span: tuple[int, int] | None) -> bool:
    return span is not None and span[0] <= line <= span[1]


def task_yaml(task: Task) -> tuple[dict[str, Any], dict[str, int]] | None:
    """The task's fenced ``yaml`` block as a mapping, with the file line of each key."""
    block = task.code("yaml", "yml")
    if block is None:
        return None
    import yaml

    from . import yamlnodes

    try:
        root = yamlnodes.compose(block.text)
        data = yamlnodes.construct(root) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = block.first_line + (mark.line if mark else 0)
        raise ParseError(f"invalid YAML: {getattr(error, 'problem', None) or error}", None, line) from None
    except RecursionError:
        raise ParseError("invalid YAML: nested too deeply", None, block.first_line) from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise ParseError("the yaml block must map parameter names to values", None, block.line)
    lines = {str(key.value): block.first_line + key.start_mark.line for key, _ in root.value}
    return data, lines
