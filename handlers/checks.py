"""Criteria a handler that works in the task file's folder verifies with its own eyes.

Shared by the handlers that run something here (``shell``, ``agent``): a backticked path
that exists, a backticked command that succeeds when ralph runs it again, and "without
error" from the exit status the handler's own run recorded (``Result.data["exit_code"]``).
"""

from __future__ import annotations

from ralph import children
from ralph.context import Context
from ralph.handler import BACKTICKED, Evidence, Handler, Result, criterion
from ralph.secrets import redact


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
        return path_evidence(ctx, BACKTICKED.search(text).group(1))  # type: ignore[union-attr]

    @criterion(r"`[^`]+`.*\b(succeed|pass|reussi|returns 0|exit 0|ok\b)")
    def command_succeeds(self, ctx: Context, result: Result, text: str) -> Evidence:
        command = BACKTICKED.search(text).group(1)  # type: ignore[union-attr]
        code, output = run_here(ctx, command, self.command_environment(ctx), self.command_timeout(ctx))
        last = redact(output).strip().splitlines()
        return Evidence(code == 0, f"`{command}` exited {code}" + (f": {last[-1]}" if last else ""))

    @criterion(r"sans erreur|without (an )?error|exit code 0|succeeds|runs")
    def ran_without_error(self, ctx: Context, result: Result, text: str) -> Evidence:
        code = result.data.get("exit_code")
        return Evidence(code == 0, f"{self.worker} exited {code}")


def path_evidence(ctx: Context, path: str) -> Evidence:
    """Whether ``path`` (relative to the task file's folder) exists here, as people read it."""
    found = ctx.path(path)
    shown = ctx.display_path(found)
    if found.is_file():
        return Evidence(True, f"{shown} exists ({found.stat().st_size} bytes)")
    if found.is_dir():
        return Evidence(True, f"{shown} exists (a folder)")
    return Evidence(False, f"{shown} does not exist")


def run_here(ctx: Context, command: str, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """``command`` under bash in the task file's folder, its process group killed past ``timeout``."""
    done = children.run(["bash", "-c", command], cwd=ctx.workdir, env=env, timeout=timeout)
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")
