"""What a RALPH task file says, with the line (1-based) every piece came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Statuses a person or ralph may write.  NEEDS_REVIEW: the handler did its work, but some
# criteria need a person's eyes before the task can be called DONE.
STATUSES = ("PENDING", "IN_PROGRESS", "DONE", "FAILED", "BLOCKED", "SKIPPED", "NEEDS_REVIEW")
PRIORITIES = ("HIGH", "MEDIUM", "LOW")
FINISHED = ("DONE", "NEEDS_REVIEW")  # a rerun leaves these alone

RESULTS_BEGIN = "<!-- ralph:results -->"
RESULTS_END = "<!-- /ralph:results -->"


@dataclass
class Criterion:
    """A checkbox line: ``- [ ] text``."""

    text: str
    checked: bool
    line: int


@dataclass
class Item:
    """A plain bullet (Constraints, Exit Conditions) or a ``**Key**: value`` line."""

    text: str
    line: int


@dataclass
class Field:
    key: str
    value: str
    line: int


@dataclass
class CodeBlock:
    info: str
    text: str
    line: int  # the opening fence

    @property
    def first_line(self) -> int:
        return self.line + 1

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.strip() else ""


@dataclass
class Task:
    number: int
    title: str
    line: int  # the heading
    end_line: int  # last line of the task's section
    fields: dict[str, Field] = field(default_factory=dict)
    criteria: list[Criterion] = field(default_factory=list)
    code_blocks: list[CodeBlock] = field(default_factory=list)
    prompts: dict[str, Item] = field(default_factory=dict)
    results: tuple[int, int] | None = None  # first and last line of ralph's results block
    fingerprint: str = ""  # hash of what a person wrote, to tell when a DONE task changed

    @property
    def status(self) -> str:
        return self.fields["status"].value

    @property
    def priority(self) -> str | None:
        found = self.fields.get("priority")
        return found.value if found else None

    @property
    def handler(self) -> str | None:
        found = self.fields.get("handler")
        return found.value if found else None

    @property
    def notes(self) -> str | None:
        found = self.fields.get("notes")
        return found.value if found else None

    def code(self, *languages: str) -> CodeBlock | None:
        """The first fenced block in one of ``languages``."""
        return next((b for b in self.code_blocks if b.language in languages), None)

    @property
    def label(self) -> str:
        return f"task {self.number} ({self.title})"


@dataclass
class TaskFile:
    path: Path
    title: str
    title_line: int
    overview: str = ""
    success_criteria: list[Criterion] = field(default_factory=list)
    context: dict[str, Field] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    constraints: list[Item] = field(default_factory=list)
    exit_conditions: list[Item] = field(default_factory=list)
    results: tuple[int, int] | None = None  # the file-level results block, after Exit Conditions
    last_line: int = 0

    def task(self, number: int) -> Task | None:
        return next((t for t in self.tasks if t.number == number), None)

    def as_json(self, handlers: dict[int, str | None]) -> dict[str, Any]:
        def criteria(items: list[Criterion]) -> list[dict[str, Any]]:
            return [{"text": c.text, "checked": c.checked, "line": c.line} for c in items]

        return {
            "file": str(self.path),
            "title": self.title,
            "tasks": [
                {
                    "number": t.number,
                    "title": t.title,
                    "line": t.line,
                    "status": t.status,
                    "priority": t.priority,
                    "handler": handlers.get(t.number),
                    "criteria": criteria(t.criteria),
                }
                for t in self.tasks
            ],
            "success_criteria": criteria(self.success_criteria),
            "exit_conditions": [{"text": e.text, "line": e.line} for e in self.exit_conditions],
        }
