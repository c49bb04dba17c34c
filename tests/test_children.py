"""No process ralph started outlives it: not on a timeout, not on SIGKILL of ralph itself.

Each test gives the processes it expects a unique marker in their command line, waits (on a
deadline) until they run, kills ralph with SIGKILL (nothing of ralph's own code runs after
that), and waits until no process with the marker is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

from tests.engine.project import Project, make_project
from tests.far.sshd import SshServer

REPO = Path(__file__).resolve().parents[1]


def with_marker(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass  # it ended while we looked
    return found


def wait_until(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def shell_project(root: Path, script: str, criterion: str = "The script ran without error",
                  timeout: int = 3600) -> Project:
    text = f"""# RALPH-TASK: Children

## Tasks

### 1. Start children
**Status**: PENDING
**Handler**: shell
**Acceptance Criteria**:
- [ ] {criterion}

```yaml
timeout: {timeout}
```

```bash
{script}
```

## Exit Conditions
- Done
"""
    project = make_project(root)
    project.file.write_text(text)
    return project


def kill_ralph_when_running(project: Project, marker: str, count: int) -> None:
    ralph = project.popen("run", project.file.name)
    try:
        wait_until(lambda: len(with_marker(marker)) >= count, f"{count} processes hold {marker}")
    finally:
        ralph.send_signal(signal.SIGKILL)
        ralph.wait()
    wait_until(lambda: not with_marker(marker), f"no process holds {marker} (left: {with_marker(marker)})")


def test_sigkill_of_ralph_during_a_shell_step_leaves_no_process(tmp_path: Path) -> None:
    marker = f"ralph-test-{uuid.uuid4().hex}"
    script = textwrap.dedent(f"""\
        (exec -a {marker}-quiet sleep 300) > /dev/null 2>&1 < /dev/null &
        (exec -a {marker}-loud sleep 300) &
        exec -a {marker}-front sleep 300
    """)
    kill_ralph_when_running(shell_project(tmp_path, script), marker, 3)


def test_sigkill_of_ralph_during_a_criterion_command_leaves_no_process(tmp_path: Path) -> None:
    marker = f"ralph-test-{uuid.uuid4().hex}"
    command = f"(exec -a {marker}-bg sleep 300) > /dev/null 2>&1 & exec -a {marker}-fg sleep 300"
    project = shell_project(tmp_path, "true", f"`{command}` succeeds")
    kill_ralph_when_running(project, marker, 2)


def test_a_criterion_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = f"ralph-test-{uuid.uuid4().hex}"
    command = f"(exec -a {marker}-bg sleep 300) & exec -a {marker}-fg sleep 300"
    project = shell_project(tmp_path, "true", f"`{command}` succeeds", timeout=2)
    done = project.cli("run", project.file.name, timeout=120)  # a background child holding the pipe once hung it
    assert done.returncode == 3, done.stdout + done.stderr  # the criterion is left for review
    assert "check could not run: TimeoutExpired" in project.file.read_text()
    wait_until(lambda: not with_marker(marker), f"no process holds {marker}", seconds=5)


def test_a_shell_step_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = f"ralph-test-{uuid.uuid4().hex}"
    script = f"(exec -a {marker}-bg sleep 300) > /dev/null 2>&1 &\nexec -a {marker}-fg sleep 300"
    project = shell_project(tmp_path, script, timeout=2)
    done = project.cli("run", project.file.name, timeout=120)
    assert done.returncode == 1 and "timeout" in project.file.read_text()
    wait_until(lambda: not with_marker(marker), f"no process holds {marker}", seconds=5)


UPLOAD = """
import sys
from pathlib import Path
from ralph.handlers.machines.ssh import SshMachine, SshTarget

host, port, key, known, src = sys.argv[1:6]
with SshMachine(SshTarget(host, int(port), Path(key)), known_hosts=Path(known)) as machine:
    machine.put(Path(src), "uploads/" + Path(src).name, method="rsync", bwlimit=256 * 1024)
"""


def test_sigkill_during_an_upload_leaves_no_rsync_or_ssh(sshd: SshServer, tmp_path: Path) -> None:
    marker = f"ralph-test-{uuid.uuid4().hex}"
    source = tmp_path / f"{marker}.bin"
    source.write_bytes(os.urandom(16 << 20))  # at 256 KiB/s: a minute, far longer than the test waits
    uploader = subprocess.Popen(
        [sys.executable, "-c", UPLOAD, sshd.host, str(sshd.port), str(sshd.client_key), str(tmp_path / "known_hosts"),
         str(source)],
        cwd=REPO,
    )
    part = sshd.start_dir / "uploads" / f".{source.name}.ralph-part"
    try:
        wait_until(lambda: with_marker(marker) and part.exists() and part.stat().st_size > 0, "the upload is under way")
        assert _local_ssh(sshd.port), "rsync's ssh runs"
    finally:
        uploader.send_signal(signal.SIGKILL)
        uploader.wait()
    wait_until(lambda: not with_marker(marker), f"no rsync holds {marker} (left: {with_marker(marker)})")
    wait_until(lambda: not _local_ssh(sshd.port), f"no ssh to port {sshd.port} is left")


def _local_ssh(port: int) -> list[int]:
    """ssh clients to the test server (its sshd's own processes are the far side, not ours)."""
    found = []
    for pid in with_marker(str(port)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name == "ssh":
            found.append(pid)
    return found
