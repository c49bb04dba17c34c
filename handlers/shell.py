"""``shell``: run the task's fenced ``bash`` block here, or on the machine a task holds.

One handler for both places (``on``; ``pod.shell`` is this handler with ``on: machine``).
Either way the script runs under ``bash -e -o pipefail`` as the leader of its own process
group, and its timeout or a Ctrl-C kills the whole group, not just bash: here through
``ralph.children``, on the machine by a ``kill`` of the group over the same connection.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ralph import children
from ralph.context import Context, EstimateContext
from ralph.handler import BACKTICKED, Estimate, Evidence, Handler, Param, Problem, Result, TaskFailed, criterion
from ralph.model import Task, TaskFile
from ralph.secrets import redact

from . import checks

if TYPE_CHECKING:
    from ralph.handlers.machines.base import CommandResult

_TAIL_LINES = 5
PLACES = ("here", "machine")


class ShellHandler(Handler):
    """Run the task's ```bash block (bash -e -o pipefail) here, in the task file's folder, or with
    ``on: machine`` on the machine a task holds (runpod.create, machine.ssh, machine.local), in its
    workspace.

    The timeout (and Ctrl-C) kills the script with every process it started.  Its output goes to
    .ralph/<file>/task-N.log; when it fails, the error keeps its last lines.  A script that exited
    is not run again when the run resumes after an interruption; it is when the task is redone
    (failed, edited, --only) or its machine is a new one.  Criteria it verifies, where the script
    ran: a backticked path that "exists" (or is created, written, saved, installed, downloaded); a
    backticked command that "succeeds" (run again to check it); "without error" / "sans erreur"
    (the script exited 0).
    """

    name = "shell"
    params = {
        "on": Param(str, "here", "where the script runs: here, or machine (the one a task holds)", choices=PLACES),
        "timeout": Param((int, float), 3600, "seconds before the script and everything it started are killed"),
        "env": Param(dict, {}, "extra environment variables for the script (on a machine, not for secrets)"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        if task.code("bash", "sh", "shell") is None:
            return [Problem(task.line, f"{task.label}: {self.name} needs a ```bash block")]
        return []

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        where = "here" if params["on"] == "here" else "on the machine"
        return Estimate((f"runs {script_summary(task)} {where}",))

    def run(self, ctx: Context) -> Result:
        block = ctx.task.code("bash", "sh", "shell")
        if block is None:
            raise TaskFailed("no ```bash block to run")
        place = _place(ctx)
        memory = ctx.memory
        if memory.get("ran_on") != place.id or "exit_code" not in memory:
            memory.pop("exit_code", None)
            memory["ran_on"] = place.id
            log = ctx.state_dir / f"task-{ctx.task.number}.log"
            ctx.log(f"running the bash block of line {block.line}{place.on} (log: {ctx.display_path(log)})")
            code = place.run_script(block.text, log)
            memory["tail"] = _tail(log)
            memory["exit_code"] = code
        code, tail = memory["exit_code"], memory.get("tail", "")
        if code != 0:
            raise TaskFailed(_with_tail(f"the script exited {code}{place.on}", tail))
        return Result(summary=f"the script exited 0{place.on}", data={"exit_code": code, "ran_on": place.id})

    @criterion(r"`[^`]+`.*\b(exist|cree|created|present|saved|sauvegard|ecrit|written|genere|installe|installed"
               r"|uploade|uploaded|telecharge|downloaded)")
    def path_exists(self, ctx: Context, result: Result, text: str) -> Evidence:
        return _place(ctx).path_evidence(BACKTICKED.search(text).group(1))  # type: ignore[union-attr]

    @criterion(r"`[^`]+`.*\b(succeed|pass|reussi|returns 0|exit 0|ok\b)")
    def command_succeeds(self, ctx: Context, result: Result, text: str) -> Evidence:
        command = BACKTICKED.search(text).group(1)  # type: ignore[union-attr]
        place = _place(ctx)
        code, output = place.run_command(command)
        last = redact(output).strip().splitlines()
        return Evidence(code == 0, f"`{command}` exited {code}{place.on}" + (f": {last[-1]}" if last else ""))

    @criterion(r"sans erreur|without (an )?error|exit code 0|succeeds|runs")
    def script_succeeded(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(result.data.get("exit_code") == 0, f"the script exited {result.data.get('exit_code')}")


def script_summary(task: Task) -> str:
    """``its bash block (line 30, 3 lines): `mkdir -p out` …``: what a plan says a script does."""
    block = task.code("bash", "sh", "shell")
    if block is None:
        return "no bash block"
    commands = [line.strip() for line in block.text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    first = commands[0] if commands else ""
    first = first if len(first) <= 60 else first[:59] + "…"
    more = f" … (+{len(commands) - 1} more)" if len(commands) > 1 else ""
    return f"its bash block (line {block.line}): `{first}`{more}"


class _Place(Protocol):
    id: str  # what a resume compares: a script that ran on another machine runs again
    on: str  # " on machine X" for messages; "" here

    def run_script(self, script: str, log: Path) -> int: ...

    def run_command(self, command: str) -> tuple[int, str]: ...

    def path_evidence(self, path: str) -> Evidence: ...


def _place(ctx: Context) -> _Place:
    return _Here(ctx) if ctx.params["on"] == "here" else _OnMachine(ctx)


class _Here:
    id, on = "here", ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run_script(self, script: str, log: Path) -> int:
        """The script's output redacted line by line into ``log`` (a script may echo a key)."""
        timeout = self.ctx.params["timeout"]
        deadline = time.monotonic() + timeout
        with open(log, "w", encoding="utf-8") as out, children.running(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.ctx.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(self.ctx.params["env"]),
        ) as process:
            # A daemon, started inside the try: a Ctrl-C at any moment leaves no timer for ralph's exit to wait on.
            timer = threading.Timer(timeout, children.kill, (process,))
            timer.daemon = True
            try:
                timer.start()
                assert process.stdout is not None
                for raw in process.stdout:
                    out.write(redact(raw.decode("utf-8", "replace")))
                code = process.wait()
            finally:
                timer.cancel()
        if time.monotonic() >= deadline:
            raise TaskFailed(_with_tail(f"the script ran past its {timeout} s timeout and was killed with what it "
                                        "started", _tail(log)))
        return code

    def run_command(self, command: str) -> tuple[int, str]:
        return checks.run_here(self.ctx, command, _environment(self.ctx.params["env"]), self.ctx.params["timeout"])

    def path_evidence(self, path: str) -> Evidence:
        return checks.path_evidence(self.ctx, path)


