"""``shell``: run the task's fenced ``bash`` block on this machine."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ralph import children
from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Param, Problem, Result, TaskFailed
from ralph.model import Task, TaskFile
from ralph.secrets import redact

from .checks import LocalChecks

_TAIL_LINES = 5


class ShellHandler(LocalChecks):
    """Run the task's ```bash block locally (bash -e -o pipefail), in the task file's folder.

    Its output goes to .ralph/<file>/task-N.log.  Once the script has exited, a rerun does not
    run it again.  Criteria it verifies: a backticked path that "exists" (or is created,
    written, saved); a backticked command that "succeeds" (run again to check it); "without
    error" / "sans erreur" (the script exited 0).
    """

    name = "shell"
    params = {
        "timeout": Param((int, float), 3600, "seconds before the script is stopped"),
        "env": Param(dict, {}, "extra environment variables for the script"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        if task.code("bash", "sh", "shell") is None:
            return [Problem(task.line, f"{task.label}: the shell handler needs a ```bash block")]
        return []

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return Estimate((f"runs {script_summary(task)} here",))

    def run(self, ctx: Context) -> Result:
        if "exit_code" not in ctx.memory:
            block = ctx.task.code("bash", "sh", "shell")
            if block is None:
                raise TaskFailed("no ```bash block to run")
            log = ctx.state_dir / f"task-{ctx.task.number}.log"
            ctx.log(f"running the bash block of line {block.line} (log: {ctx.display_path(log)})")
            code = _run_logged(block.text, ctx, log)
            ctx.memory["exit_code"] = code
            ctx.memory["tail"] = _tail(log)
        code, tail = ctx.memory["exit_code"], ctx.memory["tail"]
        if code != 0:
            raise TaskFailed(f"the script exited {code}: {tail}")
        return Result(summary="the script exited 0", data={"exit_code": code})

    def command_environment(self, ctx: Context) -> dict[str, str]:
        return _environment(ctx.params["env"])

    def command_timeout(self, ctx: Context) -> float:
        return float(ctx.params["timeout"])


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


def _run_logged(script: str, ctx: Context, log: Path) -> int:
    """Run the script, its output redacted line by line into ``log`` (a script may echo a key)."""
    timeout = ctx.params["timeout"]
    deadline = time.monotonic() + timeout
    with open(log, "w", encoding="utf-8") as out, children.running(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ctx.workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=_environment(ctx.params["env"]),
    ) as process:
        timer = threading.Timer(timeout, children.kill, (process,))
        timer.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                out.write(redact(raw.decode("utf-8", "replace")))
            code = process.wait()
        finally:
            timer.cancel()
    if time.monotonic() >= deadline:
        raise TaskFailed(f"the script ran past its {timeout} s timeout")
    return code


def _environment(extra: dict[str, Any]) -> dict[str, str]:
    import os

    return {**os.environ, **{str(k): str(v) for k, v in extra.items()}}


def _tail(log: Path) -> str:
    lines = log.read_bytes().decode("utf-8", "replace").strip().splitlines()
    return " | ".join(lines[-_TAIL_LINES:])
