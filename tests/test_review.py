"""The review loop: a person's tick closes a review, `ralph accept` does it from the command line,
and every run says what is still open, with the evidence and how to close it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ralph.parser import parse_file

ROADMAP = Path(__file__).resolve().parents[1] / "roadmap" / "ralph"
QUICKSTART = "RALPH-000-quickstart.md"


def quickstart(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROADMAP / QUICKSTART, root / QUICKSTART)
    shutil.copy(ROADMAP / "ralph.yaml", root / "ralph.yaml")
    return root / QUICKSTART


def ralph(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "ralph", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def statuses(file: Path) -> dict[int, str]:
    return {t.number: t.status for t in parse_file(file)[0].tasks}


def test_the_quickstart_lists_what_is_open_then_a_persons_tick_closes_it(tmp_path: Path) -> None:
    file = quickstart(tmp_path)
    first = ralph(tmp_path, "run", QUICKSTART)
    assert first.returncode == 3, first.stdout + first.stderr
    line = parse_file(file)[0].task(2).criteria[0].line
    assert "open for review (1)" in first.stdout
    assert f"👁 task 2, line {line}: The greeting reads well" in first.stdout
    assert "evidence: needs a person's review" in first.stdout
    assert f"ralph accept {QUICKSTART} 2" in first.stdout
    # Nothing left to run: ralph still says what is open, and why it exits 3.
    again = ralph(tmp_path, "run", QUICKSTART)
    assert again.returncode == 3 and f"👁 task 2, line {line}: The greeting reads well" in again.stdout
    file.write_text(file.read_text().replace("- [ ] The greeting reads well", "- [x] The greeting reads well"))
    closed = ralph(tmp_path, "run", QUICKSTART)
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert statuses(file) == {1: "DONE", 2: "DONE"}
    assert "reviewed: every box is ticked" in closed.stdout and "open for review" not in closed.stdout
    assert "greeting reads well" in file.read_text()  # the person's text is kept as written


def test_accept_ticks_the_open_boxes_and_marks_the_task_done(tmp_path: Path) -> None:
    file = quickstart(tmp_path)
    assert ralph(tmp_path, "run", QUICKSTART).returncode == 3
    done = ralph(tmp_path, "accept", QUICKSTART, "2")
    assert done.returncode == 0, done.stderr
    assert statuses(file) == {1: "DONE", 2: "DONE"}
    assert all(c.checked for c in parse_file(file)[0].task(2).criteria)
    rerun = ralph(tmp_path, "run", QUICKSTART)
    assert rerun.returncode == 0 and "open for review" not in rerun.stdout


def test_accept_refuses_a_task_that_is_not_waiting_for_review(tmp_path: Path) -> None:
    file = quickstart(tmp_path)
    before = file.read_bytes()
    refused = ralph(tmp_path, "accept", QUICKSTART, "1")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"ralph: {QUICKSTART}:19: accept 1: task 1 is PENDING; only a task waiting "
                                      "for review (NEEDS_REVIEW) can be accepted")
    missing = ralph(tmp_path, "accept", QUICKSTART, "9")
    assert missing.returncode == 2 and "there is no task 9 (tasks: 1, 2)" in missing.stderr
    assert file.read_bytes() == before
