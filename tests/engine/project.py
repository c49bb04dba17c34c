"""Building throw-away projects (task file + ralph.yaml + handlers) for the engine tests."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from ralph.console import ConsoleReporter
from ralph.parser import parse_file
from ralph.runner import Runner, RunSummary

HANDLERS = Path(__file__).with_name("recording_handlers.py")
HEADER = """# RALPH-TASK: Engine test

## Overview
Testing the loop.

## Success Criteria
- [ ] The work is done

## Tasks

"""
FOOTER = """## Constraints
- Fast

## Exit Conditions
- The work is done
"""


def task(
    number: int,
    title: str,
    handler: str = "step",
    params: dict[str, Any] | None = None,
    criteria: tuple[str, ...] = ("The work is done",),
    status: str = "PENDING",
) -> str:
    lines = [
        f"### {number}. {title}",
        "**Priority**: HIGH",
        f"**Status**: {status}",
        f"**Handler**: {handler}",
        "**Acceptance Criteria**:",
        *[f"- [ ] {c}" for c in criteria],
    ]
    if params:
        lines += ["", "```yaml", yaml.safe_dump(params, sort_keys=True).strip(), "```"]
    return "\n".join(lines) + "\n\n---\n\n"


@dataclass
class Project:
    root: Path
    file: Path
    ledger: Path

    def run(self, **options: Any) -> RunSummary:
        os.environ["RALPH_TEST_LEDGER"] = str(self.ledger)
        output = io.StringIO()
        reporter = ConsoleReporter(Console(file=output, width=160, color_system=None))
        summary = Runner(self.file, reporter, retry_wait=0, **options).run()
        self.output = output.getvalue()
        return summary

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RALPH_TEST_LEDGER": str(self.ledger), **kwargs.pop("env", {})}
        return subprocess.run(
            [sys.executable, "-m", "ralph", *args], cwd=self.root, env=env, capture_output=True, text=True, **kwargs
        )

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        environment = {**os.environ, "RALPH_TEST_LEDGER": str(self.ledger), **(env or {})}
        return subprocess.Popen(
            [sys.executable, "-m", "ralph", *args],
            cwd=self.root,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def ledger_lines(self) -> list[str]:
        return self.ledger.read_text().splitlines() if self.ledger.exists() else []

    def statuses(self) -> dict[int, str]:
        file, _ = parse_file(self.file)
        return {t.number: t.status for t in file.tasks}

    def events(self) -> list[dict[str, Any]]:
        path = self.root / ".ralph" / self.file.stem / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def make_project(root: Path, *tasks: str, config: str = "") -> Project:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(HANDLERS, root / "recording_handlers.py")
    (root / "ralph.yaml").write_text(
        "handlers:\n"
        "  step: recording_handlers:Step\n"
        "  release: recording_handlers:Release\n"
        "  edits-the-file: recording_handlers:EditsTheFile\n"
        "  needs-token: recording_handlers:NeedsToken\n"
        "  rent: recording_handlers:Rent\n"
        "  remote: recording_handlers:Remote\n" + config,
        encoding="utf-8",
    )
    file = root / "RALPH-001-engine.md"
    file.write_text(HEADER + "".join(tasks) + FOOTER, encoding="utf-8")
    return Project(root, file, root / "ledger.txt")
