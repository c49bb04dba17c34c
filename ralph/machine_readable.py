"""What ``--json`` prints: a run's outcomes, a file's standing, a check's problems, as plain data.

The same facts people read on the terminal, for scripts and other programs: statuses, evidence
per criterion, cost, times, what is open for review, and who holds a file's lock.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model import TaskFile
from .review import open_for_review
from .state import RunState, lock_holder, state_dir_for

if TYPE_CHECKING:
    from .handler import Problem
    from .runner import RunSummary, Verdict


def run(summary: RunSummary) -> dict[str, Any]:
    return {
        "file": str(summary.file.path),
        "exit_code": summary.exit_code,
        "cost_usd": summary.cost_usd,
        "outcomes": [
            {
                "task": o.number,
                "title": o.title,
                "status": o.status,
                "seconds": round(o.seconds, 3),
                "cost_usd": o.cost_usd,
                "summary": o.summary,
                "error": o.error,
                "files": o.files,
                "criteria": [_verdict(v) for v in o.verdicts],
            }
            for o in summary.outcomes
        ],
        "final": [_verdict(v) for v in summary.final],
        "stale": summary.stale,
        "review": [asdict(item) for item in summary.review],
        "unwritten": summary.unwritten,
    }


def _verdict(verdict: Verdict) -> dict[str, Any]:
    if verdict.evidence is None:
        return {"criterion": verdict.criterion, "verified": True, "by": "person", "detail": "ticked by a person"}
    return {"criterion": verdict.criterion, "verified": verdict.evidence.verified, "by": "ralph",
            "detail": verdict.evidence.detail}


def status(file: TaskFile, handlers: dict[int, str | None]) -> dict[str, Any]:
    """The file as written, with what its state remembers of each task's last run (times, cost,
    attempts) and whether a run holds its lock; reads only, creates nothing."""
    directory = state_dir_for(Path(file.path))
    state = RunState(directory)
    report = file.as_json(handlers)
    total = 0.0
    for task in report["tasks"]:
        record = state.data["tasks"].get(str(task["number"]), {})
        cost = record.get("result", {}).get("cost_usd")
        total += cost or 0.0
        task.update(started=record.get("started"), finished=record.get("finished"), seconds=record.get("seconds"),
                    attempts=record.get("attempts", 0), cost_usd=cost, error=record.get("error") or None)
    holder = lock_holder(directory)
    report.update(cost_usd=round(total, 6), locked=holder is not None, lock_holder=holder,
                  review=[asdict(item) for item in open_for_review(file, state)])
    return report


def problems(path: Path, found: list[Problem], tasks: int | None) -> dict[str, Any]:
    return {
        "file": str(path),
        "ok": not any(p.severity == "error" for p in found),
        "tasks": tasks,
        "problems": [{"line": p.line, "severity": p.severity, "message": p.message} for p in found],
    }
