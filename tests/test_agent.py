"""The ``agent`` handler against stand-in agent CLIs (tests/far/agent_cli.py): ralph, not the
agent, decides what is done; its loop ends; a killed run goes on where it stopped."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ralph.errors import RalphError
from ralph.parser import parse_file
from ralph.plan import make_plan
from tests.engine.project import Project, make_project
from tests.waiting import wait_for

AGENT_CLI = Path(__file__).parent / "far" / "agent_cli.py"

FILE = """# RALPH-TASK: Agent test

## Overview
Build the nightly report for the team.

## Success Criteria
- [ ] The work is done

## Context
- **Tool**: printf, nothing fancier

## Tasks

### 1. Prepare
**Priority**: HIGH
**Status**: PENDING
**Handler**: step
**Acceptance Criteria**:
- [ ] The work is done

---

### 2. Write the report
**Priority**: HIGH
**Status**: PENDING
**Handler**: agent
**Acceptance Criteria**:
{criteria}

**Notes**: Write `ready` into the report

```bash
printf 'ready\\n' > report.txt
env > agent-env.txt
```

```yaml
{params}
```

---

## Constraints
- Never touch the production database

## Exit Conditions
- The work is done
"""
CRITERIA = ("`report.txt` exists", "`grep -q ready report.txt` succeeds", "Runs without error")


def agent_project(root: Path, mode: str, criteria: tuple[str, ...] = CRITERIA, **params: Any) -> Project:
    project = make_project(root)
    settings = {"command": [sys.executable, str(AGENT_CLI), mode], **params}
    project.file.write_text(
        FILE.format(criteria="\n".join(f"- [ ] {c}" for c in criteria), params=yaml.safe_dump(settings).strip()),
        encoding="utf-8",
    )
    return project


def agent_task(project: Project) -> Any:
    return parse_file(project.file)[0].task(2)


def memory(project: Project) -> dict[str, Any]:
    path = project.root / ".ralph" / project.file.stem / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {"tasks": {}}
    return state["tasks"].get("2", {}).get("memory", {})


def logs(project: Project, suffix: str = ".log") -> list[Path]:
    return sorted((project.root / ".ralph" / project.file.stem).glob(f"task-2-iteration-*{suffix}"))


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie that nothing runs in any more."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


def test_an_honest_agent_is_done_with_the_boxes_ralph_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PASSED_ON", "yes")
    monkeypatch.setenv("PERSONAL_NOT_PASSED", "private")
    project = agent_project(tmp_path, "honest", env=["AGENT_PASSED_ON"])
    summary = project.run()
    assert summary.exit_code == 0, project.output
    task = agent_task(project)
    assert task.status == "DONE"
    assert all(c.checked for c in task.criteria)
    assert (tmp_path / "report.txt").read_text() == "ready\n"
    assert len(memory(project)["notes"]) == 1
    seen = dict(line.split("=", 1) for line in (tmp_path / "agent-env.txt").read_text().splitlines() if "=" in line)
    assert seen["AGENT_PASSED_ON"] == "yes" and "PATH" in seen
    assert "PERSONAL_NOT_PASSED" not in seen and "RALPH_TEST_LEDGER" not in seen, "nothing else of the environment"


def test_criteria_ralph_cannot_check_leave_the_task_for_review(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "honest", criteria=(*CRITERIA, "The report reads well"))
    assert project.run().exit_code == 3, project.output
    task = agent_task(project)
    assert task.status == "NEEDS_REVIEW"
    assert [c.checked for c in task.criteria] == [True, True, True, False]
    assert len(memory(project)["notes"]) == 1


def test_the_budget_stops_the_round(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "crash", budget_s=0.01)
    assert project.run().exit_code == 1
    assert agent_task(project).status == "FAILED"
    assert len(memory(project)["notes"]) == 1
    assert "stopped: budget_s (0.01 s) spent; tried `" in project.file.read_text()
    assert "agent_cli.py crash` 1 time(s)" in project.file.read_text()


def test_the_prompt_holds_the_task_its_criteria_and_the_files_context(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "idle", stall_iterations=2)
    project.run()
    first, second = (path.read_text() for path in logs(project, ".prompt.md"))
    for expected in ("Write the report", *CRITERIA, "Write `ready` into the report", "printf 'ready\\n' > report.txt",
                     "Build the nightly report for the team", "**Tool**: printf, nothing fancier",
                     "Never touch the production database", "RALPH-001-engine.md"):
        assert expected in first, expected
    assert "Task 1 (Prepare): work " in first, "what the earlier task recorded"
    assert "command:" not in first, "the handler's own parameters are ralph's, not the task's"
    assert "Progress so far" not in first
    # The second iteration is told what the first did and what still fails, and why.
    assert "### Iteration 1 (the agent exited 0" in second
    assert "still fails: `report.txt` exists — report.txt does not exist" in second
    assert "Looking at the task" in second


def test_a_liar_is_not_done_and_its_ticks_and_status_are_undone(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "liar")
    summary = project.run()
    assert summary.exit_code == 1
    task = agent_task(project)
    assert task.status == "FAILED"
    # Its ticks were undone; ralph ticks what its own checks saw: the agent did exit 0.
    assert {c.text: c.checked for c in task.criteria} == {CRITERIA[0]: False, CRITERIA[1]: False, CRITERIA[2]: True}
    text = project.file.read_text()
    assert "**Notes**: (agent: all done) (agent: all done) Write" in text, "the agent's other edit stays"
    assert "stopped: 2 iteration(s) in a row verified no new criterion" in text
    assert "ralph undid the agent's changes to the task's boxes or status after 2 iteration(s)" in text
    undone = [e for e in project.events() if e["event"] == "agent_edits_undone"]
    assert len(undone) == 2 and "status DONE back to IN_PROGRESS" in undone[0]["changes"]
    assert "ralph put back" in project.output


def test_an_idle_agent_is_stopped_after_stall_iterations_with_a_diagnosis(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "idle", stall_iterations=3, max_iterations=10)
    assert project.run().exit_code == 1
    assert agent_task(project).status == "FAILED"
    assert len(logs(project)) == 3
    text = project.file.read_text()
    assert "stopped: 3 iteration(s) in a row verified no new criterion; tried `" in text
    assert "agent_cli.py idle` 3 time(s) (logs: .ralph/RALPH-001-engine/task-2-iteration-1.log … -3.log)" in text
    assert "never verified: `report.txt` exists (report.txt does not exist)" in text
    assert "the last time the agent exited 0: Looking at the task" in text


def test_a_crashing_agent_fails_even_when_ralph_can_check_nothing(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "crash", criteria=("The report reads well",))
    assert project.run().exit_code == 1
    assert agent_task(project).status == "FAILED"
    assert "the last time the agent exited 3: " in project.file.read_text()
    assert "RuntimeError: the agent crashed" in project.file.read_text()


def test_a_hanging_agent_is_killed_at_its_timeout_with_all_it_started(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "hang", iteration_timeout_s=5, max_iterations=1)
    assert project.run().exit_code == 1
    assert agent_task(project).status == "FAILED"
    assert "the last time the agent was killed at its timeout" in project.file.read_text()
    pids = [int(p) for p in (tmp_path / "hang-pids.txt").read_text().split()]
    wait_for(lambda: all(gone(pid) for pid in pids), what="the agent and its child to die")


def test_ctrl_c_kills_the_agent_and_keeps_the_task_in_progress(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "hang")
    process = project.popen("run", project.file.name)
    pid_file = tmp_path / "hang-pids.txt"
    wait_for(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2, what="the agent to start")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert agent_task(project).status == "IN_PROGRESS"
    pids = [int(p) for p in pid_file.read_text().split()]
    wait_for(lambda: all(gone(pid) for pid in pids), what="the agent and its child to die")


def test_a_flood_of_output_is_logged_within_bounds_and_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ralph.handlers.agent.process import LOG_LIMIT

    secret = "agent-secret-0123456789"
    monkeypatch.setenv("AGENT_SECRET_TOKEN", secret)
    project = agent_project(tmp_path, "flood", env=["AGENT_SECRET_TOKEN"])
    assert project.run().exit_code == 0, project.output
    assert agent_task(project).status == "DONE"
    [log] = logs(project)
    assert log.stat().st_size < LOG_LIMIT + 64 * 1024
    text = log.read_text()
    assert "more bytes of output not logged" in text and "running the task's bash block" in text
    for path in [project.file, *(tmp_path / ".ralph").rglob("*")]:
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert secret not in project.output


def test_an_agent_that_succeeds_on_its_third_try_is_done_after_three_iterations(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "third-try", stall_iterations=3)
    assert project.run().exit_code == 0, project.output
    assert agent_task(project).status == "DONE"
    assert (tmp_path / "agent-tries.txt").read_text().split() == ["1", "2", "3"]
    assert len(memory(project)["notes"]) == 3


def test_a_run_killed_between_iterations_goes_on_at_the_next(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "third-try", stall_iterations=3)
    process = project.popen("run", project.file.name)
    wait_for(lambda: memory(project).get("notes"), what="the first iteration's notes")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert project.run().exit_code == 0, project.output
    assert agent_task(project).status == "DONE"
    tries = (tmp_path / "agent-tries.txt").read_text().split()
    # Killed during iteration 2 at the latest: that one may run again, the first never does.
    assert tries[0] == "1" and tries.count("1") == 1 and tries[-1] == "3", tries
    assert [n["number"] for n in memory(project)["notes"]] == [1, 2, 3]


def test_a_rerun_after_a_stop_starts_a_new_round(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "idle", stall_iterations=1)
    project.run()
    project.file.write_text(project.file.read_text().replace(", idle]", ", honest]").replace("- idle\n", "- honest\n"))
    assert project.run().exit_code == 0, project.output
    # The task's text changed (its command): a task edited after a stop is redone from scratch (issue 10),
    # so the new round starts at iteration 1; an unedited task continues (the SIGKILL test above).
    assert [n["number"] for n in memory(project)["notes"]] == [1]


def test_default_handler_runs_tasks_with_no_mapping(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "honest")
    project.file.write_text(project.file.read_text().replace("**Handler**: agent\n", ""))
    with open(tmp_path / "ralph.yaml", "a", encoding="utf-8") as config:
        config.write("default_handler: agent\n")
    assert make_plan(project.file).step(2).handler_name == "agent"
    assert project.run().exit_code == 0, project.output


def test_a_bad_default_handler_is_reported_at_its_line(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "honest")
    lines = (tmp_path / "ralph.yaml").read_text().splitlines()
    (tmp_path / "ralph.yaml").write_text("\n".join([*lines, "default_handler: [agent]"]) + "\n")
    with pytest.raises(RalphError) as raised:
        make_plan(project.file)
    assert raised.value.line == len(lines) + 1 and "default_handler: expected a handler's name" in raised.value.message


def test_an_unknown_preset_is_a_problem_before_anything_runs(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "honest")
    project.file.write_text(project.file.read_text().replace("command:", "command: gpt-helper\nunused:"))
    problems = make_plan(project.file).step(2).problems
    assert problems, "an unknown key or preset must be reported"


def test_an_agent_that_is_not_installed_blocks_the_task(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "honest")
    text = project.file.read_text()
    start = text.index("```yaml\n") + len("```yaml\n")
    end = text.index("```", start)
    project.file.write_text(text[:start] + "command: [no-such-agent-cli-here]\n" + text[end:])
    assert project.run().exit_code == 1
    assert agent_task(project).status == "BLOCKED"
    assert "cannot start the agent `no-such-agent-cli-here`" in project.file.read_text()


def test_what_the_agent_leaves_running_dies_with_its_iteration(tmp_path: Path) -> None:
    project = agent_project(tmp_path, "honest")
    project.file.write_text(project.file.read_text().replace(
        "env > agent-env.txt\n", "sleep 300 &\necho $! > background.pid\n"))
    assert project.run().exit_code == 0, project.output
    pid = int((tmp_path / "background.pid").read_text())
    wait_for(lambda: gone(pid), what="the agent's background process to die")
