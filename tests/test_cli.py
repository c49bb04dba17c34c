"""The command line as people use it: real subprocesses, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from ralph.model import RESULTS_BEGIN
from ralph.parser import parse_file
from ralph.template import TEMPLATE
from tests.engine.project import make_project, task
from tests.repo_files import EXAMPLE

REPO = Path(__file__).resolve().parents[1]


def ralph(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ralph", *args], cwd=cwd, capture_output=True, text=True)


def test_new_creates_the_next_numbered_file_which_checks_and_runs(tmp_path: Path) -> None:
    (tmp_path / "roadmap" / "ralph").mkdir(parents=True)
    (tmp_path / "roadmap" / "ralph" / "RALPH-007-older.md").write_text("# RALPH-TASK: older\n")
    created = ralph("new", "Réduire le grain, encore", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    path = tmp_path / created.stdout.strip()
    assert path.name == "RALPH-008-reduire-le-grain-encore.md"
    assert ralph("check", str(path), cwd=tmp_path).returncode == 0
    assert ralph("run", str(path), cwd=tmp_path).returncode == 3  # task 2 is a person's to review
    file, _ = parse_file(path)
    assert [t.status for t in file.tasks] == ["DONE", "NEEDS_REVIEW"]
    again = ralph("new", "Réduire le grain, encore", cwd=tmp_path)
    assert again.stdout.strip().endswith("RALPH-009-reduire-le-grain-encore.md")


def test_new_from_copies_an_experiment_as_the_next_number_with_ralphs_results_cleared(tmp_path: Path) -> None:
    created = ralph("new", "Grain, first try", cwd=tmp_path)
    ran = tmp_path / created.stdout.strip()
    assert ralph("run", ran.name, cwd=tmp_path).returncode == 3
    before = ran.read_bytes()
    assert b"[x]" in before and RESULTS_BEGIN.encode() in before and b"**Status**: DONE" in before

    copied = ralph("new", "--from", ran.name, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    copy = tmp_path / copied.stdout.strip()
    assert copy.name == "RALPH-002-grain-first-try.md" and ran.read_bytes() == before
    text = copy.read_text("utf-8")
    assert "[x]" not in text and RESULTS_BEGIN not in text and "\n\n\n" not in text
    file, _ = parse_file(copy)
    assert [t.status for t in file.tasks] == ["PENDING", "PENDING"]
    assert text == TEMPLATE.format(title="Grain, first try"), "the person's text comes back exactly as before the run"
    assert ralph("check", copy.name, cwd=tmp_path).returncode == 0
    both = ralph("new", "Title", "--from", ran.name, cwd=tmp_path)
    assert both.returncode == 2 and "not both" in both.stderr


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Create", params={"pause": 1}), task(2, "Second"))
    before = project.file.read_bytes()
    result = project.cli("run", "--dry-run", project.file.name)
    assert result.returncode == 0, result.stderr
    assert "  1. Create → step\n     with pause=1\n  2. Second → step\n" in result.stdout
    assert "{'" not in result.stdout and "= " not in result.stdout  # no Python reprs
    assert project.file.read_bytes() == before
    assert not (tmp_path / ".ralph").exists()
    assert not project.ledger.exists()


def test_check_reports_each_problem_as_file_line_message_and_exits_2(tmp_path: Path) -> None:
    project = make_project(
        tmp_path, task(1, "Bad handler", handler="nope"), task(2, "Bad param", params={"pause": "long"})
    )
    result = project.cli("check", project.file.name)
    assert result.returncode == 2  # bad input, as `run --dry-run` says of the same file
    assert project.cli("run", "--dry-run", project.file.name).returncode == 2
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert re.match(rf"{re.escape(project.file.name)}:\d+: error: ", line), line
    assert "unknown handler 'nope'" in lines[0]
    assert "parameter 'pause' must be int or float, not str" in lines[1]
    text = project.file.read_text().splitlines()
    assert text[int(lines[1].split(":")[1]) - 1] == "pause: long"


def test_check_reports_ralph_yaml_parameters_at_their_line_there(tmp_path: Path) -> None:
    config = "params:\n  step:\n    pause: soon\ntasks:\n  2:\n    params:\n      pause: later\n      colour: blue\n"
    project = make_project(tmp_path, task(1, "First"), task(2, "Second"), config=config)
    yaml_lines = (tmp_path / "ralph.yaml").read_text().splitlines()
    result = project.cli("check", project.file.name)
    assert result.returncode == 2
    lines = result.stdout.strip().splitlines()
    assert lines and all(line.startswith("ralph.yaml:") for line in lines), lines
    for line in lines:
        number = int(line.split(":")[1])
        key = "colour" if "colour" in line else "pause"
        assert yaml_lines[number - 1].strip().startswith(f"{key}:"), (line, yaml_lines[number - 1])
    assert any("pause" in line and "First" in line for line in lines) and any("colour" in line for line in lines)
    run = project.cli("run", project.file.name)
    assert run.returncode == 2 and run.stderr.startswith("ralph: ralph.yaml:"), run.stderr


def test_check_reports_a_malformed_file_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "RALPH-001-x.md"
    path.write_text("# RALPH-TASK: x\n\n## Tasks\n\n### 1. One\n**Status**: MAYBE\n")
    result = ralph("check", path.name, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.strip() == (
        "RALPH-001-x.md:6: unknown status 'MAYBE'; "
        "expected one of PENDING, IN_PROGRESS, DONE, FAILED, BLOCKED, SKIPPED, NEEDS_REVIEW"
    )
    run = ralph("run", path.name, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"ralph: {result.stdout.strip()}"]


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = ralph("status", "nowhere.md", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "ralph: nowhere.md: cannot read: No such file or directory"


def test_handlers_lists_the_built_ins_with_their_help() -> None:
    result = ralph("handlers", cwd=REPO)
    assert result.returncode == 0
    assert re.search(r"^shell$", result.stdout, re.M)
    assert re.search(r"^manual$", result.stdout, re.M)
    assert "- timeout (default 3600): seconds before the script and everything it started are killed" in result.stdout


def test_status_shows_a_table_without_touching_the_file(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Create"), task(2, "Second"))
    project.run(only=1)
    before = project.file.read_bytes()
    result = project.cli("status", project.file.name)
    assert result.returncode == 0
    assert re.search(r"1\s+│\s+Create\s+│\s+HIGH\s+│\s+DONE\s+│\s+1/1\s+│\s+step", result.stdout), result.stdout
    assert project.file.read_bytes() == before


def test_version_is_the_installed_distributions() -> None:
    result = ralph("--version", cwd=REPO)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ralph {version('ralph')}"


def test_no_command_lists_the_commands(tmp_path: Path) -> None:
    result = ralph(cwd=tmp_path)
    assert result.returncode == 2
    for command in ("run", "status", "check", "new", "handlers"):
        assert re.search(rf"^\s+{command}\s+\S", result.stderr, re.M), (command, result.stderr)


@pytest.mark.parametrize("args", [("status", "--json"), ("status",), ("run", "--dry-run"), ("check",)])
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path, args: tuple[str, ...]) -> None:
    """`ralph status FILE --json | head`: the reader is gone before ralph writes (the pipe's read
    end is closed first, so every write fails and nothing is left to timing)."""
    path = tmp_path / EXAMPLE.name
    path.write_bytes(EXAMPLE.read_bytes())
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "ralph", *args, path.name], cwd=tmp_path, stdout=write,
                              stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1  # Python's advice for a closed pipe, and what rich does for tables
    assert path.read_bytes() == EXAMPLE.read_bytes() and not (tmp_path / ".ralph").exists()


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("check",), ("run",), ("run", "--dry-run")])
def test_a_file_that_is_not_a_task_file_is_bad_input(tmp_path: Path, command: tuple[str, ...]) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Meeting notes\n\n- [ ] call Paul\n", encoding="utf-8")
    result = ralph(*command, "notes.md", cwd=tmp_path)
    assert result.returncode == 2
    message = "notes.md:1: not a RALPH task file: no '# RALPH-TASK: <title>' line and no task ('### 1. <title>')"
    assert message in (result.stdout + result.stderr).splitlines() or f"ralph: {message}" in result.stderr.splitlines()
    assert "┏" not in result.stdout  # no empty table
    assert notes.read_text(encoding="utf-8") == "# Meeting notes\n\n- [ ] call Paul\n"
    assert not (tmp_path / ".ralph").exists()


@pytest.mark.parametrize("option", ["--only", "--from"])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_task_number_that_names_no_task_is_bad_input(tmp_path: Path, option: str, dry_run: bool) -> None:
    project = make_project(tmp_path, task(1, "Create"), task(2, "Second"))
    before = project.file.read_bytes()
    result = project.cli("run", *(["--dry-run"] if dry_run else []), option, "99", project.file.name)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"ralph: {project.file.name}: {option} 99: there is no task 99")
    assert "(tasks: 1, 2)" in result.stderr
    assert project.file.read_bytes() == before and not project.ledger.exists()
    assert not (tmp_path / ".ralph").exists()
