"""The shell handler, here and on a held machine (``pod.shell``, over a real sshd on loopback): a
timeout kills the script with every process it started, and a failure keeps the output's last
lines as lines."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

from ralph.parser import parse_file
from tests.engine.project import Project
from tests.far.sshd import SshServer
from tests.waiting import wait_for

SCRIPT_TASK = """### {number}. Script
**Priority**: HIGH
**Status**: PENDING
**Handler**: {handler}
**Acceptance Criteria**:
- [ ] The script runs without error

```yaml
timeout: 1
```

```bash
{{script}}
```
"""

HERE = "# RALPH-TASK: Shell\n\n## Tasks\n\n" + SCRIPT_TASK.format(number=1, handler="shell")

ON_MACHINE = """# RALPH-TASK: Shell on a machine

## Tasks

### 1. Use the host
**Priority**: HIGH
**Status**: PENDING
**Handler**: machine.ssh
**Acceptance Criteria**:
- [ ] SSH accessible

```yaml
{params}
```

""" + SCRIPT_TASK.format(number=2, handler="pod.shell")


def project(root: Path, text: str) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    file = root / "RALPH-001-shell.md"
    file.write_text(text, encoding="utf-8")
    return Project(root, file, root / "ledger.txt")


def processes_named(name: str) -> list[str]:
    """Processes whose argv[0] is ``name`` (set with ``exec -a``), on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if argv0 == name.encode():
            found.append(entry.name)
    return found


def a_script_with_a_long_child(name: str) -> str:
    return f"echo started\n(exec -a {name} sleep 300) &\nwait"


def test_a_timeout_here_kills_the_script_and_its_child(tmp_path: Path) -> None:
    name = f"ralph-test-{uuid.uuid4().hex}"
    shell = project(tmp_path, HERE.format(script=a_script_with_a_long_child(name)))
    summary = shell.run()
    [outcome] = summary.outcomes
    assert outcome.status == "FAILED"
    assert "ran past its 1 s timeout and was killed with what it started" in outcome.error
    assert outcome.seconds < 10, "the run did not wait for the child's 300 s"
    wait_for(lambda: not processes_named(name), timeout=10, what="no process of the script left")


def test_a_timeout_on_the_machine_kills_the_script_and_its_child(tmp_path: Path, sshd: SshServer) -> None:
    name = f"ralph-test-{uuid.uuid4().hex}"
    params = f"host: {sshd.user}@{sshd.host}:{sshd.port}\nkey: {sshd.client_key}"
    shell = project(tmp_path / "project", ON_MACHINE.format(params=params, script=a_script_with_a_long_child(name)))
    summary = shell.run()
    outcome = summary.outcomes[1]
    assert outcome.status == "FAILED", outcome.error
    assert "ran past its 1 s timeout on machine" in outcome.error and "killed with what it started" in outcome.error
    assert outcome.seconds < 10, "the run did not wait for the child's 300 s"
    wait_for(lambda: not processes_named(name), timeout=10, what="no process of the script left on the machine")


def test_a_failed_script_keeps_its_last_lines_as_lines(tmp_path: Path) -> None:
    script = "echo one\necho '```'\necho '<!-- /ralph:results -->'\necho 'last words' >&2\nexit 3"
    shell = project(tmp_path, HERE.format(script=script))
    [outcome] = shell.run().outcomes
    assert outcome.error == "the script exited 3; its last lines:\none\n```\n<!-- /ralph:results -->\nlast words"
    text = shell.file.read_text()
    assert ("- Error: the script exited 3; its last lines:\n"
            "  > one\n  > ```\n  > <!-- /ralph:results -->\n  > last words\n") in text
    task = parse_file(shell.file)[0].tasks[0]  # the output reached no structure of the file
    assert task.status == "FAILED" and len(task.code_blocks) == 2 and len(task.criteria) == 1


def interrupt_while_running(shell: Project, name: str) -> None:
    """Ctrl-C to ralph once the script's child runs; then no process of the script is left."""
    ralph = shell.popen("run", shell.file.name)
    try:
        wait_for(lambda: processes_named(name), timeout=60, what="the script's child")
        ralph.send_signal(signal.SIGINT)
        output, _ = ralph.communicate(timeout=60)
    finally:
        if ralph.poll() is None:
            ralph.kill()
    assert ralph.returncode == 130, output
    wait_for(lambda: not processes_named(name), timeout=10, what="no process of the script left")


def test_ctrl_c_here_kills_the_script_and_its_child(tmp_path: Path) -> None:
    name = f"ralph-test-{uuid.uuid4().hex}"
    text = HERE.format(script=a_script_with_a_long_child(name)).replace("timeout: 1", "timeout: 600")
    interrupt_while_running(project(tmp_path, text), name)


def test_ctrl_c_on_the_machine_kills_the_script_and_its_child(tmp_path: Path, sshd: SshServer) -> None:
    name = f"ralph-test-{uuid.uuid4().hex}"
    params = f"host: {sshd.user}@{sshd.host}:{sshd.port}\nkey: {sshd.client_key}"
    text = ON_MACHINE.format(params=params, script=a_script_with_a_long_child(name))
    text = text.replace("timeout: 1", "timeout: 600")
    interrupt_while_running(project(tmp_path / "project", text), name)


def test_a_criterion_command_past_its_timeout_on_the_machine_is_killed_with_its_children(tmp_path: Path,
                                                                                         sshd: SshServer) -> None:
    name = f"ralph-test-{uuid.uuid4().hex}"
    params = f"host: {sshd.user}@{sshd.host}:{sshd.port}\nkey: {sshd.client_key}"
    command = f"(exec -a {name} sleep 300) & exec -a {name} sleep 300"
    text = ON_MACHINE.format(params=params, script="true").replace(
        "- [ ] The script runs without error", f"- [ ] The script runs without error\n- [ ] `{command}` succeeds")
    shell = project(tmp_path / "project", text)
    outcome = shell.run().outcomes[1]
    assert outcome.status == "NEEDS_REVIEW", outcome.error  # a check that could not finish decides nothing
    assert "check could not run: CommandTimeout" in shell.file.read_text()
    wait_for(lambda: not processes_named(name), timeout=10, what="no process of the command left on the machine")
