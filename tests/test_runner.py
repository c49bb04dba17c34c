"""The loop: statuses, criteria, clean-up after failures, retries, resume, locks, secrets."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from ralph.errors import LockedError, RalphError
from ralph.parser import parse_file
from ralph.state import RunLock, state_dir_for
from tests.engine.project import make_project, task
from tests.waiting import wait_for


def test_a_run_does_each_task_ticks_verified_criteria_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "First"), task(2, "Second"))
    summary = project.run()
    assert summary.exit_code == 0
    assert project.statuses() == {1: "DONE", 2: "DONE"}
    file, _ = parse_file(project.file)
    assert all(c.checked for t in file.tasks for c in t.criteria)
    assert file.success_criteria[0].checked, "the file-level criterion is verified by a done task's check"
    assert len(project.ledger_lines()) == 2
    before = project.file.read_bytes()
    again = project.run()
    assert again.outcomes == [] and again.exit_code == 0
    assert project.file.read_bytes() == before
    assert len(project.ledger_lines()) == 2


def test_after_a_failure_the_rest_is_skipped_but_clean_up_still_runs(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        task(1, "Create", params={"holds": "pod"}),
        task(2, "Break", params={"outcome": "fail"}),
        task(3, "Never reached"),
        task(4, "Terminate", handler="release", criteria=("Pod released",)),
    )
    summary = project.run()
    assert summary.exit_code == 1
    assert project.statuses() == {1: "DONE", 2: "FAILED", 3: "SKIPPED", 4: "DONE"}
    assert any(line.startswith("release ") for line in project.ledger_lines())
    text = project.file.read_text()
    assert "Error: the work did not succeed" in text
    assert "skipped: task 2 failed" in text


def test_a_rerun_after_a_failure_redoes_the_tasks_whose_resource_was_released(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        task(1, "Create", params={"holds": "pod"}),
        task(2, "Work on it", params={"uses": "pod", "outcome": "fail"}),
        task(3, "Terminate", handler="release", criteria=("Pod released",)),
    )
    project.run()
    # The person fixes task 2; the pod task 1 made was terminated by task 3, so 1 runs again.
    project.file.write_text(project.file.read_text().replace("outcome: fail", "outcome: ok"))
    summary = project.run()
    assert [o.number for o in summary.outcomes] == [1, 2, 3]
    assert project.statuses() == {1: "DONE", 2: "DONE", 3: "DONE"}
    assert summary.exit_code == 0


def test_a_criterion_no_check_covers_is_left_for_review_not_ticked(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Look", criteria=("The work is done", "Les couleurs sont belles")))
    summary = project.run()
    assert summary.exit_code == 3
    file, _ = parse_file(project.file)
    done, colours = file.tasks[0].criteria
    assert done.checked and not colours.checked
    assert file.tasks[0].status == "NEEDS_REVIEW"
    assert "👁 review: Les couleurs sont belles — needs a person's review" in project.file.read_text()


def test_a_criterion_a_check_finds_unmet_fails_the_task(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Impossible", criteria=("Never true",)))
    assert project.run().exit_code == 1
    assert project.statuses() == {1: "FAILED"}
    assert "criterion not met: Never true" in project.file.read_text()


def test_a_criterion_a_person_ticked_counts_as_reviewed(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Look", criteria=("The work is done", "Les couleurs sont belles")))
    project.file.write_text(project.file.read_text().replace("- [ ] Les couleurs", "- [x] Les couleurs"))
    assert project.run().exit_code == 0
    assert project.statuses() == {1: "DONE"}


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Flaky", params={"outcome": "flaky"}))
    assert project.run().exit_code == 0
    retries = [e for e in project.events() if e["event"] == "retry"]
    assert len(retries) == 2


def test_a_blocked_task_stops_the_run(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Blocked", params={"outcome": "block"}), task(2, "After"))
    assert project.run().exit_code == 1
    assert project.statuses() == {1: "BLOCKED", 2: "SKIPPED"}


def test_a_second_run_of_the_same_file_is_refused_naming_the_holder(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "One"))
    lock = RunLock(state_dir_for(project.file), project.file)
    lock.acquire()
    try:
        with pytest.raises(LockedError, match=rf"already being run by pid {os.getpid()}"):
            project.run()
    finally:
        lock.release()
    assert project.statuses() == {1: "PENDING"}


def test_only_and_from_select_tasks(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "One"), task(2, "Two"), task(3, "Three"))
    project.run(only=2)
    assert project.statuses() == {1: "PENDING", 2: "DONE", 3: "PENDING"}
    project.run(start_from=3)
    assert project.statuses() == {1: "PENDING", 2: "DONE", 3: "DONE"}


def test_a_done_task_whose_text_changed_is_reported_stale_not_redone(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "One"), task(2, "Two", params={"outcome": "fail"}))
    project.run()
    text = project.file.read_text().replace("### 1. One", "### 1. One, reworded")
    project.file.write_text(text.replace("outcome: fail", "outcome: ok"))
    summary = project.run()
    assert summary.stale == [1]
    assert "task 1 changed since it was done" in project.output
    assert [o.number for o in summary.outcomes] == [2]


def test_a_persons_edit_made_during_the_run_is_kept(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Edit", handler="edits-the-file", criteria=()), task(2, "After"))
    assert project.run().exit_code == 0
    text = project.file.read_text()
    assert "A line a person added during the run." in text
    assert project.statuses() == {1: "DONE", 2: "DONE"}


def test_bad_input_is_one_line_naming_file_and_line_and_touches_nothing(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "One", handler="no-such-handler"))
    before = project.file.read_bytes()
    result = project.cli("run", project.file.name)
    assert result.returncode == 2
    line = project.file.read_text().splitlines().index("**Handler**: no-such-handler") + 1
    [message] = result.stderr.splitlines()
    assert message.startswith(f"ralph: {project.file.name}:{line}: unknown handler 'no-such-handler'; known: ")
    assert {"shell", "manual", "step"} <= set(message.split("known: ")[1].split(", "))
    assert project.file.read_bytes() == before
    assert not (tmp_path / ".ralph").exists()


def test_an_unknown_parameter_is_reported_at_its_yaml_block(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "One", params={"colour": "blue"}))
    with pytest.raises(RalphError) as raised:
        project.run()
    assert "unknown parameter 'colour' for step" in str(raised.value)
    assert project.file.read_text().splitlines()[raised.value.line - 1] == "colour: blue"


def test_secrets_never_reach_the_file_the_state_the_log_or_the_terminal(tmp_path: Path) -> None:
    secret = "rpa_SECRET0123456789abcdef"
    project = make_project(tmp_path, task(1, "Leak", handler="shell", criteria=("`out.txt` exists",)))
    project.file.write_text(
        project.file.read_text().replace(
            "- [ ] `out.txt` exists\n",
            "- [ ] `out.txt` exists\n\n"
            "```bash\necho \"$RUNPOD_API_KEY\" > out.txt\necho key=$RUNPOD_API_KEY\nexit 3\n```\n"
        )
    )
    result = project.cli("run", project.file.name, env={"RUNPOD_API_KEY": secret})
    assert result.returncode == 1
    assert (tmp_path / "out.txt").read_text().strip() == secret, "the script itself did get the key"
    assert secret not in result.stdout + result.stderr
    assert "***" in project.file.read_text()
    for path in (tmp_path / ".ralph").rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in project.file.read_text()


def test_ctrl_c_keeps_the_task_in_progress_runs_clean_up_and_the_rerun_resumes(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        task(1, "Create", params={"holds": "pod"}),
        task(2, "Long", params={"pause": 30}),
        task(3, "Terminate", handler="release", criteria=("Pod released",)),
    )
    process = project.popen("run", project.file.name)
    # Task 2 did its work and is in its pause: the moment to press Ctrl-C.
    wait_for(lambda: any(line.startswith("task 2 ") for line in project.ledger_lines()), what="task 2's work")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 130, output
    assert project.statuses() == {1: "DONE", 2: "IN_PROGRESS", 3: "DONE"}
    assert sum(line.startswith("release") for line in project.ledger_lines()) == 1
    # The rerun redoes task 1 (its pod was released), resumes task 2, cleans up again.
    assert project.run().exit_code == 0
    assert project.statuses() == {1: "DONE", 2: "DONE", 3: "DONE"}
    task_2_work = [line for line in project.ledger_lines() if line.startswith("task 2 ")]
    assert len(task_2_work) == 1, "task 2's work was done once, then resumed, not redone"


def test_a_finished_file_whose_pod_was_released_is_not_run_again(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        task(1, "Create", params={"holds": "pod"}),
        task(2, "Work on it", params={"uses": "pod"}),
        task(3, "Terminate", handler="release", criteria=("Pod released",)),
    )
    assert project.run().exit_code == 0
    before = project.file.read_bytes()
    again = project.run()
    assert again.outcomes == [] and again.exit_code == 0
    assert project.file.read_bytes() == before
    assert sum(line.startswith("task 1 ") for line in project.ledger_lines()) == 1


def test_a_box_ralph_ticked_is_re_verified_when_its_task_runs_again_not_taken_as_a_persons(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Write", handler="shell", criteria=("`out.txt` exists",)))
    project.file.write_text(
        project.file.read_text().replace("- [ ] `out.txt` exists\n",
                                         "- [ ] `out.txt` exists\n\n```bash\ntouch out.txt\n```\n")
    )
    project.run()
    assert parse_file(project.file)[0].tasks[0].criteria[0].checked
    # The evidence is gone, and the script run again no longer makes it.
    (tmp_path / "out.txt").unlink()
    project.file.write_text(project.file.read_text().replace("touch out.txt", "true"))
    project.run(only=1)
    task_1 = parse_file(project.file)[0].tasks[0]
    assert task_1.status == "FAILED" and not task_1.criteria[0].checked
    assert "✘ not met: `out.txt` exists" in project.file.read_text()
