"""ralph's changes to a task file, applied to whatever the file says *now*.

An edit names its target by identity (task number, criterion text), never by line number,
so it can be re-applied to a file a person has edited meanwhile.  Each edit changes only
the lines it means to: one status word, one checkbox character, or ralph's own results
block.  An edit whose target is gone is reported back, not forced.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .model import RESULTS_BEGIN, RESULTS_END, CodeBlock, Criterion, Field, Item, Task, TaskFile
from .parser import CHECKBOX_LINE, STATUS_LINE, normalise, parse_bytes
from .secrets import redact
from .textfile import Text, write_atomically


@dataclass(frozen=True)
class SetStatus:
    task: int
    status: str


@dataclass(frozen=True)
class SetCheck:
    """Tick or untick a criterion; ``task`` None means the file's Success Criteria."""

    task: int | None
    criterion: str
    checked: bool


@dataclass(frozen=True)
class SetResults:
    """Replace (or add) ralph's results block of a task, or of the file when ``task`` is None."""

    task: int | None
    lines: tuple[str, ...]


Edit = SetStatus | SetCheck | SetResults


def apply_edits(file: TaskFile, text: Text, edits: list[Edit]) -> list[str]:
    """Apply ``edits`` to ``text`` (parsed as ``file``); returns the edits that found no target.

    ``file`` is updated to match the new text (statuses, ticks, moved line numbers), as a
    parse of it would say, so a long run never re-parses a file only ralph has changed.
    """
    missing: list[str] = []
    # One block per target, the last edit's: spans come from the parse, so two blocks
    # written over the same span would each use line numbers the other has moved.
    results: dict[int | None, tuple[Task | None, list[str]]] = {}
    for edit in edits:
        task = file.task(edit.task) if edit.task is not None else None
        if edit.task is not None and task is None:
            missing.append(f"task {edit.task} is no longer in the file")
            continue
        if isinstance(edit, SetStatus):
            assert task is not None
            _set_status(text, task, edit.status)
        elif isinstance(edit, SetCheck):
            criteria = task.criteria if task else file.success_criteria
            target = _find_criterion(criteria, edit.criterion)
            if target is None:
                where = task.label if task else "Success Criteria"
                missing.append(f"{where}: criterion {edit.criterion!r} is no longer in the file")
                continue
            _set_check(text, target, edit.checked)
        else:
            if task is None and file.results is None and _ends_in_last_task(file, text):
                # Appended there, the block would read back as the last task's own.
                missing.append("the file has no Exit Conditions section to hold ralph's summary")
                continue
            results[edit.task] = (task, [redact(line) for line in edit.lines])
    blocks = sorted(((task, *_results_span(file, task, lines)) for task, lines in results.values()), key=lambda b: b[1])
    # Blocks change the line count: apply them from the bottom up.
    for _, start, stop, lines in reversed(blocks):
        text.replace(start, stop, lines)
    _renumber(file, [(task, start, stop, len(lines)) for task, start, stop, lines in blocks])
    file.last_line = len(text.lines)
    return missing


def _set_status(text: Text, task: Task, status: str) -> None:
    index = task.fields["status"].line - 1
    found = STATUS_LINE.match(text.lines[index])
    assert found, "the parser guaranteed a status line here"
    text.lines[index] = found["prefix"] + status + found["rest"]
    task.fields["status"].value = status


def _set_check(text: Text, criterion: Criterion, checked: bool) -> None:
    index = criterion.line - 1
    found = CHECKBOX_LINE.match(text.lines[index])
    assert found, "the parser guaranteed a checkbox here"
    if (found["mark"] != " ") != checked:
        text.lines[index] = found["prefix"] + ("x" if checked else " ") + found["rest"]
        criterion.checked = checked


def _find_criterion(criteria: list[Criterion], wanted: str) -> Criterion | None:
    key = normalise(wanted)
    return next((c for c in criteria if normalise(c.text) == key), None)


def _ends_in_last_task(file: TaskFile, text: Text) -> bool:
    """Whether nothing but blank lines and rules follows the last task."""
    if not file.tasks:
        return False
    last = max(t.end_line for t in file.tasks)
    return all(not line.strip() or re.fullmatch(r" {0,3}(?:-[ \t]*){3,}", line) for line in text.lines[last:])


