"""``runpod.terminate``: delete this task file's pods and prove through the API that none is left.

A clean-up task: the engine runs it after a failure, a Ctrl-C or a crash of an earlier task.
It terminates the held pod *and* any other pod named with this file's owner prefix (one whose
create answer was lost, say), then counts a pod as gone only when ``get_pod`` reads null, and the
run as clean only when ``list_pods`` shows no pod with the prefix. An acknowledged terminate that
does not happen is re-sent until ``terminate_timeout_s``; then the task fails, boxes unticked.
The resource is released only after that confirmation.
"""

from __future__ import annotations

import time
from typing import Any

from ralph.handlers.facts import MachineHandle, MachineTime
from ralph.handlers.machines import session
from ralph.handlers.runpod import estimate, reaper
from ralph.handlers.runpod.api import RunPodAPI
from ralph.handlers.runpod.common import CONSOLE, PodHandler, task_api, task_file

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Evidence, Param, Result, TaskFailed, criterion
from ralph.model import Task
from ralph.state import now


class TerminatePod(PodHandler):
    """Terminate this file's pod(s) — not stop: delete — and confirm through the API that none is left.

    Runs even after a failure or an interrupt (clean-up task). Criteria: "Pod terminé (pas juste
    pause)" (each pod reads gone), "Confirmation via API qu'aucun pod actif" (no pod of this file
    is listed). The result records the pod's time and its total cost.
    """

    name = "runpod.terminate"
    provides = (MachineTime,)
    cleanup = True
    params = {
        "terminate_timeout_s": Param((int, float), 120,
                                     "seconds to keep re-sending terminate until the pod reads gone"),
        "poll_s": Param((int, float), 2, "seconds between reads while confirming"),
    }

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return estimate.terminate_estimate()

    def run(self, ctx: Context) -> Result:
        with task_api() as api:
            return self._run(ctx, api)

    def _run(self, ctx: Context, api: RunPodAPI) -> Result:
        prefix = reaper.owner_prefix(task_file(ctx))
        held = ctx.resources.get(MachineHandle.key)  # a record: a pod being created is not reachable yet
        targets: dict[str, str] = {}
        if isinstance(held, dict) and held.get("id"):
            targets[held["id"]] = held.get("name", "")
        targets.update({p.id: p.name for p in api.list_pods() if p.name.startswith(prefix)})
        for pod_id in targets:
            session.detach(pod_id)  # stop the heartbeat first: it would only fail from here on
        results = [reaper.terminate_and_confirm(api, pod_id, timeout_s=ctx.params["terminate_timeout_s"],
                                                poll_s=ctx.params["poll_s"]) for pod_id in targets]
        stuck = [r for r in results if not r.gone]
        if stuck:
            raise TaskFailed("; ".join(
                f"pod {r.pod_id} still exists {r.seconds:.0f} s after {r.describe()}"
                for r in stuck) + f": it may still bill — check {CONSOLE} (ralph will retry on the next run)")
        active = [p for p in api.list_pods() if p.name.startswith(prefix)]
        if active:
            raise TaskFailed(f"still listed after termination: {', '.join(f'{p.name} ({p.id})' for p in active)}")
        confirmed_at = now()
        ledger = reaper.Ledger()
        for name in targets.values():
            if name:
                ledger.gone(name)
        cost, hours = 0.0, 0.0
        if isinstance(held, dict) and held.get("id"):
            from ralph.handlers.machines.hostkeys import HostKeyStore  # paramiko: only with a pod

            HostKeyStore(held["known_hosts"]).forget(held["id"])  # its address may come back with another key
            hours = (time.time() - float(held.get("created_at") or time.time())) / 3600
            since = float(held.get("ready_at") or held.get("created_at") or time.time())
            cost = (time.time() - since) / 3600 * float(held.get("cost_per_hr") or 0.0)
            ctx.withdraw(MachineHandle)
            ctx.publish(MachineTime(round(hours, 4)))
        total = hours * float((held or {}).get("cost_per_hr") or 0.0)
        ctx.memory["terminated"] = list(targets)
        summary = (f"terminated {', '.join(f'{n} ({i})' for i, n in targets.items())}; "
                   f"pod time {hours * 60:.1f} min ≈ ${total:.4f} in all" if targets else "no pod to terminate")
        return Result(
            summary=summary,
            data={"terminated": [{"id": r.pod_id, "requests": r.requests, "acknowledged": r.acknowledged,
                                  "seconds": round(r.seconds, 1)} for r in results],
                  "prefix": prefix, "confirmed_at": confirmed_at, "pod_hours": round(hours, 4),
                  "pod_total_usd": round(total, 4)},
            cost_usd=cost if targets else None,
        )

    # -- checks ------------------------------------------------------------------------------

    @criterion(r"\bpods?\b.*\b(termine|terminated|deleted|supprime|detruit)|\bterminer?\b.*\bpods?\b")
    def terminated(self, ctx: Context, result: Result, text: str) -> Evidence:
        gone = result.data.get("terminated")
        if gone is None:
            return Evidence(False, "the terminate task did not run")
        if not gone:
            return Evidence(True, f"no pod of this file existed (none named {result.data.get('prefix')}*): nothing to "
                                  "terminate")
        with RunPodAPI.from_env() as api:
            left = [g["id"] for g in gone if api.get_pod(g["id"]) is not None]
        if left:
            return Evidence(False, f"still exists: {', '.join(left)}")
        return Evidence(True, "; ".join(f"pod {g['id']}: GET /v2/pods/{g['id']} reads 404 at {now()} (deleted, not "
                                        f"stopped) after {g['requests']} terminate request(s)" for g in gone))

    @criterion(r"aucun pod|no (active |running )?pods?\b|none (active|running)|confirm.*\bapi\b")
    def none_active(self, ctx: Context, result: Result, text: str) -> Evidence:
        prefix = result.data.get("prefix")
        if not prefix:
            return Evidence(False, "the terminate task did not run")
        with RunPodAPI.from_env() as api:
            pods = api.list_pods()
        mine = [p for p in pods if p.name.startswith(prefix)]
        others = [p for p in pods if not p.name.startswith(prefix)]
        ralphs = [p for p in others if p.name.startswith(reaper.PREFIX)]
        detail = f"GET /v2/pods at {now()}: {len(mine)} pod(s) named {prefix}*"
        if others:
            detail += f"; {len(others)} other pod(s) on the account, not this file's"
            if ralphs:
                detail += f" ({len(ralphs)} named ralph-*: other task files or machines)"
        return Evidence(not mine, detail + "".join(f"; active: {p.name} ({p.id})" for p in mine))
