"""The task's boxes and status are ralph's to write: what an agent changes there is put back.

The agent works in the task file's folder and may edit the task file itself (RALPH loops
teach agents to tick their own boxes).  Before the first iteration ralph records the task's
boxes and status; after each one it puts back those the agent changed, by identity (task
number, criterion text) through the engine's edits, so every other line the agent or a
person changed stays as they left it.
"""

from __future__ import annotations

from pathlib import Path

from ralph.edits import Edit, SetCheck, SetStatus, TaskFileWriter
from ralph.errors import ParseError
from ralph.model import Task
from ralph.parser import normalise, parse_file
from ralph.state import TaskMemory


class MarksGuard:
    """Remembers (in the task's memory, so a resumed run restores the same) and restores them."""

    def __init__(self, path: Path, number: int, memory: TaskMemory) -> None:
        self.path = path
        self.number = number
        self.memory = memory

    def record(self) -> None:
        """Take the task's boxes and status as they are now, as the ones to keep."""
        task = self._task()
        self.memory["marks"] = {
            "status": task.status,
            "boxes": {normalise(c.text): c.checked for c in task.criteria},
        }

    def restore(self) -> list[str]:
        """Put back the boxes and status the agent changed; what was put back, for people."""
        marks = self.memory["marks"]
        try:
            task = self._task()
        except ParseError as error:
            return [f"the task file does not parse ({error.message}): its boxes could not be checked"]
        edits: list[Edit] = []
        changes: list[str] = []
        if task.status != marks["status"]:
            edits.append(SetStatus(self.number, marks["status"]))
            changes.append(f"status {task.status} back to {marks['status']}")
        for criterion in task.criteria:
            kept = marks["boxes"].get(normalise(criterion.text))
            if kept is not None and criterion.checked != kept:
                edits.append(SetCheck(self.number, criterion.text, kept))
                changes.append(f"box {'un' if kept else ''}ticked again: {criterion.text}")
        if edits:
            try:
                TaskFileWriter(self.path).apply(edits)
            except ParseError as error:  # a person is mid-edit: the runner's own write comes later
                return [f"the task file does not parse ({error.message}): not restored: " + "; ".join(changes)]
        return changes

    def _task(self) -> Task:
        file, _ = parse_file(self.path)
        task = file.task(self.number)
        if task is None:
            raise ParseError(f"task {self.number} is no longer in the file", self.path, None)
        return task
