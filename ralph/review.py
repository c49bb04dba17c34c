"""The review loop: the boxes a person has yet to tick, and a person's verdict on a task.

A NEEDS_REVIEW task waits for a person: ralph ran it but could not verify every criterion.
When every box is ticked (by the person, or verified by ralph) the next run marks it DONE;
``ralph accept FILE N`` does it at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .edits import Edit, SetCheck, SetStatus, TaskFileWriter
from .errors import RalphError
from .model import Task, TaskFile
from .state import EventLog, RunLock, RunState, state_dir_for


@dataclass
class ReviewItem:
    """A box left for a person: what to check, the evidence there is, and where to tick it."""

    task: int | None  # None: the file's Success Criteria
    criterion: str
    line: int
    evidence: str = ""
    files: list[str] = field(default_factory=list)


def open_for_review(file: TaskFile, state: RunState) -> list[ReviewItem]:
    """The boxes a person has yet to tick: those of NEEDS_REVIEW tasks, and the file's Success
    Criteria no run verified, each with the evidence ralph found when it last looked."""
    items = []
    for task in file.tasks:
        if task.status != "NEEDS_REVIEW":
            continue
        record = state.task(task.number) if str(task.number) in state.data["tasks"] else {}
        evidence, files = record.get("review", {}), record.get("result", {}).get("files", [])
        items += [ReviewItem(task.number, c.text, c.line, evidence.get(c.text, ""), list(files))
                  for c in task.criteria if not c.checked]
    evidence = state.data.get("review", {})
    items += [ReviewItem(None, c.text, c.line, evidence[c.text])
              for c in file.success_criteria if not c.checked and c.text in evidence]
    return items


def accept(path: Path, number: int) -> Task:
    """A person's verdict on a NEEDS_REVIEW task: its open boxes ticked, the task DONE."""
    directory = state_dir_for(path)
    lock = RunLock(directory, path)
    lock.acquire()
    try:
        writer = TaskFileWriter(path)
        file, _ = writer.apply([])
        task = file.task(number)
        if task is None:
            numbers = ", ".join(str(t.number) for t in file.tasks) or "none"
            raise RalphError(f"accept {number}: there is no task {number} (tasks: {numbers})", path)
        if task.status != "NEEDS_REVIEW":
            raise RalphError(f"accept {number}: task {number} is {task.status}; only a task waiting for review "
                             "(NEEDS_REVIEW) can be accepted", path, task.fields["status"].line)
        state = RunState(directory)
        accept_record(state.task(number), task)
        state.save()
        edits: list[Edit] = [SetCheck(number, c.text, True) for c in task.criteria if not c.checked]
        file, _ = writer.apply([*edits, SetStatus(number, "DONE")])
        events = EventLog(directory, "accept")
        events.write("task_accepted", task=number)
        events.close()
        return file.task(number) or task
    finally:
        lock.release()


def accept_record(record: dict[str, Any], task: Task) -> None:
    """The state of a task a person accepted: DONE, as its text reads now."""
    record.update(status="DONE", fingerprint=task.fingerprint, review={})
