"""``runpod.create``: a RunPod pod reachable over SSH, never lost track of, never left without a switch.

Order of events, each on disk before the next (state.json and the machine-wide ledger):
1. a unique name ``ralph-<owner>-t<N>-<random>`` (reaper.py), recorded *before* the create call,
   so a rerun after a crash between the call and its answer finds the pod by name instead of
   creating a second one;
2. the create call, trying each (GPU type, cloud type, data centre) in order while RunPod says
   it has no capacity, within ``create_budget_s``; the start command arms the pod's dead-man's
   switch before anything else (deadman.py);
3. the pod id, in memory and as the held resource ``pod``, the moment the API returns it;
4. one deadline (``ready_timeout_s`` from the create) for a working ``ssh true``, checking on
   each poll that the pod still exists; the host key is pinned on first contact. Past the
   deadline the pod is terminated (it bills) and the task fails; a retry makes a new one.
A rerun reuses the pod in memory if it still exists.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ralph.context import Context
from ralph.handler import Evidence, Param, Problem, Result, TaskFailed, TransientError, criterion
from ralph.handlers.machines import session
from ralph.handlers.runpod import deadman, reaper
from ralph.handlers.runpod.api import (CLOUD_TYPES, APIError, AuthError, CapacityError, PodInfo,
                                            RunPodAPI, TransientAPIError)
from ralph.handlers.runpod.common import PodHandler, api_for_task, blocked_by_auth, task_file
from ralph.model import Task, TaskFile
from ralph.state import now

# 24 GB-class cards that run SDXL + InstantID like an RTX A5000, cheapest first.
DEFAULT_GPUS = ["NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090", "NVIDIA RTX A4500",
                "NVIDIA GeForce RTX 4090", "NVIDIA L4", "NVIDIA RTX A6000"]
DEFAULT_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"


class CreatePod(PodHandler):
    """Create a RunPod pod (first GPU type with capacity), wait until `ssh true` works, hold it as `pod`.

    Needs RUNPOD_API_KEY. The pod carries a dead-man's switch: it deletes itself when ralph's
    heartbeat stops for heartbeat_timeout_s, when SSH never came up within ready_timeout_s +
    heartbeat_timeout_s, or after max_lifetime_s. Criteria: "Pod créé avec GPU …" (the pod exists
    with one of the asked GPUs), "SSH accessible" (ssh true answers now).
    """

    name = "runpod.create"
    params = {
        "gpu_types": Param(list, DEFAULT_GPUS, "RunPod GPU type ids, tried in order while there is no capacity"),
        "cloud_types": Param(list, ["ALL"], "cloud types tried for each GPU type: ALL, SECURE, COMMUNITY"),
        "data_centers": Param(list, [], "data centre ids tried for each choice; empty: any"),
        "network_volume_id": Param(str, "", "a network volume mounted at /workspace (ties the pod to its data centre)"),
        "image": Param(str, DEFAULT_IMAGE, "container image"),
        "gpu_count": Param(int, 1, "GPUs per pod"),
        "container_disk_gb": Param(int, 40, "container disk (GB)"),
        "volume_gb": Param(int, 50, "pod volume at /workspace (GB); 0 for none"),
        "create_budget_s": Param((int, float), 300, "seconds to keep trying GPU/cloud/data-centre choices"),
        "ready_timeout_s": Param((int, float), 900, "seconds from create to a working `ssh true`"),
        "heartbeat_timeout_s": Param((int, float), 600, "the pod deletes itself after this long without ralph"),
        "max_lifetime_s": Param((int, float), 10800, "the pod deletes itself this long after it started, whatever happens"),
        "remote_workspace": Param(str, "/workspace", "where commands run on the pod; empty: where SSH sessions start"),
        "base_start_command": Param(str, "/start.sh", "what the image runs at start (after the switch is armed)"),
        "pod_state_dir": Param(str, deadman.DEFAULT_STATE_BASE, "the switch's folder on the pod (not on the volume)"),
        "ssh_key": Param(str, "", "private key for the pod; empty: ralph's own key in .ralph/<file>/ssh/"),
        "poll_s": Param((int, float), 5, "seconds between readiness polls"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        problems = []
        if not params["gpu_types"] or not all(isinstance(g, str) and g for g in params["gpu_types"]):
            problems.append(Problem(task.line, f"{task.label}: gpu_types must be a non-empty list of GPU type ids"))
        bad = [c for c in params["cloud_types"] if c not in CLOUD_TYPES]
        if bad or not params["cloud_types"]:
            problems.append(Problem(task.line, f"{task.label}: cloud_types must be among {', '.join(CLOUD_TYPES)}"))
        for key in ("create_budget_s", "ready_timeout_s", "heartbeat_timeout_s", "max_lifetime_s", "poll_s"):
            if params[key] <= 0:
                problems.append(Problem(task.line, f"{task.label}: {key} must be positive"))
        return problems

    # -- run ---------------------------------------------------------------------------------

    def run(self, ctx: Context) -> Result:
        api = api_for_task()
        try:
            return self._run(ctx, api)
        except AuthError as error:
            raise blocked_by_auth(error) from None

    def _run(self, ctx: Context, api: RunPodAPI) -> Result:
        key = self._client_key(ctx)
        pod = self._existing(ctx, api)
        if pod is None:
            pod = self._create(ctx, api, key)
        handle = self._wait_ready(ctx, api, pod, key)
        cost = (handle.ready_at - handle.created_at) / 3600 * handle.cost_per_hr
        waited = handle.ready_at - handle.created_at
        return Result(
            summary=(f"pod {handle.name} ({handle.id}) on {handle.gpu} at ${handle.cost_per_hr:.3f}/h; "
                     f"ssh {handle.address} answered {waited:.0f} s after create"),
            data={"pod_id": handle.id, "name": handle.name, "gpu": handle.gpu, "gpu_type_id": ctx.memory.get("gpu_type_id"),
                  "cloud_type": ctx.memory.get("cloud_type"), "data_center": ctx.memory.get("data_center"),
                  "cost_per_hr": handle.cost_per_hr, "ssh": handle.address, "seconds_to_ssh": round(waited, 1),
                  "stages": ctx.memory.get("stages", {}),
                  "pod": {"id": handle.id, "name": handle.name, "gpu": handle.gpu, "cost_per_hr": handle.cost_per_hr,
                          "ssh": handle.address}},
            cost_usd=cost,
        )

    def _client_key(self, ctx: Context) -> Path:
        given = ctx.params["ssh_key"]
        if not given:
            return session.ensure_client_key(ctx.state_dir / "ssh")
        key = ctx.path(given) if not given.startswith("~") else Path(given).expanduser()
        if not key.exists() or not key.with_name(key.name + ".pub").exists():
            raise TaskFailed(f"ssh_key {key}: the private key and its .pub must both exist")
        return key

    def _existing(self, ctx: Context, api: RunPodAPI) -> PodInfo | None:
        """The pod an earlier attempt made, found by id, or by name if its create may have gone through."""
        memory = ctx.memory
        pod_id = memory.get("pod_id")
        if pod_id:
            pod = self._read(api, pod_id)
            if pod is not None and pod.running:
                ctx.log(f"reusing pod {pod.name} ({pod.id})")
                return pod
            state = "is gone" if pod is None else f"is {pod.desired_status}, not running"
            if pod is not None:
                raise TaskFailed(f"pod {pod_id} {state}: a stopped pod still bills for its disk; "
                                 "terminate it (runpod.terminate) and run again")
            ctx.log(f"pod {pod_id} {state}; creating a new one")
            self._forget(ctx)
            return None
        name = memory.get("name")
        if name and memory.get("create_sent"):
            return self._adopt_by_name(ctx, api, name)
        return None

    def _adopt_by_name(self, ctx: Context, api: RunPodAPI, name: str) -> PodInfo | None:
        try:
            pods = api.list_pods()
        except TransientAPIError as error:
            raise TransientError(f"cannot list pods to look for {name}: {error}") from None
        found = next((p for p in pods if p.name == name), None)
        if found is not None:
            ctx.log(f"found pod {name} ({found.id}), created by an earlier attempt whose answer was lost")
            self._record_created(ctx, found.id, self._asked(ctx).get(ctx.memory.get("gpu_type_id", ""), ""))
        return found

    def _create(self, ctx: Context, api: RunPodAPI, key: Path) -> PodInfo:
        p, memory = ctx.params, ctx.memory
        if not memory.get("name"):
            memory["name"] = reaper.new_pod_name(task_file(ctx), ctx.task.number)
            memory.pop("create_sent", None)
            reaper.Ledger().named(memory["name"], task_file(ctx), ctx.state_dir)
        name = memory["name"]
        known = {g.id: g for g in self._call(api.gpu_types)}
        gpus = [g for g in p["gpu_types"] if g in known]
        for missing in [g for g in p["gpu_types"] if g not in known]:
            ctx.log(f"RunPod has no GPU type {missing!r}; skipped")
        if not gpus:
            raise TaskFailed(f"none of gpu_types exists on RunPod: {', '.join(p['gpu_types'])}")
        memory["asked_gpus"] = {g: known[g].display_name for g in gpus}
        choices = [(g, c, d) for g in gpus for c in p["cloud_types"] for d in (p["data_centers"] or [None])]
        switch = deadman.Switch(heartbeat_timeout_s=int(p["heartbeat_timeout_s"]),
                                grace_s=int(p["ready_timeout_s"] + p["heartbeat_timeout_s"]),
                                max_lifetime_s=int(p["max_lifetime_s"]), state_base=p["pod_state_dir"])
        start_command = deadman.start_command(switch, p["base_start_command"])
        deadline = time.monotonic() + p["create_budget_s"]
        tried: list[str] = []
        while True:
            for gpu, cloud, dc in choices:
                label = f"{gpu} / {cloud}" + (f" / {dc}" if dc else "")
                memory["create_sent"] = True
                try:
                    pod_id = api.create_pod(
                        name=name, image=p["image"], gpu_type_id=gpu, gpu_count=p["gpu_count"], cloud_type=cloud,
                        data_center_id=dc, network_volume_id=p["network_volume_id"] or None,
                        container_disk_gb=p["container_disk_gb"], volume_gb=p["volume_gb"], ports="22/tcp",
                        env={"PUBLIC_KEY": session.public_key(key)}, start_command=start_command)
                except CapacityError:
                    tried.append(f"{label}: no capacity")
                    ctx.log(f"no capacity for {label}; trying the next choice")
                    continue
                except TransientAPIError as error:
                    found = self._adopt_by_name(ctx, api, name)  # the pod may exist, its answer lost
                    if found is not None:
                        self._note_choice(ctx, gpu, cloud, dc)
                        return found
                    tried.append(f"{label}: {error}")
                    ctx.log(f"create failed for {label} ({error}); trying the next choice")
                    continue
                except AuthError:
                    raise
                except APIError as error:
                    raise TaskFailed(f"RunPod refused to create the pod ({label}): {error}") from None
                self._note_choice(ctx, gpu, cloud, dc)
                self._record_created(ctx, pod_id, known[gpu].display_name)
                ctx.log(f"created pod {name} ({pod_id}) with {label}")
                return self._read(api, pod_id) or PodInfo(pod_id, name, "RUNNING", None, 1, 0.0, 0, p["image"], (), None)
            if time.monotonic() >= deadline:
                break
            time.sleep(min(p["poll_s"], max(0.0, deadline - time.monotonic())))
        memory.pop("create_sent", None)  # nothing was created: a retry need not look for it
        raise TaskFailed(f"no pod after {p['create_budget_s']} s of trying: " + "; ".join(dict.fromkeys(tried)))

    def _note_choice(self, ctx: Context, gpu: str, cloud: str, dc: str | None) -> None:
        ctx.memory["gpu_type_id"], ctx.memory["cloud_type"], ctx.memory["data_center"] = gpu, cloud, dc

    def _record_created(self, ctx: Context, pod_id: str, gpu: str) -> None:
        """The moment the id is known: memory, the shared resource and the ledger."""
        memory = ctx.memory
        memory["pod_id"] = pod_id
        memory.setdefault("created_at", time.time())
        reaper.Ledger().created(memory["name"], pod_id)
        ctx.hold(session.RESOURCE, {"id": pod_id, "name": memory["name"], "gpu": gpu,
                                    "created_at": memory["created_at"], "known_hosts": str(self._known_hosts(ctx))})

    def _forget(self, ctx: Context) -> None:
        for key in ("pod_id", "name", "create_sent", "created_at", "stages", "cost_per_hr"):
            ctx.memory.pop(key, None)
        if ctx.resources.get(session.RESOURCE) is not None:
            ctx.release(session.RESOURCE)

    def _known_hosts(self, ctx: Context) -> Path:
        return ctx.state_dir / "known_hosts"

    # -- readiness ---------------------------------------------------------------------------

    def _wait_ready(self, ctx: Context, api: RunPodAPI, pod: PodInfo, key: Path) -> session.MachineHandle:
        p, memory = ctx.params, ctx.memory
        created_at = memory.setdefault("created_at", time.time())
        deadline = created_at + p["ready_timeout_s"]
        stages: dict[str, float] = dict(memory.get("stages", {}))
        handle = session.MachineHandle(
            id=pod.id, name=pod.name or memory.get("name", ""), host="", port=0, user="root", key_file=str(key),
            known_hosts=str(self._known_hosts(ctx)), workspace=p["remote_workspace"], state_base=p["pod_state_dir"],
            heartbeat_interval_s=max(0.5, min(10.0, p["heartbeat_timeout_s"] / 4)), created_at=created_at)
        last = "no answer from the API yet"
        while True:
            info = self._read(api, pod.id, tolerate=True)
            if info is None:
                reaper.Ledger().gone(handle.name)
                self._forget(ctx)
                raise TaskFailed(f"pod {pod.id} disappeared {time.time() - created_at:.0f} s after create, before SSH "
                                 "worked (its dead-man's switch or someone terminated it); run again for a new pod")
            if info is not _UNKNOWN:
                if not info.running:
                    raise TaskFailed(f"pod {pod.id} is {info.desired_status} while starting")
                if not info.ports:
                    last = "runtime is null (image still pulling)"
                elif info.ssh is None:
                    stages.setdefault("runtime", round(time.time() - created_at, 1))
                    last = "no public 22/tcp port yet"
                else:
                    stages.setdefault("ports", round(time.time() - created_at, 1))
                    handle = replace(handle, host=info.ssh.host, port=info.ssh.port, user=info.ssh.user,
                                     gpu=info.gpu or "", cost_per_hr=info.cost_per_hr)
                    answered, last = self._probe(handle, min(10.0, max(1.0, deadline - time.time())))
                    if answered:
                        stages["ssh"] = round(time.time() - created_at, 1)
                        memory["stages"] = stages
                        return self._ready(ctx, api, handle)
                if memory.get("stages") != stages:
                    memory["stages"] = stages
            if time.time() >= deadline:
                self._give_up(ctx, api, pod.id, f"no working `ssh true` {p['ready_timeout_s']} s after create ({last})")
            time.sleep(min(p["poll_s"], max(0.05, deadline - time.time())))

    def _probe(self, handle: session.MachineHandle, timeout: float) -> tuple[bool, str]:
        """``ssh true`` where sessions start (the workspace may not exist yet)."""
        from ralph.handlers.machines.hostkeys import HostKeyChanged  # paramiko: only once a pod exists

        probe = session.provider(replace(handle, workspace=""), connect_timeout=timeout, attempts=1)
        try:
            probe.run("true", timeout=timeout)
            return True, "ssh answered"
        except HostKeyChanged as error:
            raise TaskFailed(str(error)) from None
        except Exception as error:  # noqa: BLE001 (sshd not up yet, key not installed yet: poll again)
            return False, f"ssh {handle.address}: {type(error).__name__}: {error}".strip()
        finally:
            probe.close()

    def _ready(self, ctx: Context, api: RunPodAPI, handle: session.MachineHandle) -> session.MachineHandle:
        cost = handle.cost_per_hr
        if cost <= 0:  # costPerHr sometimes reads 0 (runpod-python#438): the catalogue price instead
            gpu = ctx.memory.get("gpu_type_id")
            try:
                cost = (self._call(lambda: api.gpu_type(gpu, ctx.params["gpu_count"])).price_per_hr or 0.0) if gpu else 0.0
            except (APIError, TransientError):
                cost = 0.0
        handle = replace(handle, cost_per_hr=cost, ready_at=time.time())
        ctx.memory["cost_per_hr"] = cost
        ctx.hold(session.RESOURCE, handle.as_resource())
        session.attach(handle)  # the heartbeat starts now, well inside the switch's grace period
        ctx.log(f"pod {handle.id} answers ssh at {handle.address}; heartbeat every {handle.heartbeat_interval_s:g} s")
        return handle

    def _give_up(self, ctx: Context, api: RunPodAPI, pod_id: str, why: str) -> None:
        ctx.log(f"{why}: terminating pod {pod_id}")
        done = reaper.terminate_and_confirm(api, pod_id, timeout_s=60, poll_s=min(2.0, ctx.params["poll_s"]))
        if done.gone:
            reaper.Ledger().gone(ctx.memory.get("name", ""))
            self._forget(ctx)
            raise TaskFailed(f"{why}; the pod was terminated (confirmed gone); run again for a new one")
        raise TaskFailed(f"{why}; terminating pod {pod_id} was not confirmed: the clean-up task will try again")

    # -- API plumbing --------------------------------------------------------------------------

    def _read(self, api: RunPodAPI, pod_id: str, *, tolerate: bool = False) -> Any:
        try:
            return api.get_pod(pod_id)
        except TransientAPIError as error:
            if tolerate:
                return _UNKNOWN
            raise TransientError(f"reading pod {pod_id}: {error}") from None

    def _call(self, fn: Any) -> Any:
        try:
            return fn()
        except TransientAPIError as error:
            raise TransientError(str(error)) from None

    def _asked(self, ctx: Context) -> dict[str, str]:
        return dict(ctx.memory.get("asked_gpus", {}))

    # -- checks ------------------------------------------------------------------------------

    @criterion(r"\bpod\b.*\b(cree|created|create|up|running|lance)\b|\bcreer?\b.*\bpod\b")
    def pod_created(self, ctx: Context, result: Result, text: str) -> Evidence:
        pod_id = result.data.get("pod_id")
        if not pod_id:
            return Evidence(False, "no pod was created")
        pod = RunPodAPI.from_env().get_pod(pod_id)
        if pod is None:
            return Evidence(False, f"pod {pod_id} no longer exists")
        asked = self._asked(ctx)
        ok = pod.running and pod.gpu is not None and (pod.gpu in asked.values() or pod.gpu in asked)
        wanted = ", ".join(asked.values()) or "?"
        return Evidence(ok, f"pod {pod.name} ({pod.id}) is {pod.desired_status} with GPU {pod.gpu} "
                            f"(asked, in order: {wanted}) at ${pod.cost_per_hr or result.data.get('cost_per_hr', 0):.3f}/h")

    @criterion(r"\bssh\b")
    def ssh_works(self, ctx: Context, result: Result, text: str) -> Evidence:
        value = ctx.resources.get(session.RESOURCE)
        if not (isinstance(value, dict) and value.get("host")):
            return Evidence(False, "no pod with an SSH endpoint is held")
        handle = session.MachineHandle.from_resource(value)
        started = time.monotonic()
        answered, detail = self._probe(handle, 10.0)
        if not answered:
            return Evidence(False, detail)
        return Evidence(True, f"`ssh {handle.address} true` answered in {time.monotonic() - started:.2f} s at {now()} "
                              f"(host key pinned in {handle.known_hosts})")


_UNKNOWN: Any = object()  # a poll whose answer was lost: neither "gone" nor "there"
