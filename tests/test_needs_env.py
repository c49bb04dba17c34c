"""A variable a handler needs and that is not set (a RunPod key) is refused before anything is written:
``ralph run``, ``ralph run --dry-run`` and ``ralph check`` exit 2 naming the first task that needs it."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from tests.engine.project import Project, make_project, task

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "roadmap" / "ralph" / "RALPH-001-grain-reduction.md"
KEY_LINE = re.compile(r"RALPH-001-grain-reduction\.md:21: (error: )?task 1 \(runpod\.create\): set RUNPOD_API_KEY "
                      r"\(a RunPod API key, from https://www\.runpod\.io/console/user/settings\)")


def example_project(root: Path) -> Project:
    """The real example with its ralph.yaml, and the local model files it names (in a fake HOME)."""
    root.mkdir(parents=True)
    for name in (EXAMPLE.name, "ralph.yaml"):
        shutil.copyfile(EXAMPLE.parent / name, root / name)
    models = root / "home" / "models"
    models.mkdir(parents=True)
    for name in ("bigLove_xl1.safetensors", "elena_v4_cloud.safetensors", "elena_face_ref.jpg"):
        (models / name).write_bytes(b"x" * 1000)
    return Project(root, root / EXAMPLE.name, root / "ledger.txt")


def nowhere() -> str:
    """A loopback URL nothing listens on: where a RunPod estimate asks for prices, in vain."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v2"


def no_key(project: Project) -> dict[str, str]:
    return {"HOME": str(project.root / "home"), "RUNPOD_API_KEY": ""}


@pytest.mark.parametrize("command", [("run",), ("run", "--dry-run"), ("check",)])
def test_a_missing_runpod_key_is_refused_before_anything_is_written(tmp_path: Path, command: tuple[str, ...]) -> None:
    project = example_project(tmp_path / "project")
    before = project.file.read_bytes()
    done = project.cli(*command, project.file.name, env=no_key(project))
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert KEY_LINE.search(output), output
    assert "BLOCKED" not in output and "Traceback" not in output
    assert project.file.read_bytes() == before
    assert not (project.root / ".ralph").exists()


def test_a_task_that_would_not_run_does_not_need_the_key(tmp_path: Path) -> None:
    project = example_project(tmp_path / "project")
    # Task 3 alone needs no RunPod key (only the pod tasks do, task 1 and the clean-up task 5).
    done = project.cli("run", "--dry-run", "--only", "3", project.file.name, env=no_key(project))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RUNPOD_API_KEY" not in done.stdout


def test_finished_tasks_do_not_need_it_in_a_run_but_check_reports_them(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Needs a token", handler="needs-token", status="DONE"),
                           task(2, "Plain work"))
    environment = {"RALPH_TEST_TOKEN": ""}
    run = project.cli("run", project.file.name, env=environment)
    assert run.returncode == 0, run.stdout + run.stderr
    check = project.cli("check", project.file.name, env=environment)
    assert check.returncode == 2
    line = project.file.read_text().splitlines().index("### 1. Needs a token") + 1
    assert check.stdout.splitlines() == [
        f"{project.file.name}:{line}: error: task 1 (needs-token): set RALPH_TEST_TOKEN (a token the test gives)"
    ]


def test_one_line_per_variable_at_the_first_task_that_needs_it(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Plain"), task(2, "First", handler="needs-token"),
                           task(3, "Second", handler="needs-token"))
    before = project.file.read_bytes()
    done = project.cli("run", project.file.name, env={"RALPH_TEST_TOKEN": "  "})
    assert done.returncode == 2
    line = project.file.read_text().splitlines().index("### 2. First") + 1
    assert done.stderr.splitlines() == [
        f"ralph: {project.file.name}:{line}: task 2 (needs-token): set RALPH_TEST_TOKEN (a token the test gives)"
    ]
    assert project.file.read_bytes() == before and not (tmp_path / ".ralph").exists()
    ran = project.cli("run", project.file.name, env={"RALPH_TEST_TOKEN": "a-value-never-shown"})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "a-value-never-shown" not in ran.stdout + ran.stderr + project.file.read_text()


def test_the_key_value_is_never_printed_in_a_plan(tmp_path: Path) -> None:
    project = example_project(tmp_path / "project")
    secret = "rpa_" + os.urandom(12).hex()
    done = project.cli("run", "--dry-run", project.file.name,
                       env={"HOME": str(project.root / "home"), "RUNPOD_API_KEY": secret,
                            "RUNPOD_API_BASE_URL": nowhere()})
    assert done.returncode == 0, done.stdout + done.stderr
    assert secret not in done.stdout + done.stderr