def _results_span(file: TaskFile, task: Task | None, lines: list[str]) -> tuple[int, int, list[str]]:
    block = [RESULTS_BEGIN, *lines, RESULTS_END]
    existing = task.results if task else file.results
    if existing:
        return existing[0] - 1, existing[1], block
    after = task.end_line if task else file.last_line
    return after, after, ["", *block]


def _renumber(file: TaskFile, blocks: list[tuple[Task | None, int, int, int]]) -> None:
    """Record in ``file`` that each ``(owner, start, stop, count)`` of ``blocks`` (in file order,
    0-based lines ``[start, stop)``) became ``count`` lines of its owner's results block: the
    block's span, its owner's end, and every line below it moved."""
    if not blocks:
        return
    stops: list[int] = []
    offsets: list[int] = []  # the move of the lines below each block, the blocks above included
    spans: list[tuple[Task | None, tuple[int, int], bool]] = []
    offset = 0
    for owner, start, stop, count in blocks:
        first = start + offset
        # A new block starts with a blank line; a replaced one starts where the old one did.
        existing = owner.results if owner else file.results
        span = (first + 1, first + count) if existing else (first + 2, first + count)
        ends_owner = owner is not None and owner.end_line <= stop  # the block is the task's last lines
        spans.append((owner, span, ends_owner))
        offset += count - (stop - start)
        stops.append(stop)
        offsets.append(offset)

    def moved(line: int) -> int:
        above = bisect_left(stops, line)  # blocks that end above this 1-based line
        return line + offsets[above - 1] if above else line

    _renumber_lines(file, moved, stops[0])
    for owner, span, ends_owner in spans:
        if owner is None:
            file.results = span
        else:
            owner.results = span
            if ends_owner:
                owner.end_line = span[1]


def _renumber_lines(file: TaskFile, moved: Callable[[int], int], first_stop: int) -> None:
    """Apply ``moved`` to every line number in ``file`` (none above ``first_stop`` moves)."""

    def span(lines: tuple[int, int] | None) -> tuple[int, int] | None:
        return None if lines is None else (moved(lines[0]), moved(lines[1]))

    file.title_line = moved(file.title_line)
    file.results = span(file.results)
    items: list[Criterion | Item | Field | CodeBlock] = [
        *file.success_criteria, *file.context.values(), *file.constraints, *file.exit_conditions
    ]
    for task in file.tasks:
        if task.end_line <= first_stop:
            continue  # wholly above every change
        task.line, task.end_line, task.results = moved(task.line), moved(task.end_line), span(task.results)
        items += [*task.fields.values(), *task.criteria, *task.code_blocks, *task.prompts.values()]
    for item in items:
        item.line = moved(item.line)


class TaskFileWriter:
    """Writes edits into a task file atomically, re-reading it first every time.

    A person may edit the file while ralph runs: their bytes are what the edits are applied
    to, and a file that changes between the read and the rename is read again.  While the
    file still holds the bytes ralph last wrote, its parse is kept and updated with the
    edits, so each write costs what it changes, not a parse of the whole file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._known: tuple[bytes, TaskFile, Text] | None = None  # bytes on disk, parsed

    def apply(self, edits: list[Edit]) -> tuple[TaskFile, list[str]]:
        for _ in range(10):
            before = self.path.read_bytes()
            file, text = self._parsed(before)
            self._known = None  # until the edited parse matches the disk again
            missing = apply_edits(file, text, edits)
            after = text.encode()
            if after == before:
                self._known = before, file, text
                return file, missing
            if self.path.read_bytes() != before:
                continue  # edited under us: apply to the new text
            write_atomically(self.path, after)
            self._known = after, file, text
            return file, missing
        raise OSError(f"{self.path} keeps changing; ralph's edits were not written")

    def _parsed(self, data: bytes) -> tuple[TaskFile, Text]:
        if self._known is not None and self._known[0] == data:
            return self._known[1], self._known[2]
        return parse_bytes(data, self.path)
