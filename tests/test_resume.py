"""A real ``ralph run`` process killed with SIGKILL at each step, then run again."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from ralph.parser import parse_file
from tests.engine.project import Project, make_project, task


def _pod_project(root: Path) -> Project:
    return make_project(
        root,
        task(1, "Create pod", params={"holds": "pod", "pause": 0.05}),
        task(2, "Set it up", params={"uses": "pod", "pause": 0.05}),
        task(3, "Generate", params={"uses": "pod", "pause": 0.05}),
        task(4, "Terminate pod", handler="release", criteria=("Pod released",)),
    )


def test_sigkill_at_each_step_then_rerun_does_every_task_exactly_once(tmp_path: Path) -> None:
    reference = _pod_project(tmp_path / "reference")
    assert reference.cli("run", reference.file.name).returncode == 0
    steps = len(reference.events())
    assert steps >= 10

    for step in range(1, steps):
        project = _pod_project(tmp_path / f"killed-at-{step}")
        process = project.popen("run", project.file.name)
        deadline = time.monotonic() + 30
        while len(project.events()) < step and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.kill()
        process.wait()
        parse_file(project.file)  # whatever the moment, the file is whole

        rerun = project.cli("run", project.file.name)
        assert rerun.returncode == 0, f"killed after event {step}: {rerun.stdout}{rerun.stderr}"
        assert project.statuses() == {1: "DONE", 2: "DONE", 3: "DONE", 4: "DONE"}, step
        work = Counter(line.split()[1] for line in project.ledger_lines() if line.startswith("task "))
        assert work == {"1": 1, "2": 1, "3": 1}, f"killed after event {step}: {project.ledger_lines()}"
        releases = [line for line in project.ledger_lines() if line.startswith("release ")]
        assert len(releases) == 1, f"the one pod was released once (killed after event {step})"
