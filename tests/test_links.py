"""A task file reached through a link is the file itself: its edits, its state, its lock.

Editors, dotfile managers and shared folders put task files behind symbolic and hard links;
ralph must not replace a link with a copy, keep a second state for the same file, or let two
runs write one file because they were started under two names.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ralph.errors import LockedError
from ralph.state import RunLock, state_dir_for
from tests.engine.project import Project, make_project, task


def _names(project: Project) -> dict[str, Path]:
    """Every way the test reaches the one task file, each created here."""
    symlink = project.root / "link.md"
    symlink.symlink_to(project.file.name)
    elsewhere = project.root / "sub"
    elsewhere.mkdir()
    (elsewhere / "far.md").symlink_to(project.file)
    hardlink = project.root / "hard.md"
    os.link(project.file, hardlink)
    return {"symlink": symlink, "symlink elsewhere": elsewhere / "far.md", "hard link": hardlink}


def test_a_run_through_a_symlink_edits_the_real_file_and_keeps_the_link(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "One"), task(2, "Two"))
    link = tmp_path / "sub" / "link.md"
    link.parent.mkdir()
    link.symlink_to(project.file)
    done = project.cli("run", str(link.relative_to(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert link.is_symlink() and link.resolve() == project.file
    assert project.statuses() == {1: "DONE", 2: "DONE"}
    assert (tmp_path / ".ralph" / project.file.stem / "state.json").is_file()
    assert not (tmp_path / "sub" / ".ralph").exists() and not (tmp_path / ".ralph" / "link").exists()
    # The rerun, through the file's own name, finds the state the link's run kept.
    again = project.cli("run", project.file.name)
    assert again.returncode == 0 and len(project.ledger_lines()) == 2


@pytest.mark.parametrize("name", ["symlink", "symlink elsewhere", "hard link"])
def test_a_second_run_through_any_name_is_refused(tmp_path: Path, name: str) -> None:
    project = make_project(tmp_path, task(1, "One"))
    other = _names(project)[name]
    lock = RunLock(state_dir_for(project.file), project.file)
    lock.acquire()
    try:
        with pytest.raises(LockedError, match="already being run by"):
            Project(tmp_path, other, project.ledger).run()
    finally:
        lock.release()
    assert project.statuses() == {1: "PENDING"} and project.ledger_lines() == []


@pytest.mark.parametrize("name", ["symlink", "hard link"])
def test_two_ralph_processes_on_one_file_under_two_names(tmp_path: Path, name: str) -> None:
    """The first run is under way (its slow task started); the second, by another name, exits 2."""
    project = make_project(tmp_path, task(1, "Slow", params={"pause": 60}))
    other = _names(project)[name]
    first = project.popen("run", project.file.name)
    try:
        deadline = time.monotonic() + 60
        while not project.ledger_lines():
            assert time.monotonic() < deadline and first.poll() is None, "the first run never started its task"
            time.sleep(0.05)
        second = project.cli("run", other.name)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "already being run by" in second.stderr and "Traceback" not in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    assert len(project.ledger_lines()) == 1
