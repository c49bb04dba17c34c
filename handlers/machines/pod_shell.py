"""``pod.shell``: run the task's fenced ``bash`` block on the pod a task holds, over SSH.

The shell handler's twin for the pod: same criteria forms, checked on the pod. The script runs
in the pod's workspace (``remote_workspace`` of runpod.create) under ``bash -e -o pipefail``.
Once it exited on a pod, a rerun does not run it again on that pod; on a new pod (the old one
was terminated and the task is redone) it runs again. A dropped connection fails the task rather
than re-running a script that may not be idempotent.
"""

from __future__ import annotations

import re
from typing import Any

from ralph.handlers.machines import remote_shell, session
from ralph.handlers.machines.base import CommandTimeout, MachineError
from ralph.handlers.runpod.common import PodHandler
from ralph.handlers.shell import script_summary

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Evidence, Param, Problem, Result, TaskFailed, criterion
from ralph.model import Task, TaskFile
from ralph.secrets import redact

_BACKTICKED = re.compile(r"`([^`]+)`")
_TAIL_LINES = 5


class PodShell(PodHandler):
    """Run the task's ```bash block on the held pod (bash -e -o pipefail, in its workspace).

    Needs a pod from runpod.create. Output goes to .ralph/<file>/task-N.log. Criteria: a
    backticked path that "exists" / "créé" on the pod; a backticked command that "succeeds" /
    "réussit" on the pod; "sans erreur" / "without error" (the script exited 0).
    """

    name = "pod.shell"
    needs_env = {}  # it runs on whichever machine is held, a RunPod pod or not
    params = {
        "timeout": Param((int, float), 3600, "seconds before the script is given up"),
        "env": Param(dict, {}, "environment variables for the script (not for secrets: they would reach the pod)"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        if task.code("bash", "sh", "shell") is None:
            return [Problem(task.line, f"{task.label}: pod.shell needs a ```bash block")]
        return []

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return Estimate((f"runs {script_summary(task)} on the machine",))

    def run(self, ctx: Context) -> Result:
        handle, ssh = session.connect(ctx)
        memory = ctx.memory
        if memory.get("pod_id") != handle.id or "exit_code" not in memory:
            block = ctx.task.code("bash", "sh", "shell")
            if block is None:
                raise TaskFailed("no ```bash block to run")
            memory.pop("exit_code", None)
            memory["pod_id"] = handle.id
            ctx.log(f"running the bash block of line {block.line} on pod {handle.id}")
            command = remote_shell.join("bash", "-e", "-o", "pipefail", "-c", block.text)
            env = {str(k): str(v) for k, v in ctx.params["env"].items()}
            try:
                done = ssh.run(command, check=False, timeout=ctx.params["timeout"], env=env)
            except CommandTimeout as error:
                self._log(ctx, error.partial.stdout + error.partial.stderr)
                raise TaskFailed(f"the script ran past its {ctx.params['timeout']} s timeout "
                                 f"on pod {handle.id}") from None
            except MachineError as error:
                raise TaskFailed(f"pod {handle.id}: {error}; run again to rerun the script") from None
            memory["tail"] = self._log(ctx, done.stdout + done.stderr)
            memory["exit_code"] = done.exit_code
        code, tail = memory["exit_code"], memory.get("tail", "")
        if code != 0:
            raise TaskFailed(f"the script exited {code} on pod {handle.id}: {tail}")
        return Result(summary=f"the script exited 0 on pod {handle.id}", data={"exit_code": code, "pod_id": handle.id})

    def _log(self, ctx: Context, output: str) -> str:
        text = redact(output)
        (ctx.state_dir / f"task-{ctx.task.number}.log").write_text(text, encoding="utf-8")
        return " | ".join(text.strip().splitlines()[-_TAIL_LINES:])

    @criterion(r"`[^`]+`.*\b(exist|cree|created|present|installe|installed|uploade|uploaded|telecharge|downloaded)")
    def path_exists(self, ctx: Context, result: Result, text: str) -> Evidence:
        path = _BACKTICKED.search(text).group(1)  # type: ignore[union-attr]
        _, ssh = session.connect(ctx)
        done = ssh.run(f"test -e {remote_shell.quote(path)} && ls -ld {remote_shell.quote(path)}", check=False)
        if done.ok:
            return Evidence(True, f"on the pod: {done.stdout.strip()}")
        return Evidence(False, f"{path} does not exist on the pod")

    @criterion(r"`[^`]+`.*\b(succeed|pass|reussi|returns 0|exit 0|ok\b)")
    def command_succeeds(self, ctx: Context, result: Result, text: str) -> Evidence:
        command = _BACKTICKED.search(text).group(1)  # type: ignore[union-attr]
        _, ssh = session.connect(ctx)
        done = ssh.run(command, check=False, timeout=ctx.params["timeout"])
        output = redact(done.stdout + done.stderr).strip().splitlines()
        last = f": {output[-1]}" if output else ""
        return Evidence(done.ok, f"`{command}` exited {done.exit_code} on the pod{last}")

    @criterion(r"sans erreur|without (an )?error|exit code 0|succeeds|runs")
    def script_succeeded(self, ctx: Context, result: Result, text: str) -> Evidence:
        code = result.data.get("exit_code")
        return Evidence(code == 0, f"the script exited {code} on the pod")
