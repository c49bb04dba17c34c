"""The ``agent`` handler's loop: iterate the agent, verify after each iteration, stop in time."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from typing import Any

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Param, Problem, Result, TaskBlocked, TaskFailed
from ralph.model import Task, TaskFile
from ralph.parser import normalise
from ralph.secrets import redact

from ..checks import LocalChecks
from .guard import MarksGuard
from .process import AgentRun, run_agent
from .prompt import build_prompt

# Named agent CLIs: the argv that reads a prompt on standard input and works unattended, and
# the variables each needs (passed through when set).
PRESETS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "claude": (["claude", "-p", "--permission-mode", "acceptEdits"], ("ANTHROPIC_API_KEY",)),
    "codex": (["codex", "exec", "--full-auto", "-"], ("OPENAI_API_KEY",)),
    "aider": (["aider", "--yes-always", "--message-file", "/dev/stdin"], ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")),
}
# What any program needs to start and find its own configuration; none of it is a secret.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
_DIAGNOSIS_TAIL = 3  # output lines of the last iteration the diagnosis quotes


class AgentHandler(LocalChecks):
    """Have a coding-agent CLI do the task, iterating until ralph's own checks pass.

    Each iteration is a fresh process in the task file's folder, fed on standard input a
    prompt ralph builds (the task, the file's Overview, Context and Constraints, what earlier
    tasks recorded, ralph's notes on earlier iterations).  After each one ralph verifies the
    criteria itself: a backticked path that exists, a backticked command that succeeds,
    "without error" (the agent exited 0); the rest is left for review, and the agent's word
    counts for nothing.  Boxes or a status the agent changed in the task file are put back.
    It stops when nothing ralph can check fails, or: after ``stall_iterations`` iterations
    verifying no new criterion, at ``max_iterations``, or past ``budget_s`` (FAILED, with a
    diagnosis).  Logs: .ralph/<file>/task-N-iteration-K.log (and .prompt.md).  A run killed
    mid-round goes on from its last finished iteration; a rerun of an ended task starts a new round.
    """

    name = "agent"
    worker = "the agent"
    params = {
        "command": Param((str, list), help="the agent CLI: a preset (claude, codex, aider) or an argv list "
                                           "reading the prompt on standard input"),
        "max_iterations": Param(int, 5, "iterations at most, per round"),
        "iteration_timeout_s": Param((int, float), 1800, "seconds before one iteration's process group is killed"),
        "stall_iterations": Param(int, 2, "stop after this many iterations in a row verify no new criterion"),
        "budget_s": Param((int, float), 7200, "seconds all the iterations of a round may take together"),
        "env": Param(list, [], "names of environment variables passed to the agent (besides PATH, HOME, LANG)"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        problems = []
        command = params["command"]
        if isinstance(command, str) and command not in PRESETS:
            problems.append(f"command {command!r} is no preset ({', '.join(PRESETS)}); give an argv list instead")
        if isinstance(command, list) and (not command or not all(isinstance(a, str) and a for a in command)):
            problems.append("command: expected a preset name or a non-empty list of strings")
        for key in ("max_iterations", "stall_iterations", "iteration_timeout_s", "budget_s"):
            if params[key] <= 0:
                problems.append(f"{key} must be positive, not {params[key]!r}")
        if not all(isinstance(name, str) and name for name in params["env"]):
            problems.append("env: expected a list of environment variable names")
        return [Problem(task.line, f"{task.label}: agent {message}") for message in problems]

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        argv, _ = _command(params)
        return Estimate((
            f"runs `{shlex.join(argv)}` here up to {params['max_iterations']} times "
            f"({params['iteration_timeout_s']} s each at most, {params['budget_s']} s in all), "
            "checking its criteria after each",
        ))

    def command_environment(self, ctx: Context) -> dict[str, str]:
        """The agent's environment, which the criteria's commands share: PATH, HOME, LANG and
        the variables named, nothing else of the person's."""
        _, wanted = _command(ctx.params)
        names = (*BASE_ENV, *wanted, *ctx.params["env"])
        return {name: os.environ[name] for name in names if name in os.environ}

    def command_timeout(self, ctx: Context) -> float:
        return float(ctx.params["iteration_timeout_s"])

    def run(self, ctx: Context) -> Result:
        params, memory = ctx.params, ctx.memory
        guard = MarksGuard(ctx.file.path, ctx.task.number, memory)
        if "marks" not in memory or memory.get("round_over"):  # a new round: its marks are the file's now
            memory["round_start"] = len(memory.get("notes", []))
            memory["round_over"] = False
            guard.record()
        else:  # a run that died mid-round: the agent's edits may still be in the file
            self._report_restored(ctx, guard.restore())
        notes: list[dict[str, Any]] = list(memory.get("notes", []))
        while True:
            round_notes = notes[memory["round_start"]:]
            if round_notes and _finished(round_notes[-1]):
                memory["round_over"] = True
                return _result(round_notes,
                               f"the agent's work passed ralph's checks after {len(round_notes)} iteration(s)")
            reason = _stop_reason(round_notes, params)
            if reason:
                memory["round_over"] = True
                return self._stopped(ctx, round_notes, reason)
            notes.append(self._iteration(ctx, guard, notes, len(notes) + 1, _budget_left(round_notes, params)))
            memory["notes"] = notes

    def _iteration(self, ctx: Context, guard: MarksGuard, notes: list[dict[str, Any]], number: int,
                   budget_left: float) -> dict[str, Any]:
        """Run iteration ``number``, verify, restore the marks; ralph's note on it."""
        argv, _ = _command(ctx.params)
        base = ctx.state_dir / f"task-{ctx.task.number}-iteration-{number}"
        prompt, log = base.with_suffix(".prompt.md"), base.with_suffix(".log")
        text = build_prompt(ctx.file, ctx.task, file_name=ctx.file.path.name, iteration=number,
                            max_iterations=ctx.params["max_iterations"], notes=notes,
                            results={n: r.result for n, r in ctx.records.items() if r.result})
        prompt.write_text(redact(text), encoding="utf-8")
        timeout = min(float(ctx.params["iteration_timeout_s"]), budget_left)
        ctx.log(f"iteration {number}: `{shlex.join(argv)}` (log: {ctx.display_path(log)})")
        with ctx.progress(f"agent, iteration {number}") as bar:
            show = _throttled(lambda line: bar.update(0, description=f"agent {number}: {line[:100]}"))
            try:
                run = run_agent(argv, prompt=prompt, cwd=ctx.workdir, env=self.command_environment(ctx), log=log,
                                timeout=timeout, show=show)
            except OSError as error:  # not installed, not executable: no iteration will do better
                raise TaskBlocked(f"cannot start the agent `{argv[0]}`: {error.strerror or error}") from None
        restored = guard.restore()
        self._report_restored(ctx, restored)
        note = self._verify(ctx, notes, number, run, restored)
        ctx.log(_one_line(note))
        return note

    def _verify(self, ctx: Context, notes: list[dict[str, Any]], number: int, run: AgentRun,
                restored: list[str]) -> dict[str, Any]:
        """ralph's own checks of every criterion not ticked before the round, after ``run``."""
        result = Result(data={"exit_code": run.exit_code})
        marks = ctx.memory["marks"]["boxes"]
        verified, failing, review = [], {}, {}
        for criterion in ctx.task.criteria:
            if marks.get(normalise(criterion.text)):
                continue  # ticked before the agent came: a person's review, or ralph's earlier proof
            evidence = self.judge(ctx, result, criterion.text)
            if evidence.verified:
                verified.append(criterion.text)
            elif evidence.verified is False:
                failing[criterion.text] = evidence.detail
            else:
                review[criterion.text] = evidence.detail
        round_notes = notes[ctx.memory["round_start"]:]
        seen = {text for note in round_notes for text in note["verified"]}
        # An agent that exits 0 having done nothing "ran without error": that is no progress.
        work = {text for text in verified if not self._about_the_exit(text)}
        return {
            "number": number,
            "exit_code": run.exit_code,
            "seconds": round(run.seconds, 3),
            "verified": verified,
            "failing": failing,
            "review": review,
            "progress": bool(work - seen),
            "restored": restored,
            "tail": run.tail,
            "unlogged_bytes": run.unlogged_bytes,
        }

    def _about_the_exit(self, criterion_text: str) -> bool:
        check = self.check_for(criterion_text)
        return getattr(check, "__func__", None) is LocalChecks.ran_without_error

    def _stopped(self, ctx: Context, round_notes: list[dict[str, Any]], reason: str) -> Result:
        """The circuit breaker's end: FAILED with a diagnosis (a criterion ralph still sees failing
        fails the task when the runner checks it; with none, the agent's own failure does)."""
        last = round_notes[-1]
        ever = {text for note in round_notes for text in note["verified"]}
        never = [f"{text} ({why})" for text, why in last["failing"].items() if text not in ever]
        first, final = round_notes[0]["number"], last["number"]
        logs = ctx.display_path(ctx.state_dir / f"task-{ctx.task.number}-iteration-{first}.log")
        if final != first:
            logs += f" … -{final}.log"
        ended = "was killed at its timeout" if last["exit_code"] is None else f"exited {last['exit_code']}"
        tail = " | ".join(_shortened(line) for line in last["tail"][-_DIAGNOSIS_TAIL:])
        argv, _ = _command(ctx.params)
        diagnosis = f"stopped: {reason}; tried `{shlex.join(argv)}` {len(round_notes)} time(s) (logs: {logs})"
        if never:
            diagnosis += "; never verified: " + "; ".join(never)
        diagnosis += f"; the last time the agent {ended}" + (f": {tail}" if tail else "")
        ctx.log(diagnosis)
        if last["failing"]:
            return _result(round_notes, diagnosis)
        raise TaskFailed(diagnosis)

    def _report_restored(self, ctx: Context, restored: list[str]) -> None:
        if restored:
            ctx.events.write("agent_edits_undone", task=ctx.task.number, changes=restored)
            ctx.log("the agent changed the task's marks in the task file; ralph put back: " + "; ".join(restored))


def _command(params: dict[str, Any]) -> tuple[list[str], tuple[str, ...]]:
    """The argv, and the variables its preset needs."""
    command = params["command"]
    if isinstance(command, str):  # a name that is no preset is reported by validate
        argv, env = PRESETS.get(command, ([command], ()))
        return list(argv), env
    return [str(a) for a in command], ()


def _finished(note: dict[str, Any]) -> bool:
    """Nothing ralph can check still fails, and the agent ended of its own accord, without error."""
    return note["exit_code"] == 0 and not note["failing"]


def _stop_reason(round_notes: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """Why the round must stop before another iteration, or ''."""
    stall = params["stall_iterations"]
    if len(round_notes) >= stall and not any(n["progress"] for n in round_notes[-stall:]):
        return f"{stall} iteration(s) in a row verified no new criterion"
    if len(round_notes) >= params["max_iterations"]:
        return f"max_iterations ({params['max_iterations']}) reached"
    if _budget_left(round_notes, params) <= 0:
        return f"budget_s ({params['budget_s']} s) spent"
    return ""


def _budget_left(round_notes: list[dict[str, Any]], params: dict[str, Any]) -> float:
    return float(params["budget_s"]) - sum(note["seconds"] for note in round_notes)


def _result(round_notes: list[dict[str, Any]], summary: str) -> Result:
    last = round_notes[-1]
    undone = sum(1 for note in round_notes if note["restored"])
    if undone:
        summary += f"; ralph undid the agent's changes to the task's boxes or status after {undone} iteration(s)"
    return Result(summary=summary, data={"exit_code": last["exit_code"], "iterations": len(round_notes)})


def _shortened(line: str, most: int = 160) -> str:
    return line if len(line) <= most else line[: most - 1] + "…"


def _one_line(note: dict[str, Any]) -> str:
    ended = "killed at its timeout" if note["exit_code"] is None else f"exited {note['exit_code']}"
    checked = len(note["verified"]) + len(note["failing"])
    line = f"iteration {note['number']}: the agent {ended} after {note['seconds']:.1f} s; ralph verified " \
           f"{len(note['verified'])} of {checked} checkable criteria"
    if note["failing"]:
        line += "; still failing: " + "; ".join(note["failing"])
    return line


def _throttled(show: Callable[[str], None], interval_s: float = 0.2) -> Callable[[str], None]:
    """``show``, called at most every ``interval_s``: a flood of output must not flood the terminal."""
    last = [0.0]

    def throttled(line: str) -> None:
        now = time.monotonic()
        if now - last[0] >= interval_s:
            last[0] = now
            show(line)

    return throttled
