"""``runpod.create``: a RunPod pod reachable over SSH, never lost track of, never left without a switch.

Order of events, each on disk before the next (state.json and the machine-wide ledger):
1. a unique name ``ralph-<owner>-t<N>-<random>`` (reaper.py), recorded *before* any create, so a
   rerun after a crash between a create and its answer finds the pod by name instead of making a
   second one;
2. the network volume, when the task names one: found by name or id, or created in a data centre
   where the GPU list has room (volumes are never deleted by ralph);
3. placement from the catalog (placement.py): the user's (GPU type, cloud, data centre) choices that
   have room now, tried in order; when none has, the catalog is read again with backoff — a few
   requests a minute — until ``create_budget_s`` runs out; no create is sent blind;
4. the create; the start command arms the pod's dead-man's switch before anything else
   (deadman.py); a create whose answer was lost is resolved by finding the pod by name;
5. the pod id, in memory and as the held ``machine`` resource, the moment the API returns it;
6. one deadline (``ready_timeout_s`` from the create) through PROVISIONING → STARTING → RUNNING →
   ``ssh.direct`` → a working ``ssh true``; the host key is pinned on first contact. ``ERROR`` stops
   the wait at once. Past the deadline, or on ``ERROR``, the pod is terminated (it bills) and the
   task fails; a retry makes a new one.
A rerun reuses the pod in memory if it still exists.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ralph.handlers.facts import MachineHandle
from ralph.handlers.machines import session
from ralph.handlers.runpod import deadman, estimate, placement, reaper
from ralph.handlers.runpod.api import (
    KEY_VARIABLE,
    VOLUME_TYPES,
    APIError,
    AuthError,
    BadRequest,
    BalanceError,
    CapacityError,
    NetworkVolume,
    NoAccess,
    Pod,
    PodSpec,
    RateLimited,
    RunPodAPI,
    TransientAPIError,
    catalog,
)
from ralph.handlers.runpod.common import PodHandler, task_api, task_file

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Evidence, Param, Problem, Result, TaskFailed, TransientError, criterion
from ralph.measures import POD_READY_SECONDS, Measures
from ralph.model import Task, TaskFile
from ralph.state import now

# 24 GB-class cards that run SDXL + InstantID like an RTX A5000, cheapest first.
DEFAULT_GPUS = ["NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090", "NVIDIA RTX A4500",
                "NVIDIA GeForce RTX 4090", "NVIDIA L4", "NVIDIA RTX A6000"]
DEFAULT_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
CATALOG_BACKOFF_S = (10.0, 20.0, 40.0, 60.0)  # between catalog reads while nothing has room


class CreatePod(PodHandler):
    """Create a RunPod pod (first catalog candidate with room), wait until `ssh true` works, hold it.

    Needs RUNPOD_API_KEY. Candidates are gpu_types × cloud_types × data_centers in that order,
    kept when RunPod's catalog says they have room (and CUDA ≥ min_cuda). `volume` mounts a
    network volume (found by name or id, else created) at the workspace: a model cache that
    outlives the pod. The pod carries a dead-man's switch: it deletes itself when ralph's
    heartbeat stops for heartbeat_timeout_s, when SSH never came up within ready_timeout_s +
    heartbeat_timeout_s, or after max_lifetime_s. Criteria: "Pod créé avec GPU …" (the pod
    exists with one of the asked GPUs), "SSH accessible" (ssh true answers now).
    """

    name = "runpod.create"
    provides = (MachineHandle,)
    # Everything that finds the pod (and its volume) again: a redone task never creates a second.
    remembers = frozenset({"pod_id", "name", "create_sent", "created_at", "gpu_type_id", "cloud_type", "data_center",
                           "catalog_price_per_hr", "cost_per_hr", "stages", "asked_gpus", "volume"})
    params = {
        "gpu_types": Param(list, DEFAULT_GPUS, "RunPod GPU type ids, in order of preference"),
        "cloud_types": Param(list, ["ALL"], "clouds tried for each GPU type: SECURE, COMMUNITY (ALL: both)"),
        "data_centers": Param(list, [], "data centre ids tried for each choice; empty: any"),
        "min_cuda": Param(str, "", "lowest CUDA version of the host, e.g. 12.4; empty: any"),
        "volume": Param((str, dict), "", "network volume: a name or id, or {name, size_gb, type}; empty: none"),
        "image": Param(str, DEFAULT_IMAGE, "container image"),
        "gpu_count": Param(int, 1, "GPUs per pod"),
        "container_disk_gb": Param(int, 40, "container disk (GB)"),
        "volume_gb": Param(int, 50, "host-local disk at the workspace when no network volume is used (GB); 0 for none"),
        "create_budget_s": Param((int, float), 300, "seconds to keep looking for a GPU with room"),
        "ready_timeout_s": Param((int, float), 900, "seconds from create to a working `ssh true`"),
        "heartbeat_timeout_s": Param((int, float), 600, "the pod deletes itself after this long without ralph"),
        "max_lifetime_s": Param((int, float), 10800, "the pod deletes itself this long after it started, whatever "
                                                     "happens"),
        "remote_workspace": Param(str, "/workspace", "where commands run on the pod and volumes mount; empty: where "
                                                     "SSH sessions start"),
        "base_start_command": Param(str, "/start.sh", "what the image runs at start (after the switch is armed)"),
        "pod_state_dir": Param(str, deadman.DEFAULT_STATE_BASE, "the switch's folder on the pod (not on the volume)"),
        "ssh_key": Param(str, "", "private key for the pod; empty: ralph's own key in .ralph/<file>/ssh/"),
        "poll_s": Param((int, float), 5, "seconds between readiness polls"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        problems = []
        if not params["gpu_types"] or not all(isinstance(g, str) and g for g in params["gpu_types"]):
            problems.append(Problem(task.line, f"{task.label}: gpu_types must be a non-empty list of GPU type ids"))
        bad = [c for c in params["cloud_types"] if c not in (*placement.CLOUDS_AND_ALL,)]
        if bad or not params["cloud_types"]:
            problems.append(Problem(task.line, f"{task.label}: cloud_types must be among "
                                               f"{', '.join(placement.CLOUDS_AND_ALL)}"))
        for key in ("create_budget_s", "ready_timeout_s", "heartbeat_timeout_s", "max_lifetime_s", "poll_s"):
            if params[key] <= 0:
                problems.append(Problem(task.line, f"{task.label}: {key} must be positive"))
        if params["min_cuda"] and not placement.is_cuda_version(params["min_cuda"]):
            problems.append(Problem(task.line, f"{task.label}: min_cuda must look like 12.4, not "
                                               f"{params['min_cuda']!r}"))
        volume = params["volume"]
        if isinstance(volume, dict):
            if not volume.get("name") or not isinstance(volume.get("size_gb", 0), int) \
                    or not 10 <= volume.get("size_gb", 50) <= 4096 \
                    or volume.get("type", "STANDARD") not in VOLUME_TYPES:
                problems.append(Problem(task.line, f"{task.label}: volume must be a name, or {{name, size_gb "
                                                   f"(10–4096), type ({'/'.join(VOLUME_TYPES)})}}"))
        return problems + self._catalog_problems(task, params)

    def _catalog_problems(self, task: Task, params: dict[str, Any]) -> list[Problem]:
        """A GPU type RunPod's catalog does not know is a typo found before paying. Needs the key
        (a missing key is reported as such); an unreachable API is a warning, not an error."""
        if not os.environ.get(KEY_VARIABLE, "").strip():
            return []  # reported as a missing key (needs_env)
        try:
            offers = catalog(int(params["gpu_count"]))
        except APIError as error:
            return [Problem(task.line, f"{task.label}: could not read RunPod's GPU catalog: {error}", "warning")]
        known = {o.id for o in offers}
        return [Problem(task.line, f"{task.label}: gpu_types: RunPod's catalog has no GPU type {gpu!r}")
                for gpu in params["gpu_types"] if isinstance(gpu, str) and gpu not in known]

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return estimate.create_estimate(params, context)

    # -- run ---------------------------------------------------------------------------------

    def run(self, ctx: Context) -> Result:
        with task_api() as api:
            return self._run(ctx, api)

    def _run(self, ctx: Context, api: RunPodAPI) -> Result:
        key = self._client_key(ctx)
        pod = self._existing(ctx, api)
        if pod is None:
            pod = self._create(ctx, api, key)
        handle = self._wait_ready(ctx, api, pod, key)
        cost = (handle.ready_at - handle.created_at) / 3600 * handle.cost_per_hr
        waited = handle.ready_at - handle.created_at
        warning = self._switch_warning(ctx, handle)
        return Result(
            summary=(f"pod {handle.name} ({handle.id}) on {handle.gpu} at ${handle.cost_per_hr:.3f}/h; "
                     f"ssh {handle.address} answered {waited:.0f} s after create"
                     + (f"; WARNING: {warning}" if warning else "")),
            data={"pod_id": handle.id, "name": handle.name, "gpu": handle.gpu,
                  "gpu_type_id": ctx.memory.get("gpu_type_id"),
                  "cloud_type": ctx.memory.get("cloud_type"), "data_center": ctx.memory.get("data_center"),
                  "volume": ctx.memory.get("volume"), "cost_per_hr": handle.cost_per_hr, "ssh": handle.address,
                  "seconds_to_ssh": round(waited, 1), "stages": ctx.memory.get("stages", {}),
                  "switch": warning or "armed",
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
            raise TaskFailed(f"ssh_key {given}: the private key and its .pub must both exist")
        return key

    def _existing(self, ctx: Context, api: RunPodAPI) -> Pod | None:
        """The pod an earlier attempt made, found by id, or by name if its create may have gone through."""
        memory = ctx.memory
        pod_id = memory.get("pod_id")
        if pod_id:
            pod = self._read(api, pod_id)
            if pod is None:
                ctx.log(f"pod {pod_id} is gone; creating a new one")
                self._forget(ctx)
                return None
            if pod.status in ("EXITED", "ERROR"):
                self._give_up(ctx, api, pod.id, f"pod {pod_id} is {pod.status}")
            ctx.log(f"reusing pod {pod.name} ({pod.id}), {pod.status}")
            return pod
        name = memory.get("name")
        if name and memory.get("create_sent"):
            return self._adopt_by_name(ctx, api, name)
        return None

    def _adopt_by_name(self, ctx: Context, api: RunPodAPI, name: str) -> Pod | None:
        try:
            pods = api.list_pods()
        except TransientAPIError as error:
            raise TransientError(f"cannot list pods to look for {name}: {error}") from None
        found = next((p for p in pods if p.name == name), None)
        if found is not None:
            ctx.log(f"found pod {name} ({found.id}), created by an earlier attempt whose answer was lost")
            self._record_created(ctx, found.id, found.gpu_id or ctx.memory.get("gpu_type_id", ""))
        return found

    def _create(self, ctx: Context, api: RunPodAPI, key: Path) -> Pod:
        p, memory = ctx.params, ctx.memory
        if not memory.get("name"):
            memory["name"] = reaper.new_pod_name(task_file(ctx), ctx.task.number)
            memory.pop("create_sent", None)
            reaper.Ledger().named(memory["name"], task_file(ctx), ctx.state_dir)
        name = memory["name"]
        switch = deadman.Switch(heartbeat_timeout_s=int(p["heartbeat_timeout_s"]),
                                grace_s=int(p["ready_timeout_s"] + p["heartbeat_timeout_s"]),
                                max_lifetime_s=int(p["max_lifetime_s"]), state_base=p["pod_state_dir"])
        start_command = deadman.start_command(switch, p["base_start_command"])
        mount_path = p["remote_workspace"] or "/workspace"
        started = time.monotonic()
        deadline = started + p["create_budget_s"]
        volume: NetworkVolume | None = None
        tried: list[str] = []
        skipped: set[str] = set()  # GPU pools this key may not use
        for round_number in range(10**6):
            offers = api.gpu_offers(gpu_count=p["gpu_count"])
            if p["volume"] and volume is None:
                volume = self._volume(ctx, api, offers)
            where = [volume.data_center] if volume else p["data_centers"]
            found = placement.place(offers, gpu_types=p["gpu_types"], cloud_types=p["cloud_types"],
                                    data_centers=where, gpu_count=p["gpu_count"], min_cuda=p["min_cuda"] or None)
            if round_number == 0:
                for gpu in found.unknown_gpus:
                    ctx.log(f"RunPod's catalog has no GPU type {gpu!r}; skipped")
                if len(found.unknown_gpus) == len(p["gpu_types"]):
                    raise TaskFailed(f"none of gpu_types is in RunPod's catalog: {', '.join(p['gpu_types'])}")
                memory["asked_gpus"] = [g for g in p["gpu_types"] if g not in found.unknown_gpus]
            for candidate in [c for c in found.available if c.gpu_id not in skipped]:
                spec = PodSpec(
                    name=name, image=p["image"], gpu_id=candidate.gpu_id, gpu_count=p["gpu_count"],
                    cloud=candidate.cloud, data_centers=(candidate.data_center,) if candidate.data_center else (),
                    env={"PUBLIC_KEY": session.public_key(key)}, args=start_command,
                    container_disk_gb=p["container_disk_gb"], volume_id=volume.id if volume else None,
                    persistent_gb=0 if volume else max(10, p["volume_gb"]) if p["volume_gb"] else 0,
                    mount_path=mount_path, min_cuda=p["min_cuda"] or None)
                memory["create_sent"] = True
                try:
                    pod = api.create_pod(spec)
                except CapacityError:
                    tried.append(f"{candidate.label}: no capacity (the catalog said {candidate.availability})")
                    ctx.log(f"no capacity for {candidate.label} although the catalog said {candidate.availability}; "
                            "trying the next candidate")
                    continue
                except NoAccess as error:
                    skipped.add(candidate.gpu_id)
                    tried.append(f"{candidate.label}: {error}")
                    ctx.log(f"no access to {candidate.gpu_id} ({error}); skipped")
                    continue
                except RateLimited as error:
                    found_pod = self._adopt_by_name(ctx, api, name)
                    if found_pod is not None:
                        return found_pod
                    raise TransientError(str(error)) from None
                except TransientAPIError as error:
                    found_pod = self._adopt_by_name(ctx, api, name)  # the pod may exist, its answer lost
                    if found_pod is not None:
                        self._note_choice(ctx, candidate)
                        return found_pod
                    tried.append(f"{candidate.label}: {error}")
                    ctx.log(f"create failed for {candidate.label} ({error}); trying the next candidate")
                    continue
                except (AuthError, BalanceError):
                    raise
                except (BadRequest, APIError) as error:
                    raise TaskFailed(f"RunPod refused to create the pod ({candidate.label}): {error}") from None
                self._note_choice(ctx, candidate)
                self._record_created(ctx, pod.id, candidate.gpu_id)
                ctx.log(f"created pod {name} ({pod.id}) with {candidate.label} at ${candidate.price_per_hr or 0:.3f}/h")
                return pod
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = min(CATALOG_BACKOFF_S[min(round_number, len(CATALOG_BACKOFF_S) - 1)], left)
            full = ", ".join(dict.fromkeys(c.gpu_id for c in found.full)) or "none of the asked GPU types"
            ctx.log(f"no room now ({full}: the catalog says NONE); looking again in {wait:.0f} s "
                    f"({left:.0f} s of create_budget_s left)")
            time.sleep(wait)
        memory.pop("create_sent", None)  # nothing was created: a retry need not look for it
        why = "; ".join(dict.fromkeys(tried)) or "the catalog never showed room for any candidate"
        raise TaskFailed(f"no pod after {time.monotonic() - started:.0f} s (create_budget_s {p['create_budget_s']}): "
                         f"{why}")

    def _volume(self, ctx: Context, api: RunPodAPI, offers: list[Any]) -> NetworkVolume:
        """The task's network volume: found by id or name, else created where the GPUs have room."""
        p, memory = ctx.params, ctx.memory
        wanted = p["volume"] if isinstance(p["volume"], dict) else {"name": p["volume"]}
        name = str(wanted["name"])
        volumes = api.network_volumes()
        found = next((v for v in volumes if v.id == name), None) or next((v for v in volumes if v.name == name), None)
        if found is not None:
            if p["data_centers"] and found.data_center not in p["data_centers"]:
                raise TaskFailed(f"volume {name} is in {found.data_center}, which data_centers excludes")
            ctx.log(f"using network volume {found.name} ({found.id}, {found.size_gb} GB in {found.data_center})")
        else:
            found = self._create_volume(ctx, api, offers, wanted)
        memory["volume"] = {"id": found.id, "name": found.name, "data_center": found.data_center,
                            "size_gb": found.size_gb}
        return found

    def _create_volume(self, ctx: Context, api: RunPodAPI, offers: list[Any], wanted: dict[str, Any]) -> NetworkVolume:
        p = ctx.params
        kind = wanted.get("type", "STANDARD")
        offering = {dc.id for dc in api.data_centers() if kind in dc.volume_types}
        everywhere = placement.place(offers, gpu_types=p["gpu_types"], cloud_types=p["cloud_types"],
                                     data_centers=p["data_centers"]
                                     or sorted({d for o in offers for d in o.data_centers}),
                                     gpu_count=p["gpu_count"], min_cuda=p["min_cuda"] or None)
        where = next((c.data_center for c in everywhere.available if c.data_center in offering), None)
        if where is None:
            raise TaskFailed(f"no data centre offers {kind} volumes and has room for {', '.join(p['gpu_types'])} now; "
                             "name an existing volume or try later")
        # A create whose answer was lost is found by its name on the next try (_volume lists them first).
        volume = api.create_network_volume(name=str(wanted["name"]), size_gb=int(wanted.get("size_gb", 50)),
                                           data_center=where, type=kind)
        ctx.log(f"created network volume {volume.name} ({volume.id}, {volume.size_gb} GB {kind} in {where}): "
                "it bills monthly until you delete it")
        return volume

    def _note_choice(self, ctx: Context, candidate: placement.Candidate) -> None:
        ctx.memory["gpu_type_id"], ctx.memory["cloud_type"] = candidate.gpu_id, candidate.cloud
        ctx.memory["data_center"], ctx.memory["catalog_price_per_hr"] = candidate.data_center, candidate.price_per_hr

    def _record_created(self, ctx: Context, pod_id: str, gpu: str) -> None:
        """The moment the id is known: memory, the shared resource and the ledger."""
        memory = ctx.memory
        memory["pod_id"] = pod_id
        memory.setdefault("created_at", time.time())
        reaper.Ledger().created(memory["name"], pod_id)
        ctx.hold(MachineHandle.key, {"id": pod_id, "name": memory["name"], "gpu": gpu,
                                    "created_at": memory["created_at"], "known_hosts": str(self._known_hosts(ctx))})

    def _forget(self, ctx: Context) -> None:
        for key in ("pod_id", "name", "create_sent", "created_at", "stages", "cost_per_hr"):
            ctx.memory.pop(key, None)
        if ctx.resources.get(MachineHandle.key) is not None:
            ctx.release(MachineHandle.key)

    def _known_hosts(self, ctx: Context) -> Path:
        return ctx.state_dir / "known_hosts"

    # -- readiness ---------------------------------------------------------------------------

    def _wait_ready(self, ctx: Context, api: RunPodAPI, pod: Pod, key: Path) -> MachineHandle:
        p, memory = ctx.params, ctx.memory
        created_at = memory.setdefault("created_at", time.time())
        deadline = created_at + p["ready_timeout_s"]
        stages: dict[str, float] = dict(memory.get("stages", {}))
        handle = MachineHandle(
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
                if info.status in ("ERROR", "EXITED"):
                    self._give_up(ctx, api, pod.id, f"pod {pod.id} went to {info.status} while starting")
                stages.setdefault(info.status.lower(), round(time.time() - created_at, 1))
                if not info.running:
                    last = f"status {info.status}"
                elif info.ssh is None:
                    last = "RUNNING, no direct SSH endpoint yet"
                else:
                    handle = replace(handle, host=info.ssh.host, port=info.ssh.port, user=info.ssh.user,
                                     gpu=info.gpu_id or "", cost_per_hr=info.cost_per_hr)
                    answered, last = self._probe(handle, min(10.0, max(1.0, deadline - time.time())))
                    if answered:
                        stages["ssh"] = round(time.time() - created_at, 1)
                        memory["stages"] = stages
                        return self._ready(ctx, handle)
                if memory.get("stages") != stages:
                    memory["stages"] = stages
            if time.time() >= deadline:
                self._give_up(ctx, api, pod.id, f"no working `ssh true` {p['ready_timeout_s']} s after create ({last})")
            time.sleep(min(p["poll_s"], max(0.05, deadline - time.time())))

    def _probe(self, handle: MachineHandle, timeout: float) -> tuple[bool, str]:
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

    def _ready(self, ctx: Context, handle: MachineHandle) -> MachineHandle:
        cost = handle.cost_per_hr or float(ctx.memory.get("catalog_price_per_hr") or 0.0)
        handle = replace(handle, cost_per_hr=cost, ready_at=time.time())
        ctx.memory["cost_per_hr"] = cost
        ctx.publish(handle)
        session.attach(handle)  # the heartbeat starts now, well inside the switch's grace period
        Measures().record(POD_READY_SECONDS, handle.ready_at - handle.created_at,
                          f"{handle.gpu or 'a pod'}, create to `ssh true`")
        ctx.log(f"pod {handle.id} answers ssh at {handle.address}; heartbeat every {handle.heartbeat_interval_s:g} s")
        return handle

    def _switch_warning(self, ctx: Context, handle: MachineHandle) -> str:
        """What the switch found when it armed: whether it can reach the API and read its own pod.
        A switch that cannot fire leaves the pod protected only by ralph's terminate and reaper."""
        try:
            machine = session.attach(handle)
            report = machine.run(f"cat {deadman.quote(deadman.arming_path(handle.state_base, handle.id))} 2>/dev/null",
                                 check=False, timeout=20).stdout.strip()
        except Exception as error:  # noqa: BLE001 (the report is advisory; the pod works)
            report = f"unreadable ({type(error).__name__})"
        if report.startswith("ok"):
            return ""
        warning = (f"the pod's dead-man's switch may not be able to delete it ({report or 'no arming report'}); "
                   "it is protected only by ralph's terminate and reaper")
        ctx.log(warning)
        return warning

    def _give_up(self, ctx: Context, api: RunPodAPI, pod_id: str, why: str) -> None:
        ctx.log(f"{why}: terminating pod {pod_id}")
        done = reaper.terminate_and_confirm(api, pod_id, timeout_s=60, poll_s=min(2.0, ctx.params["poll_s"]))
        if done.gone:
            reaper.Ledger().gone(ctx.memory.get("name", ""))
            self._forget(ctx)
            raise TaskFailed(f"{why}; the pod was terminated (confirmed gone); run again for a new one")
        raise TaskFailed(f"{why}; terminating pod {pod_id} was not confirmed ({done.describe()}): "
                         "the clean-up task will try again")

    # -- API plumbing --------------------------------------------------------------------------

    def _read(self, api: RunPodAPI, pod_id: str, *, tolerate: bool = False) -> Any:
        try:
            return api.get_pod(pod_id)
        except TransientAPIError as error:
            if tolerate:
                return _UNKNOWN
            raise TransientError(f"reading pod {pod_id}: {error}") from None

    # -- checks ------------------------------------------------------------------------------

    @criterion(r"\bpod\b.*\b(cree|created|create|up|running|lance)\b|\bcreer?\b.*\bpod\b")
    def pod_created(self, ctx: Context, result: Result, text: str) -> Evidence:
        pod_id = result.data.get("pod_id")
        if not pod_id:
            return Evidence(False, "no pod was created")
        with RunPodAPI.from_env() as api:
            pod = api.get_pod(pod_id)
        if pod is None:
            return Evidence(False, f"pod {pod_id} no longer exists")
        asked = list(ctx.memory.get("asked_gpus", []))
        ok = pod.running and pod.gpu_id in asked
        return Evidence(ok, f"pod {pod.name} ({pod.id}) is {pod.status} with GPU {pod.gpu_id} "
                            f"(asked, in order: {', '.join(asked) or '?'}) at "
                            f"${pod.cost_per_hr or result.data.get('cost_per_hr', 0):.3f}/h")

    @criterion(r"\bssh\b")
    def ssh_works(self, ctx: Context, result: Result, text: str) -> Evidence:
        handle = MachineHandle.from_record(ctx.resources.get(MachineHandle.key))
        if handle is None:
            return Evidence(False, "no pod with an SSH endpoint is held")
        started = time.monotonic()
        answered, detail = self._probe(handle, 10.0)
        if not answered:
            return Evidence(False, detail)
        return Evidence(True, f"`ssh {handle.address} true` answered in {time.monotonic() - started:.2f} s at {now()} "
                              "(host key pinned in ralph's state folder)")


_UNKNOWN: Any = object()  # a poll whose answer was lost: neither "gone" nor "there"
