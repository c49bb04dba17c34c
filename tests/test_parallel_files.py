"""``ralph run A.md B.md --jobs 2``: two task files at once, each with its own lock and state."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.engine.project import Project, make_project, task
from tests.waiting import wait_for

# Each file's task waits for the other file's task to have started: run one after the other, both fail.
MEET = '''
import time
import signal
from pathlib import Path

from ralph.handler import Handler, Param, Result, TaskFailed


class Meet(Handler):
    name = "meet"
    params = {"me": Param(str, "", "my marker"), "other": Param(str, "", "the other file's marker")}

    def run(self, ctx):
        (ctx.workdir / ctx.params["me"]).touch()
        deadline = time.monotonic() + 60
        while not (ctx.workdir / ctx.params["other"]).exists():
            if time.monotonic() > deadline:
                raise TaskFailed("the other file never started")
            time.sleep(0.05)
        return Result(summary="met")
'''


def _two_files(root: Path) -> tuple[Project, Path, Path]:
    first = make_project(root, task(1, "Meet", handler="meet", params={"me": "a.started", "other": "b.started"}),
                         config="  meet: meet_handlers:Meet\n")
    (root / "meet_handlers.py").write_text(MEET, encoding="utf-8")
    second = root / "RALPH-002-engine.md"
    second.write_text(first.file.read_text(encoding="utf-8").replace("me: a.started", "me: b.started")
                      .replace("other: b.started", "other: a.started"), encoding="utf-8")
    return first, first.file, second


def test_two_files_run_side_by_side_with_jobs_2(tmp_path: Path) -> None:
    project, first, second = _two_files(tmp_path)
    result = project.cli("run", first.name, second.name, "--jobs", "2", "--yes")
    # Both tasks met (each returns only once the other has started); nothing ticks their criteria: 3.
    assert result.returncode == 3, result.stdout + result.stderr
    for file in (first, second):
        assert "**Status**: NEEDS_REVIEW" in file.read_text(encoding="utf-8")
        assert (tmp_path / ".ralph" / file.stem / "state.json").is_file(), "each file keeps its own state"
    assert f"{first.name} │ " in result.stdout and f"{second.name} │ " in result.stdout


def test_a_failing_file_gives_the_combined_exit_status_1(tmp_path: Path) -> None:
    project, first, second = _two_files(tmp_path)
    second.write_text(second.read_text(encoding="utf-8").replace("**Handler**: meet", "**Handler**: step")
                      .replace("me: b.started", "outcome: fail").replace("other: a.started\n", ""), encoding="utf-8")
    (tmp_path / "b.started").touch()
    result = project.cli("run", first.name, second.name, "--jobs", "2", "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "**Status**: NEEDS_REVIEW" in first.read_text(encoding="utf-8")


def test_ctrl_c_reaches_every_file_and_the_run_exits_130(tmp_path: Path) -> None:
    project, first, second = _two_files(tmp_path)
    for file in (first, second):  # both wait for a marker nobody writes
        file.write_text(file.read_text(encoding="utf-8").replace("other: ", "other: never-"), encoding="utf-8")
    ralph = project.popen("run", first.name, second.name, "--jobs", "2", "--yes")
    wait_for(lambda: (tmp_path / "a.started").exists() and (tmp_path / "b.started").exists(), 60, "both files started")
    ralph.send_signal(signal.SIGINT)
    output, _ = ralph.communicate(timeout=60)
    assert ralph.returncode == 130, output
    for name in (first.name, second.name):
        assert any(line.startswith(f"{name} │ ") and "interrupted" in line for line in output.splitlines()), output
