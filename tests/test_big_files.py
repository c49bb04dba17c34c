"""Big task files cost what ralph changes in them, not their size times their tasks.

Speed itself is measured by bench/big_file.py; these tests hold the properties that make it
linear, whatever the machine's load: a run parses the file a fixed number of times, Ctrl-C
marks every remaining task in one write, a megabyte criterion is not matched by regex.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

import ralph.edits
import ralph.parser
from ralph.model import RESULTS_BEGIN
from ralph.parser import parse_file
from tests.engine.project import make_project, task


def test_a_long_run_parses_its_file_a_fixed_number_of_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path, *(task(n, f"Task {n}") for n in range(1, 201)))
    reads = []
    original = ralph.parser._Reader.read
    monkeypatch.setattr(ralph.parser._Reader, "read", lambda self: reads.append(1) or original(self))  # type: ignore[func-returns-value]
    summary = project.run()
    assert summary.exit_code == 0 and set(project.statuses().values()) == {"DONE"}
    assert len(reads) <= 3, f"{len(reads)} parses for 200 tasks"  # the plan, the writer's first read


def test_a_persons_edit_during_a_long_run_is_kept_and_parsed_again(tmp_path: Path) -> None:
    """The parse ralph keeps is dropped as soon as the bytes on disk are not its own."""
    project = make_project(tmp_path, *(task(n, f"Task {n}", params={"pause": 0.3} if n == 2 else None)
                                       for n in range(1, 4)))
    def edit_while_task_2_runs() -> None:
        deadline = time.monotonic() + 30
        while len(project.ledger_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        text = project.file.read_text()
        project.file.write_text(text.replace("### 3. Task 3", "A note a person added.\n\n### 3. Task 3"))

    editor = threading.Thread(target=edit_while_task_2_runs)
    editor.start()
    summary = project.run()
    editor.join()
    assert summary.exit_code == 0 and project.statuses() == {1: "DONE", 2: "DONE", 3: "DONE"}
    text = project.file.read_text()
    assert text.count("A note a person added.\n") == 1 and text.count(RESULTS_BEGIN) == 4  # 3 tasks, the file
    assert all(t.results is not None for t in parse_file(project.file)[0].tasks)


def test_sigterm_marks_every_remaining_task_in_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = make_project(tmp_path, task(1, "Slow", params={"pause": 60}),
                           *(task(n, f"Task {n}") for n in range(2, 301)))
    writes: list[float] = []
    original = ralph.edits.write_atomically  # type: ignore[attr-defined]  # patched where edits looks it up
    def timed_write(path: Path, data: bytes) -> None:
        writes.append(time.monotonic())
        original(path, data)
    monkeypatch.setattr(ralph.edits, "write_atomically", timed_write)
    signalled: list[float] = []

    def terminate_when_task_1_works() -> None:
        deadline = time.monotonic() + 30
        while not project.ledger_lines() and time.monotonic() < deadline:
            time.sleep(0.01)
        signalled.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_when_task_1_works)
    killer.start()
    summary = project.run()
    killer.join()
    assert summary.exit_code == 130
    statuses = project.statuses()
    assert statuses[1] == "IN_PROGRESS" and {statuses[n] for n in range(2, 301)} == {"SKIPPED"}
    after = [t for t in writes if t >= signalled[0]]
    assert len(after) == 3, after  # task 1's note, the 299 skipped tasks, the file's summary


def test_a_megabyte_criterion_is_left_for_review_not_matched(tmp_path: Path) -> None:
    criterion = "`x` " * 250_000 + "exists"
    text = (
        "# RALPH-TASK: Long line\n\n## Tasks\n\n### 1. One\n**Status**: PENDING\n**Handler**: shell\n"
        f"**Acceptance Criteria**:\n- [ ] {criterion}\n\n```bash\ntrue\n```\n\n## Exit Conditions\n- Done\n"
    )
    project = make_project(tmp_path)
    project.file.write_text(text)
    done = project.cli("run", project.file.name, timeout=120)  # the regex took minutes on this line
    assert done.returncode == 3, done.stdout + done.stderr
    file, _ = parse_file(project.file)
    assert file.tasks[0].status == "NEEDS_REVIEW" and not file.tasks[0].criteria[0].checked


def test_state_json_made_from_kept_records_is_the_whole_state_with_secrets_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each save encodes only the task that changed; the file must still be all of it, exactly."""
    import json

    from ralph import secrets
    from ralph.state import RunState

    state = RunState(tmp_path)
    state.task(1)["memory"] = {"a": [1, "é"]}
    state.task(10)["x"] = 1
    state.data["resources"]["pod"] = {"tasks": None, "value": "v", "users": [1]}
    state.save(1)
    state.task(10)["x"] = 2
    state.save(10)
    assert (tmp_path / "state.json").read_text() == json.dumps(state.data, ensure_ascii=False, sort_keys=True)
    monkeypatch.setenv("RALPH_TEST_TOKEN", "s3cr3t-value")
    secrets.refresh()  # as a run does when it starts: the secrets are read once per run
    state.task(2)["memory"] = {"said": "the key is s3cr3t-value"}
    state.save(2)
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["tasks"]["2"]["memory"]["said"] == "the key is ***" and saved["tasks"]["10"] == {"x": 2}
    assert RunState(tmp_path).data == saved
