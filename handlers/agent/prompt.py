"""What the agent is told at each iteration: the task, the file around it, and what happened.

Each iteration is a fresh process with no memory: the prompt is all it knows.  It holds the
task section as a person wrote it (title, criteria, fields, code blocks, prompts), the file's
Overview, Context and Constraints, what earlier tasks recorded, and ralph's notes on every
earlier iteration: what ralph verified, what still fails and why, how the agent's output ended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ralph.model import Task, TaskFile

_OWN_FIELDS = ("status", "handler")  # ralph's bookkeeping, not the task's content
_NOTE_TAIL = 8  # lines of an earlier iteration's output the prompt repeats
_DATA_CHARS = 400  # of an earlier task's recorded data


def build_prompt(file: TaskFile, task: Task, *, file_name: str, iteration: int, max_iterations: int,
                 notes: list[dict[str, Any]], results: Mapping[int, dict[str, Any]]) -> str:
    parts = [
        f"# Task {task.number} of \"{file.title}\": {task.title}",
        f"You are iteration {iteration} (of at most {max_iterations}) of an agent working on task {task.number} of "
        f"the task file `{file_name}`, in its folder (your working directory). Do the work the task describes.\n\n"
        "After you exit, ralph checks each acceptance criterion itself: the paths it names must exist, the "
        "commands it names must succeed, and \"without error\" means you exit 0. What you say is not evidence. "
        "ralph alone ticks the boxes and sets the status: do not edit the task's checkboxes or **Status** line "
        "(ralph puts them back).",
        "## The task\n\n" + _task_section(task),
    ]
    if file.overview.strip():
        parts.append("## Overview of the task file\n\n" + file.overview.strip())
    if file.context:
        parts.append("## Context\n\n" + "\n".join(f"- **{f.key}**: {f.value}" for f in file.context.values()))
    if file.constraints:
        parts.append("## Constraints\n\n" + "\n".join(f"- {c.text}" for c in file.constraints))
    earlier = _earlier_results(file, task, results)
    if earlier:
        parts.append("## What earlier tasks recorded\n\n" + earlier)
    if notes:
        parts.append("## Progress so far (ralph's notes on earlier iterations)\n\n"
                     + "\n\n".join(map(_render_note, notes)))
    return "\n\n".join(parts) + "\n"


def _task_section(task: Task) -> str:
    lines = [f"### {task.number}. {task.title}"]
    lines += [f"**{f.key}**: {f.value.strip()}" for name, f in task.fields.items()
              if name not in _OWN_FIELDS and f.value.strip()]
    lines.append("**Acceptance Criteria**:")
    lines += [f"- [{'x' if c.checked else ' '}] {c.text}" for c in task.criteria]
    params = task.code("yaml", "yml")  # the handler's parameters, ralph's to read
    for block in task.code_blocks:
        if block is not params:
            lines += ["", f"```{block.info}", block.text.rstrip("\n"), "```"]
    if task.prompts:
        lines.append("")
        lines += [f"- {kind.capitalize()}: {item.text}" for kind, item in task.prompts.items()]
    return "\n".join(lines)


def _earlier_results(file: TaskFile, task: Task, results: Mapping[int, dict[str, Any]]) -> str:
    lines = []
    for number in sorted(n for n in results if n < task.number):
        earlier = file.task(number)
        title = earlier.title if earlier else "(no longer in the file)"
        record = results[number]
        line = f"- Task {number} ({title}): {record.get('summary') or 'no summary'}"
        if record.get("data"):
            data = json.dumps(record["data"], ensure_ascii=False, sort_keys=True)
            line += f"; data: {data if len(data) <= _DATA_CHARS else data[:_DATA_CHARS] + '…'}"
        lines.append(line)
    return "\n".join(lines)


def _render_note(note: dict[str, Any]) -> str:
    """An earlier iteration, as ralph saw it."""
    if note["exit_code"] is None:
        ended = f"killed at its timeout after {note['seconds']:.0f} s"
    else:
        ended = f"the agent exited {note['exit_code']} after {note['seconds']:.1f} s"
    lines = [f"### Iteration {note['number']} ({ended})"]
    lines += [f"- verified by ralph: {text}" for text in note["verified"]]
    lines += [f"- still fails: {text} — {why}" for text, why in note["failing"].items()]
    lines += [f"- left for a person's review: {text}" for text in note["review"]]
    lines += [f"- ralph undid your change to the task file: {change}" for change in note["restored"]]
    if note["unlogged_bytes"]:
        lines.append(f"- your output ran past ralph's log limit: {note['unlogged_bytes']} bytes were not logged")
    if note["tail"]:
        tail = note["tail"][-_NOTE_TAIL:]
        fence = _fence_for(tail)
        lines += ["- your output ended with:", fence, *tail, fence]
    return "\n".join(lines)


def _fence_for(lines: list[str]) -> str:
    """A code fence longer than any run of backticks in ``lines`` (an agent's output is often markdown)."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)