class _OnMachine:
    """The held machine, over its connection (SSH, or this machine for machine.local)."""

    def __init__(self, ctx: Context) -> None:
        from ralph.handlers.machines import session

        self.ctx = ctx
        self.handle, self.machine = session.connect(ctx)
        self.id, self.on = self.handle.id, f" on machine {self.handle.id}"

    def run_script(self, script: str, log: Path) -> int:
        from ralph.handlers.machines import remote_shell
        from ralph.handlers.machines.base import CommandTimeout, MachineError

        timeout = self.ctx.params["timeout"]
        env = {str(k): str(v) for k, v in self.ctx.params["env"].items()}
        try:
            done = self._in_group(remote_shell.join("bash", "-e", "-o", "pipefail", "-c", script), env)
        except CommandTimeout as error:
            log.write_text(redact(error.partial.stdout + error.partial.stderr), encoding="utf-8")
            raise TaskFailed(_with_tail(f"the script ran past its {timeout} s timeout{self.on} and was killed with "
                                        "what it started", _tail(log))) from None
        except MachineError as error:
            raise TaskFailed(f"machine {self.handle.id}: {error}; run again to rerun the script") from None
        log.write_text(redact(done.stdout + done.stderr), encoding="utf-8")
        return done.exit_code

    def run_command(self, command: str) -> tuple[int, str]:
        from ralph.handlers.machines import remote_shell

        # Past the timeout: killed, and the check could not run.
        done = self._in_group(remote_shell.join("bash", "-c", command), {})
        return done.exit_code, done.stdout + done.stderr

    def _in_group(self, command: str, env: dict[str, str]) -> CommandResult:
        """``command`` as the leader of its own process group on the machine (sshd starts each
        command in a new session); the group's id is written first, so that a timeout or Ctrl-C
        kills the whole group, not just the shell."""
        from ralph.handlers.machines import remote_shell
        from ralph.handlers.machines.base import CommandTimeout, MachineError

        group_file = remote_shell.quote(f"/tmp/ralph-{uuid.uuid4().hex}.pgid")
        try:
            done = self.machine.run(f"echo $$ > {group_file}; exec {command}", check=False,
                                    timeout=self.ctx.params["timeout"], env=env)
        except CommandTimeout:
            self._kill_group(group_file)
            raise
        except MachineError:
            raise  # the connection is gone: nothing to reach the group with
        except BaseException:  # Ctrl-C: the command must not go on without ralph
            self._kill_group(group_file)
            raise
        self.machine.run(f"rm -f -- {group_file}", check=False, timeout=30)
        return done

    def _kill_group(self, group_file: str) -> None:
        try:
            self.machine.run(f'g=$(cat -- {group_file}) && kill -KILL -- "-$g"; rm -f -- {group_file}', check=False,
                             timeout=30)
        except Exception as error:  # noqa: BLE001 (the connection is gone: the machine's own clean-up applies)
            self.ctx.log(f"could not kill the script on machine {self.handle.id}: {error}")

    def path_evidence(self, path: str) -> Evidence:
        from ralph.handlers.machines import remote_shell

        quoted = remote_shell.quote(path)
        done = self.machine.run(f"test -e {quoted} && ls -ld {quoted}", check=False)
        if done.ok:
            return Evidence(True, f"on machine {self.handle.id}: {done.stdout.strip()}")
        return Evidence(False, f"{path} does not exist on machine {self.handle.id}")


def _environment(extra: dict[str, Any]) -> dict[str, str]:
    return {**os.environ, **{str(k): str(v) for k, v in extra.items()}}


def _with_tail(message: str, tail: str) -> str:
    return f"{message}; its last lines:\n{tail}" if tail else message


def _tail(log: Path) -> str:
    """The log's last lines, as they are (the error shows them as lines, not run together)."""
    lines = log.read_bytes().decode("utf-8", "replace").strip().splitlines()
    return "\n".join(lines[-_TAIL_LINES:])
