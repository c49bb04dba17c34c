"""Machines that are not rented: this machine, or an SSH host (a real sshd on loopback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ralph.exits import REVIEW as EXIT_REVIEW
from ralph.parser import parse_file
from tests.engine.project import Project
from tests.far.sshd import SshServer

TASKS = """# RALPH-TASK: On my own machine

## Tasks

### 1. Use the machine
**Priority**: HIGH
**Status**: PENDING
**Handler**: {machine}
**Acceptance Criteria**:
- [ ] SSH accessible

```yaml
{params}
```

---

### 2. Work there
**Priority**: HIGH
**Status**: PENDING
**Handler**: pod.shell
**Acceptance Criteria**:
- [ ] Script runs sans erreur
- [ ] `made/it.txt` exists

```bash
mkdir -p made && printf '%s' "$(pwd)" > made/it.txt
```

---

### 3. Let it go
**Priority**: LOW
**Status**: PENDING
**Handler**: machine.release
**Acceptance Criteria**:
- [ ] Machine released

## Exit Conditions
- Done
"""


def _project(root: Path, machine: str, params: str) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    file = root / "RALPH-001-mine.md"
    file.write_text(TASKS.format(machine=machine, params=params), encoding="utf-8")
    return Project(root, file, root / "ledger.txt")


def test_a_file_runs_on_this_machine_in_its_workspace(tmp_path: Path) -> None:
    project = _project(tmp_path, "machine.local", "workspace: box")
    project.run()
    file, _ = parse_file(project.file)
    assert [t.status for t in file.tasks] == ["NEEDS_REVIEW", "DONE", "DONE"]
    # "SSH accessible" means nothing locally: left for review, not ticked; the work itself verified.
    assert [c.checked for c in file.task(2).criteria] == [True, True]
    assert (tmp_path / "box" / "made" / "it.txt").read_text() == str(tmp_path / "box")


def test_a_file_runs_on_an_ssh_host_with_its_key_pinned(tmp_path: Path, sshd: SshServer) -> None:
    params = f"host: {sshd.user}@{sshd.host}:{sshd.port}\nkey: {sshd.client_key}"
    project = _project(tmp_path / "project", "machine.ssh", params)
    project.run()
    file, _ = parse_file(project.file)
    assert [t.status for t in file.tasks] == ["DONE", "DONE", "DONE"]
    assert all(c.checked for t in file.tasks[:2] for c in t.criteria)
    assert Path(sshd.start_dir, "made", "it.txt").read_text() == str(sshd.start_dir)
    known_hosts = (tmp_path / "project" / ".ralph" / project.file.stem / "known_hosts").read_text()
    assert sshd.host_key_pub.read_text().split()[1] in known_hosts
    assert "Error" not in project.file.read_text()


def test_an_ssh_host_that_does_not_answer_fails_the_task_and_holds_nothing(tmp_path: Path, sshd: SshServer) -> None:
    port = sshd.port
    sshd.stop()
    params = f"host: root@127.0.0.1:{port}\nkey: {sshd.client_key}"
    project = _project(tmp_path / "project", "machine.ssh", params)
    summary = project.run()
    assert summary.exit_code == 1
    file, _ = parse_file(project.file)
    assert [t.status for t in file.tasks] == ["FAILED", "SKIPPED", "DONE"]
    assert "no machine to release" in project.file.read_text()


WITHOUT_SSH = """\
import sys

class NoSshStack:  # as if paramiko, fabric and invoke were not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("paramiko", "fabric", "invoke"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoSshStack())
from ralph.cli import main
sys.exit(main())
"""

LOCAL_EVALUATION = """# RALPH-TASK: Grain on my own machine

## Tasks

### 1. Use the machine
**Priority**: HIGH
**Status**: PENDING
**Handler**: machine.local
**Acceptance Criteria**:
- [ ] Machine answers

```yaml
workspace: box
```

---

### 2. Make a picture there
**Priority**: HIGH
**Status**: PENDING
**Handler**: pod.shell
**Acceptance Criteria**:
- [ ] Script runs sans erreur

```bash
cp ref.png picture.png
```

---

### 3. Evaluate it
**Priority**: HIGH
**Status**: PENDING
**Handler**: images.evaluate
**Acceptance Criteria**:
- [ ] Image téléchargée dans `evaluated/`
- [ ] Qualité visage maintenue

```yaml
images: [box/picture.png]
face_reference: ref.png
python: {python}
```

## Exit Conditions
- Done
"""


def test_machine_local_shell_and_evaluate_run_without_the_ssh_stack(tmp_path: Path) -> None:
    """paramiko, fabric and invoke made unimportable: this machine needs none of them, and the
    face measure runs in its workspace (the images go to a folder inside it, not /tmp)."""
    from tests.test_images_evaluate import fake_insightface, save, scene

    save(tmp_path / "box" / "ref.png", scene(seed=3))
    fake_insightface(tmp_path / "site")
    python = tmp_path / "python-with-insightface"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    file = tmp_path / "RALPH-001-local.md"
    file.write_text(LOCAL_EVALUATION.format(python=python), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", WITHOUT_SSH, "run", file.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_REVIEW, done.stdout + done.stderr  # no check for "Machine answers"
    parsed, _ = parse_file(file)
    assert [t.status for t in parsed.tasks] == ["NEEDS_REVIEW", "DONE", "DONE"], file.read_text()
    assert all(c.checked for c in parsed.task(3).criteria)
    text = file.read_text()
    assert "ArcFace similarity to the reference 1.000" in text
    assert (tmp_path / "box" / "ralph-face" / "picture.png").is_file(), "copied inside the workspace"
