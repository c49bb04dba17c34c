"""Criteria a handler that works in the task file's folder verifies with its own eyes.

Shared by the handlers that run something here (``shell``, ``agent``): a backticked path
that exists, a backticked command that succeeds when ralph runs it again, and "without
error" from the exit status the handler's own run recorded (``Result.data["exit_code"]``).
"""

from __future__ import annotations

import re

from ralph import children
from ralph.context import Context
from ralph.handler import Evidence, Handler, Result, criterion
from ralph.secrets import redact

BACKTICKED = re.compile(r"`([^`]+)`")


class LocalChecks(Handler):
    """A handler whose criteria these checks verify; it says how checking commands run."""

    worker = "the script"  # what exited: "the script exited 0"

    def command_environment(self, ctx: Context) -> dict[str, str]:
        """The environment a criterion's command runs in."""
        raise NotImplementedError

    def command_timeout(self, ctx: Context) -> float:
        """Seconds before a criterion's command is stopped (it is then left for review)."""
        raise NotImplementedError

    @criterion(r"`[^`]+`.*\b(exist|cree|created|present|saved|sauvegard|ecrit|written|genere)")
    def path_exists(self, ctx: Context, result: Result, text: str) -> Evidence:
        path = ctx.path(BACKTICKED.search(text).group(1))  # type: ignore[union-attr]
        shown = ctx.display_path(path)
        if path.is_file():
            return Evidence(True, f"{shown} exists ({path.stat().st_size} bytes)")
        if path.is_dir():
            return Evidence(True, f"{shown} exists (a folder)")
        return Evidence(False, f"{shown} does not exist")

    @criterion(r"`[^`]+`.*\b(succeed|pass|reussi|returns 0|exit 0|ok\b)")
    def command_succeeds(self, ctx: Context, result: Result, text: str) -> Evidence:
        command = BACKTICKED.search(text).group(1)  # type: ignore[union-attr]
        done = children.run(
            ["bash", "-c", command], cwd=ctx.workdir, env=self.command_environment(ctx),
            timeout=self.command_timeout(ctx),
        )
        output = redact((done.stdout + done.stderr).decode("utf-8", "replace")).strip().splitlines()
        last = f": {output[-1]}" if output else ""
        return Evidence(done.returncode == 0, f"`{command}` exited {done.returncode}{last}")

    @criterion(r"sans erreur|without (an )?error|exit code 0|succeeds|runs")
    def ran_without_error(self, ctx: Context, result: Result, text: str) -> Evidence:
        code = result.data.get("exit_code")
        return Evidence(code == 0, f"{self.worker} exited {code}")
