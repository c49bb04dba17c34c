"""The serverless endpoint a ``comfyui.run`` with ``executor: serverless`` sends its jobs to: an existing one
(``endpoint: ID``), or one created through REST v2 for the run (``endpoint: {create: true, …}``) and deleted
when the task is over unless ``keep: true``.

A created endpoint's id is in the task's memory from the moment RunPod answers: a run killed before its
clean-up leaves it there, and the rerun uses it (and the jobs it holds) instead of creating another.
With ``workers.min = 0`` an idle endpoint bills nothing but its volume.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ralph.context import Context
from ralph.handler import Problem, TaskFailed, TransientError

# runpod-workers/worker-comfyui, pinned: a new release may change the job's input or output shape.
WORKER_IMAGE = "runpod/worker-comfyui:5.5.0-base"
CREATE_KEYS = {"create", "gpu_pools", "workers_max", "volume", "image", "keep", "name"}
MEMORY_KEY = "endpoint_created"


def problems(wanted: Any, line: int) -> list[Problem]:
    """What ``ralph check`` says about ``endpoint``, offline."""
    if isinstance(wanted, str):
        return [] if wanted.strip() else [Problem(line, "endpoint: an empty endpoint id")]
    if not isinstance(wanted, dict) or wanted.get("create") is not True:
        return [Problem(line, "endpoint: an endpoint id, or {create: true, gpu_pools: [...], workers_max: N, …}")]
    found = []
    unknown = sorted(set(wanted) - CREATE_KEYS)
    if unknown:
        found.append(Problem(line, f"endpoint: unknown key(s) {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(CREATE_KEYS))}"))
    pools = wanted.get("gpu_pools")
    if not (isinstance(pools, list) and pools and all(isinstance(p, str) for p in pools)):
        found.append(Problem(line, "endpoint: gpu_pools must list serverless GPU pools, such as [ADA_24]"))
    if not (isinstance(wanted.get("workers_max", 3), int) and wanted.get("workers_max", 3) >= 1):
        found.append(Problem(line, "endpoint: workers_max must be a whole number of workers, at least 1"))
    return found


@contextmanager
def endpoint_for(ctx: Context) -> Iterator[str]:
    """The id the jobs go to, for as long as the sweep runs."""
    wanted = ctx.params["endpoint"]
    if isinstance(wanted, str):
        yield wanted
        return
    from ralph.handlers.runpod.api import APIError, TransientAPIError
    from ralph.handlers.runpod.common import api_for_task

    api = api_for_task()
    try:
        endpoint_id = ctx.memory.get(MEMORY_KEY)
        if endpoint_id and not api.endpoint_exists(endpoint_id):
            endpoint_id = None
        if endpoint_id:
            ctx.log(f"using endpoint {endpoint_id}, created by an earlier run")
        else:
            endpoint_id = api.create_endpoint(_create_body(ctx, api, wanted))
            ctx.memory[MEMORY_KEY] = endpoint_id  # before anything else: the clean-up must find it
            ctx.log(f"created serverless endpoint {endpoint_id} ({', '.join(wanted['gpu_pools'])}, "
                    f"up to {wanted.get('workers_max', 3)} workers)")
    except TransientAPIError as error:
        raise TransientError(f"creating the endpoint: {error}") from None
    except APIError as error:
        raise TaskFailed(f"RunPod refused the endpoint: {error}") from None
    try:
        yield endpoint_id
    except TransientError:
        raise  # retried: the endpoint and its jobs are kept for the retry
    except BaseException:
        _delete(ctx, api, endpoint_id, wanted)
        raise
    _delete(ctx, api, endpoint_id, wanted)


def _create_body(ctx: Context, api: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": str(wanted.get("name") or f"ralph-{ctx.file.path.stem}-{ctx.task.number}")[:60],
        "type": "QUEUE",
        "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
        "image": str(wanted.get("image") or WORKER_IMAGE),
        "gpu": {"pools": list(wanted["gpu_pools"])},
        "workers": {"min": 0, "max": int(wanted.get("workers_max", 3))},
    }
    if wanted.get("volume"):
        name = str(wanted["volume"])
        volume = next((v for v in api.network_volumes() if name in (v.id, v.name)), None)
        if volume is None:
            raise TaskFailed(f"endpoint: no network volume {name} (comfyui.setup or runpod.create makes it)")
        body["networkVolumes"] = [volume.id]
        body["dataCenterIds"] = [volume.data_center]  # workers run where their volume is
    return body


def _delete(ctx: Context, api: Any, endpoint_id: str, wanted: dict[str, Any]) -> None:
    if wanted.get("keep"):
        ctx.log(f"endpoint {endpoint_id} kept (keep: true); with no job its workers bill nothing")
        return
    from ralph.handlers.runpod.api import APIError

    try:
        api.delete_endpoint(endpoint_id)
    except APIError as error:
        ctx.log(f"could not delete endpoint {endpoint_id}: {error} — delete it in RunPod's console")
        return
    del ctx.memory[MEMORY_KEY]
    ctx.log(f"deleted serverless endpoint {endpoint_id}")
