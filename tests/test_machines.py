"""Machines that are not rented: this machine, or an SSH host (a real sshd on loopback)."""

from __future__ import annotations

from pathlib import Path

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
    assert [c.checked for c in file.task(2).criteria] == [True, True]  # type: ignore[union-attr]
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
