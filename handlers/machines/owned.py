"""Machines that are not rented: an SSH host of the user's, or this machine.

``machine.ssh`` and ``machine.local`` publish the same fact ``runpod.create`` does, a
``MachineHandle``, so ``comfyui.setup``, ``comfyui.run``, ``pod.shell`` and ``images.evaluate``
run on them unchanged. Nothing here is billed, so there is no dead-man's switch and no
heartbeat; ``machine.release`` stops the services ralph started there and lets the machine go.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ralph.handlers.facts import MachineHandle
from ralph.handlers.machines import services, session

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Evidence, Handler, Param, Result, TaskBlocked, TaskFailed, criterion
from ralph.model import Task

_ADDRESS = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>[^:@\s]+)(?::(?P<port>\d{1,5}))?$")


def _hold(ctx: Context, handle: MachineHandle) -> Result:
    """Check the machine answers, then hold it for the tasks that follow."""
    started = time.monotonic()
    machine = session.attach(handle)
    try:
        outcome = machine.run("true", check=False, timeout=30)
    except Exception as error:  # whatever stops `true`, the machine is not usable
        session.detach(handle.id)
        raise TaskFailed(f"{handle.address}: {type(error).__name__}: {error}") from error
    if not outcome.ok:
        session.detach(handle.id)
        raise TaskFailed(f"{handle.address}: `true` exited {outcome.exit_code}: {outcome.stderr.strip()[-200:]}")
    seconds = time.monotonic() - started
    ctx.publish(handle)
    ctx.memory["answered"] = {"address": handle.address, "seconds": round(seconds, 3)}
    return Result(summary=f"using {handle.address} ({handle.kind})", data={"pod": handle.record()}, cost_usd=0.0)


class UseSshHost(Handler):
    """Use a machine of yours over SSH (your own GPU box) as this file's pod.

    ``host``: ``user@host:port``; ``key``: the private key ralph logs in with; ``workspace``: the
    folder ComfyUI and models go to (default: where SSH sessions start).  The host key is pinned
    on first contact in .ralph/<file>/known_hosts; a changed key stops the run.
    Criteria: "SSH accessible" (``true`` answered over SSH).
    """

    name = "machine.ssh"
    provides = (MachineHandle,)
    params = {
        "host": Param(str, help="user@host:port of the machine"),
        "key": Param(str, "~/.ssh/id_ed25519", "private key to log in with"),
        "workspace": Param(str, "", "working folder on the machine (default: the login folder)"),
    }

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        where = f", in {params['workspace']}" if params["workspace"] else ""
        return Estimate((f"uses {params['host']} over SSH{where}: your machine, not billed",))

    def run(self, ctx: Context) -> Result:
        found = _ADDRESS.match(ctx.params["host"])
        if not found:
            raise TaskBlocked(f"host {ctx.params['host']!r} is not user@host:port")
        key = Path(ctx.params["key"]).expanduser()
        if not key.is_file():
            raise TaskBlocked(f"no SSH key at {ctx.display_path(key)}")
        user, host, port = found["user"] or "root", found["host"], int(found["port"] or 22)
        handle = MachineHandle(
            id=f"ssh-{user}@{host}-{port}",
            name=f"{user}@{host}:{port}",
            host=host,
            port=port,
            user=user,
            key_file=str(key),
            known_hosts=str(ctx.state_dir / "known_hosts"),
            workspace=ctx.params["workspace"],
            state_base="",
            heartbeat_interval_s=0.0,
            kind="ssh",
        )
        return _hold(ctx, handle)

    @criterion(r"\bssh\b.*(accessible|reachable|answers|ok)")
    def ssh_answers(self, ctx: Context, result: Result, text: str) -> Evidence:
        answered = ctx.memory.get("answered")
        if not answered:
            return Evidence(False, "ssh never answered")
        return Evidence(True, f"`ssh {answered['address']} true` answered in {answered['seconds']} s")


class UseThisMachine(Handler):
    """Use this machine as this file's pod: commands run as subprocesses in ``workspace``
    (relative to the task file).  For trying a whole experiment file without renting a GPU."""

    name = "machine.local"
    provides = (MachineHandle,)
    params = {"workspace": Param(str, "workspace", "working folder (relative to the task file)")}

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return Estimate((f"uses this machine, in {params['workspace']}/: not billed",))

    def run(self, ctx: Context) -> Result:
        workspace = ctx.path(ctx.params["workspace"])
        workspace.mkdir(parents=True, exist_ok=True)
        handle = MachineHandle(
            id=f"local-{ctx.run_id}",
            name="this machine",
            host="localhost",
            port=0,
            user="",
            key_file="",
            known_hosts=str(ctx.state_dir / "known_hosts"),
            workspace=str(workspace),
            state_base="",
            heartbeat_interval_s=0.0,
            kind="local",
        )
        return _hold(ctx, handle)


class ReleaseMachine(Handler):
    """Clean-up for machine.ssh / machine.local: stop the services ralph started there (ComfyUI)
    and let the machine go (nothing is deleted; it is yours).  Runs even after a failure."""

    name = "machine.release"
    cleanup = True

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return Estimate(("stops the services ralph started and lets your machine go",))

    def run(self, ctx: Context) -> Result:
        handle = session.held(ctx)
        if handle is None:
            return Result(summary="no machine to release")
        if handle.kind == "runpod":
            raise TaskFailed("this file's machine is a RunPod pod: terminate it with runpod.terminate")
        _, machine = session.connect(ctx)
        stopped = services.stop_all(machine, handle.services_dir)
        session.detach(handle.id)
        ctx.withdraw(MachineHandle)
        return Result(summary=f"released {handle.name}" + (f"; stopped {', '.join(stopped)}" if stopped else ""),
                      data={"stopped": stopped})

    @criterion(r"(machine|pod|host).*(released|liberee|rendue|stopped|arretee)")
    def released(self, ctx: Context, result: Result, text: str) -> Evidence:
        still = session.held(ctx)
        if still is not None:
            return Evidence(False, f"{still.name} is still held")
        return Evidence(True, result.summary)
