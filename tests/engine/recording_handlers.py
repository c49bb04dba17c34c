"""Handlers the engine tests register through ralph.yaml, as a user's project would.

Each records what it really did in a ledger file (``RALPH_TEST_LEDGER``), one line per
action, so a test can count how many times a task's work happened.  The work is keyed by a
token saved in the handler's memory *before* it acts: on resume the handler looks the
token up in the ledger instead of acting again (what a pod handler does with a pod name).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from ralph.context import Context, EstimateContext
from ralph.handler import (
    Estimate,
    Evidence,
    Figure,
    Handler,
    Param,
    Rental,
    Result,
    TaskBlocked,
    TaskFailed,
    TransientError,
    criterion,
)
from ralph.model import Task


def _ledger() -> Path:
    return Path(os.environ["RALPH_TEST_LEDGER"])


def _record(line: str) -> None:
    with open(_ledger(), "a", encoding="utf-8") as ledger:
        ledger.write(line + "\n")
        ledger.flush()
        os.fsync(ledger.fileno())


def _recorded(token: str, kind: str = "task") -> bool:
    ledger = _ledger()
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return any(line.startswith(kind + " ") and line.split()[-1] == token for line in lines)


class Step(Handler):
    """Does one unit of work exactly once, then sleeps ``pause`` seconds (a resume that finds its
    work done does not sleep again)."""

    name = "step"
    params = {
        "pause": Param((int, float), 0.0, "seconds to wait after the work"),
        "outcome": Param(str, "ok", "ok, fail, block or flaky", choices=("ok", "fail", "block", "flaky")),
        "holds": Param(str, "", "a resource this task creates"),
        "uses": Param(str, "", "a resource this task needs"),
    }

    def run(self, ctx: Context) -> Result:
        outcome = ctx.params["outcome"]
        if outcome == "block":
            raise TaskBlocked("a precondition is missing")
        if ctx.params["uses"] and ctx.use(ctx.params["uses"]) is None:
            raise TaskBlocked(f"no {ctx.params['uses']} to work on")
        if outcome == "flaky":
            ctx.memory["tries"] = ctx.memory.get("tries", 0) + 1
            if ctx.memory["tries"] < 3:
                raise TransientError(f"try {ctx.memory['tries']} hit a transient error")
        token = ctx.memory.get("token")
        if token is None:
            token = ctx.memory["token"] = uuid.uuid4().hex
        resumed = _recorded(token)
        if not resumed:
            _record(f"task {ctx.task.number} {token}")
        if ctx.params["holds"]:
            ctx.hold(ctx.params["holds"], {"token": token})
        if not resumed:
            time.sleep(ctx.params["pause"])
        if outcome == "fail":
            raise TaskFailed("the work did not succeed")
        return Result(summary=f"work {token[:8]} done", data={"token": token})

    @criterion(r"work (is )?done")
    def work_done(self, ctx: Context, result: Result, text: str) -> Evidence:
        done = _recorded(result.data.get("token", "-"))
        return Evidence(done, "found in the ledger" if done else "not in the ledger")

    @criterion(r"never true")
    def never(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(False, "this check always finds the criterion unmet")


class NeedsToken(Step):
    """A step that cannot work without RALPH_TEST_TOKEN (as the RunPod handlers need their key)."""

    name = "needs-token"
    needs_env = {"RALPH_TEST_TOKEN": "a token the test gives"}


class Rent(Handler):
    """Holds a ``machine`` that bills ``cost_per_hr`` from now on, as runpod.create holds a pod."""

    name = "rent"
    params = {"cost_per_hr": Param((int, float), 3.6, "US dollars an hour")}

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        rate = float(params["cost_per_hr"])
        return Estimate(("rents a test machine",), machine_seconds=Figure(600, "the test's guess"),
                        rental=Rental(Figure(rate, "the test's rate"), 2.0, rate * 2))

    def run(self, ctx: Context) -> Result:
        token = ctx.memory.get("token") or uuid.uuid4().hex
        ctx.memory["token"] = token
        ctx.hold("machine", {"id": token, "token": token, "cost_per_hr": ctx.params["cost_per_hr"],
                             "created_at": time.time()})
        return Result(summary=f"rented {token[:8]}", data={"token": token})

    @criterion(r"rented")
    def rented(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(ctx.resources.get("machine") is not None, result.summary)


class Release(Handler):
    """Clean-up: releases a resource (as terminating a pod would)."""

    name = "release"
    cleanup = True
    params = {"resource": Param(str, "pod", "what to release")}

    def run(self, ctx: Context) -> Result:
        held = ctx.resources.get(ctx.params["resource"])
        if held is not None:
            if not _recorded(held["token"], "release"):  # terminating twice is harmless; count once
                _record(f"release {held['token']}")
            ctx.release(ctx.params["resource"])
        return Result(summary="released" if held else "nothing to release")

    @criterion(r"released")
    def released(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(ctx.resources.get(ctx.params["resource"]) is None, result.summary)


class EditsTheFile(Handler):
    """Plays a person editing the task file (as an editor saves it) while the task runs."""

    name = "edits-the-file"

    def run(self, ctx: Context) -> Result:
        path = ctx.file.path
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("## Overview\n", "## Overview\nA line a person added during the run.\n"))
        return Result(summary="edited")


class Remote(Handler):
    """Starts a job elsewhere (remembered: a redo finds it again) and downloads its result here
    (forgotten: a redo makes it anew), as comfyui.run does with a prompt and its images."""

    name = "remote"
    remembers = frozenset({"job"})

    def run(self, ctx: Context) -> Result:
        ctx.memory.setdefault("job", uuid.uuid4().hex)
        ctx.memory.setdefault("downloaded", uuid.uuid4().hex)
        return Result(summary=f"job {ctx.memory['job'][:8]}", data={"token": ctx.memory["job"]})

    @criterion(r"work (is )?done")
    def work_done(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(bool(result.data.get("token")), "the job answered")
