"""When the input or the machine fails ralph: one line naming the file, the right exit status,
every file whole.

Bad input (YAML of any depth or tag, in a task file or in ralph.yaml) exits 2; a failed
machine (a read-only folder, a full disk) exits 1 and says what could not be written and
what was kept.  The disks are real: small tmpfs mounts (root only: without it these tests
skip, saying so), unmounted whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ralph.parser import parse_file
from tests.engine.project import Project, make_project, task

PAGE = 4096


def one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ralph: "), done.stderr
    return lines[0]


# -- bad input ---------------------------------------------------------------------------


def test_yaml_nested_thousands_deep_in_a_task_file_is_a_one_line_error(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Deep"))
    text = project.file.read_text()
    deep = "pause: " + "[" * 5000 + "]" * 5000
    project.file.write_text(text.replace("- [ ] The work is done\n\n---",
                                         f"- [ ] The work is done\n\n```yaml\n{deep}\n```\n\n---", 1))
    before = project.file.read_bytes()
    line = one_line_error(project.cli("run", project.file.name), 2)
    # libyaml's own limit (PyYAML's pure-Python reader: Python's recursion limit, "nested too deeply")
    assert f"{project.file.name}:19: invalid YAML: exceeded maximum nesting depth" in line
    assert project.file.read_bytes() == before and not (tmp_path / ".ralph").exists()


def test_a_projects_own_handler_module_leaves_no_bytecode_and_a_syntax_error_is_one_line(tmp_path: Path) -> None:
    # Python caches compiled code beside a module; on a full disk that write can be cut short and
    # read back as damaged code on every later run: a project's own module is never cached.
    project = make_project(tmp_path, task(1, "One"))
    assert project.cli("run", project.file.name, env={"PYTHONDONTWRITEBYTECODE": ""}).returncode == 0
    assert not list(tmp_path.rglob("__pycache__")), "nothing written beside the project's handlers"
    broken = make_project(tmp_path / "broken", task(1, "One"))
    module = broken.root / "recording_handlers.py"
    lines = module.read_text().count("\n")
    module.write_text(module.read_text() + "def broken(:\n")
    before = broken.file.read_bytes()
    line = one_line_error(broken.cli("run", broken.file.name), 2)
    assert f"recording_handlers.py:{lines + 1}: " in line and "cannot be loaded" in line, line
    assert broken.file.read_bytes() == before


@pytest.mark.parametrize(
    "config, problem",
    [
        ("params:\n  step: !!python/object/apply:os.system ['touch pwned']\n", "ralph.yaml:2: invalid YAML"),
        ("tasks:\n  One: !!python/name:os.system\n", "ralph.yaml:2: invalid YAML"),
        ("params: " + "[" * 5000 + "]" * 5000 + "\n", "ralph.yaml:1: invalid YAML: exceeded maximum nesting depth"),
        ("params:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 3000)) + " " * 3000 + "v: 1\n", "ralph.yaml"),
    ],
    ids=["unknown tag in params", "unknown tag in tasks", "deep flow", "deep block"],
)
@pytest.mark.parametrize("command", ["run", "status", "check"])
def test_a_bad_ralph_yaml_is_a_one_line_error_for_every_command(tmp_path: Path, config: str, problem: str,
                                                                command: str) -> None:
    project = make_project(tmp_path, task(1, "One"))
    (tmp_path / "ralph.yaml").write_text(config)
    before = project.file.read_bytes()
    done = project.cli(command, project.file.name)
    if command == "check":  # check lists problems on stdout and exits 2 (bad input)
        assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr
        assert problem in done.stdout
    else:
        assert problem in one_line_error(done, 2)
    assert project.file.read_bytes() == before and not (tmp_path / "pwned").exists()


# -- a failed machine --------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _project(root: Path, tasks: int = 6) -> Project:
    """Tasks whose handler records its work in a ledger off the small disk: only ralph's own
    writes meet the full disk."""
    project = make_project(root, *(task(n, f"Task {n}") for n in range(1, tasks + 1)))
    project.ledger = root.parent.parent / f"ledger-{root.name}.txt"
    return project


def _remount(mount: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount)], check=True)


def _all_whole(project: Project) -> None:
    """The task file parses; state.json and every line of events.jsonl are complete JSON."""
    parse_file(project.file)
    state_dir = project.root / ".ralph" / project.file.stem
    if (state_dir / "state.json").exists():
        json.loads((state_dir / "state.json").read_text())
    if (state_dir / "events.jsonl").exists():
        for line in (state_dir / "events.jsonl").read_text().splitlines():
            json.loads(line)
    assert not list(project.root.glob(".*.ralph-tmp")) and not list(state_dir.glob(".*.ralph-tmp"))


@pytest.mark.parametrize("after_a_run", [False, True], ids=["first run", "after a run"])
def test_a_read_only_folder_is_a_one_line_error_and_nothing_changes(small_disk: Path, after_a_run: bool) -> None:
    project = _project(small_disk / "p")
    if after_a_run:
        assert project.cli("run", "--only", "1", project.file.name).returncode == 0
    before = {p: p.read_bytes() for p in small_disk.rglob("*") if p.is_file()}
    _remount(small_disk, "ro")
    try:
        line = one_line_error(project.cli("run", project.file.name), 1)
        assert line.startswith(f"ralph: {project.file.name}: cannot write .ralph/{project.file.stem}/")
        assert "Read-only file system" in line
        assert project.cli("status", project.file.name).returncode == 0
    finally:
        _remount(small_disk, "rw")
    assert {p: p.read_bytes() for p in small_disk.rglob("*") if p.is_file()} == before


def test_a_full_disk_at_every_fill_level_is_a_one_line_error_and_a_rerun_finishes(small_disk: Path) -> None:
    """Free space from nothing to what a whole run needs, a page at a time: each run either
    finishes or stops on one line naming what it could not write; the files stay whole and,
    once there is room, a rerun finishes the file."""
    filler = small_disk / "filler"
    stops = set()
    for free_pages in range(0, 16):
        root = small_disk / f"level-{free_pages}"
        project = _project(root)
        available = os.statvfs(small_disk).f_bavail * PAGE
        filler.write_bytes(b"\0" * max(0, available - free_pages * PAGE))
        done = project.cli("run", project.file.name)
        if done.returncode == 0:  # it fit
            stops.add("finished")
        else:
            line = one_line_error(done, 1)
            assert "No space left on device" in line and f"ralph: {project.file.name}: cannot write " in line
            assert "keeps" in line or "nothing was" in line
            stops.add(line.split("cannot write ")[1].split(":")[0])
        _all_whole(project)
        filler.unlink()
        again = project.cli("run", project.file.name)
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(project.statuses().values()) == {"DONE"}
        _all_whole(project)
        for path in root.rglob("*"):
            if path.is_file() and path.name != "recording_handlers.py":
                path.unlink()
    assert "finished" in stops and len(stops) >= 3, stops  # failures at several writes, and a level that fit
