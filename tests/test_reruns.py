"""Reruns by meaning: what a rerun redoes, and what a handler's memory keeps when it does."""

from __future__ import annotations

from pathlib import Path

from ralph.parser import parse_file
from ralph.state import RunState, state_dir_for
from tests.engine.project import Project, make_project, task


def shell_project(root: Path, script: str, criteria: tuple[str, ...] = ("The script runs without error",)) -> Project:
    """One shell task whose bash block is ``script``; every run of it appends a line to runs.txt."""
    project = make_project(root, task(1, "Script", handler="shell", criteria=criteria))
    block = f"\n```bash\necho ran >> runs.txt\n{script}\n```\n"
    criterion = f"- [ ] {criteria[0]}\n"
    project.file.write_text(project.file.read_text().replace(criterion, criterion + block, 1))
    return project


def runs(project: Project) -> int:
    path = project.root / "runs.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_failed_script_the_person_fixes_runs_again_and_ends_done(tmp_path: Path) -> None:
    project = shell_project(tmp_path, "exit 4")
    failed = project.run()
    assert failed.exit_code == 1 and "the script exited 4" in failed.outcomes[0].error
    project.file.write_text(project.file.read_text().replace("exit 4", "exit 0"))
    fixed = project.run()
    assert runs(project) == 2
    assert fixed.exit_code == 0 and project.statuses() == {1: "DONE"}


def test_a_failed_task_runs_again_even_unchanged_its_cause_may_lie_outside_the_file(tmp_path: Path) -> None:
    project = shell_project(tmp_path, "test -e input.txt")
    assert project.run().exit_code == 1
    (tmp_path / "input.txt").write_text("the person made it\n")
    assert project.run().exit_code == 0
    assert runs(project) == 2 and project.statuses() == {1: "DONE"}


def test_only_runs_a_done_task_again(tmp_path: Path) -> None:
    project = shell_project(tmp_path, "true")
    project.run()
    summary = project.run(only=1)
    assert [o.number for o in summary.outcomes] == [1] and summary.outcomes[0].seconds > 0
    assert runs(project) == 2 and project.statuses() == {1: "DONE"}


def test_a_status_a_person_sets_back_to_pending_redoes_the_task(tmp_path: Path) -> None:
    project = shell_project(tmp_path, "true")
    project.run()
    project.file.write_text(project.file.read_text().replace("**Status**: DONE", "**Status**: PENDING"))
    assert project.run().exit_code == 0
    assert runs(project) == 2


def test_a_task_stopped_mid_run_resumes_unless_its_text_changed(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Work", status="IN_PROGRESS"))
    directory = state_dir_for(project.file)
    # What an interrupted run left: the task's handler had saved its token, its text as it ran.
    ran = parse_file(project.file)[0].tasks[0].fingerprint
    state = RunState(directory)
    state.task(1).update(status="IN_PROGRESS", fingerprint=ran, memory={"token": "resumed-token"})
    state.save()
    project.run()
    assert any(line.endswith("resumed-token") for line in project.ledger_lines()), "resumed with its memory"
    # Stopped again, but the person edits the task meanwhile: it starts from scratch.
    project.file.write_text(project.file.read_text().replace("**Status**: DONE", "**Status**: IN_PROGRESS")
                            .replace("### 1. Work", "### 1. Work, reworded"))
    state = RunState(directory)
    state.task(1).update(status="IN_PROGRESS", memory={"token": "resumed-token"})
    state.save()
    project.run()
    tokens = [line.split()[-1] for line in project.ledger_lines()]
    assert len(tokens) == 2 and tokens[1] != "resumed-token", "the edited task did its work anew"


def test_a_redone_task_keeps_only_the_memory_its_handler_remembers(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Remote", handler="remote"))
    project.run()
    first = RunState(state_dir_for(project.file)).task(1)["memory"]
    assert set(first) == {"job", "downloaded"}
    project.run(only=1)
    second = RunState(state_dir_for(project.file)).task(1)["memory"]
    assert second["job"] == first["job"], "the remote job is found again"
    assert second["downloaded"] != first["downloaded"], "the local result is made anew"
    assert project.statuses() == {1: "DONE"}
