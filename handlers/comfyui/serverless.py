"""``comfyui.run`` with ``executor: serverless``: each variant × seed of the sweep one job on a RunPod
Serverless endpoint running runpod-workers/worker-comfyui, at most ``concurrency`` at once.

Jobs go through the ``runpod`` SDK's ``Endpoint`` (the optional extra ``ralph[serverless]``; it reads
``RUNPOD_ENDPOINT_BASE_URL`` at import). RunPod chooses job ids, so each is saved in the task's memory
the moment ``/run`` answers: a resumed run polls the jobs it has and resubmits only those that are
missing, failed to survive (cancelled, timed out) or expired (results live 30 minutes).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralph.handlers.comfyui import workflow as wf
from ralph.handlers.comfyui.run import brought_home, kept_image

from ralph import units
from ralph.context import Context, ProgressBar
from ralph.handler import Interrupted, Problem, TaskBlocked, TaskFailed, TransientError

EXTRA_MISSING = "executor: serverless needs the runpod SDK: pip install 'ralph[serverless]'"
KEY_VARIABLE = "RUNPOD_API_KEY"
RUN_BODY_LIMIT = 10 * 1024 * 1024  # RunPod refuses bigger /run bodies
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
LOST = {"CANCELLED", "TIMED_OUT"}  # an earlier run's job that brought nothing: submitted again
POLL_S = 0.5


def run(ctx: Context, flow: wf.Workflow, variants: list[wf.Variant]) -> tuple[list[dict[str, Any]], float | None, str]:
    """Run every variant as a job; (the images brought home, their cost, where they ran)."""
    from ralph.handlers.runpod.endpoint import endpoint_for

    with endpoint_for(ctx) as endpoint:
        sweep = Sweep(ctx, flow, variants, endpoint)
        images = sweep.run()
    seconds, cost = sweep.cost()
    price = ctx.params["worker_usd_per_hour"]
    ctx.log(f"{units.count(len(variants), 'job')}: {units.duration(seconds)} of worker time"
            + (f" × {units.usd(price)}/h = {units.usd(cost)}" if price else " (no worker_usd_per_hour: cost unknown)"))
    return images, cost if price else None, f"serverless endpoint {endpoint}"


def problems(params: dict[str, Any], flow: wf.Workflow, folder: Path) -> list[Problem]:
    """What ``ralph check`` finds in the serverless parameters, offline."""
    line = flow.fallback_line
    found = []
    from ralph.handlers.runpod import endpoint

    if not params["endpoint"]:
        found.append(Problem(line, "executor: serverless needs endpoint: an endpoint id, or {create: true, …}"))
    else:
        found += endpoint.problems(params["endpoint"], line)
    if params["concurrency"] < 1:
        found.append(Problem(line, f"concurrency: {params['concurrency']} is not a positive number of jobs"))
    inputs = params["inputs"] or {}
    for name, relative in inputs.items():
        if not (folder / Path(str(relative)).expanduser()).is_file():
            found.append(Problem(line, f"inputs: {name}: no file {relative}"))
    for name in missing_inputs(flow.graph, inputs):
        found.append(Problem(line, f"LoadImage reads {name}, which a serverless worker has only if inputs sends it"))
    return found


def plan(params: dict[str, Any], variants: int, worker_seconds: float) -> list[str]:
    """The dry run's lines: the jobs, how many at once, and what the worker time costs."""
    jobs = units.count(variants, "job")
    wanted = params["endpoint"]
    where = f"endpoint {wanted}" if isinstance(wanted, str) else (
        f"a new endpoint ({', '.join(wanted.get('gpu_pools') or [])}, up to {wanted.get('workers_max', 3)} workers"
        + (", kept" if wanted.get("keep") else ", deleted afterwards") + ")")
    lines = [f"serverless: {jobs} on {where}, at most {params['concurrency']} at once"]
    price = params["worker_usd_per_hour"]
    if price:
        lines.append(f"cost ≈ {units.duration(worker_seconds)} of worker time × {units.usd(price)}/h = "
                     f"{units.usd(worker_seconds / 3600 * price)}")
    else:
        lines.append("cost unknown: set worker_usd_per_hour")
    return lines


def load_sdk() -> Any:
    """The runpod SDK, imported with the root logger left as it was (its import calls
    ``logging.basicConfig(level=INFO)``, which would print every HTTP request)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import runpod
    except ImportError:
        raise TaskBlocked(EXTRA_MISSING) from None
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers
    return runpod


def encoded_inputs(ctx: Context) -> list[dict[str, str]]:
    """The files ``inputs`` names ({name in the workflow: path}), base64 for the job's ``images``."""
    images, total = [], 0
    for name, relative in (ctx.params.get("inputs") or {}).items():
        path = ctx.path(str(relative))
        if not path.is_file():
            raise TaskFailed(f"inputs: {name}: no file {ctx.display_path(path)}")
        size = path.stat().st_size
        total += size * 4 // 3
        if total > RUN_BODY_LIMIT:
            raise TaskFailed(f"inputs: {name} ({units.size(size)}) takes the job past RunPod's "
                             f"{units.size(RUN_BODY_LIMIT)} request limit")
        images.append({"name": str(name), "image": base64.b64encode(path.read_bytes()).decode("ascii")})
    return images


def missing_inputs(graph: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    """Files the workflow's LoadImage nodes name that ``inputs`` does not send: a worker has none."""
    named = [node.get("inputs", {}).get("image") for node in graph.values() if node.get("class_type") == "LoadImage"]
    return sorted({str(n) for n in named if isinstance(n, str) and n not in inputs})


@dataclass
class Job:
    variant: wf.Variant
    record: dict[str, Any]  # what the task's memory keeps: job_id, graph digest, images
    bar: ProgressBar | None = None


class Sweep:
    """The sweep's jobs on one endpoint: submitted, followed, brought home."""

    def __init__(self, ctx: Context, flow: wf.Workflow, variants: list[wf.Variant], endpoint_id: str) -> None:
        key = os.environ.get(KEY_VARIABLE, "").strip()
        if not key:
            raise TaskBlocked(f"executor: serverless needs {KEY_VARIABLE}")
        self.sdk = load_sdk()
        self.ctx, self.flow, self.endpoint_id = ctx, flow, endpoint_id
        self.endpoint = self.sdk.Endpoint(endpoint_id, api_key=key)
        self.concurrency = max(1, int(ctx.params["concurrency"]))
        self.images = encoded_inputs(ctx)
        saved: dict[str, Any] = dict(ctx.memory.get("jobs", {}))
        self.jobs = []
        for variant in variants:
            record = saved.get(variant.label, {})
            if record.get("graph") != wf.graph_digest(variant.graph):
                record = {"graph": wf.graph_digest(variant.graph)}
            self.jobs.append(Job(variant, record))
        self._save()

    def run(self) -> list[dict[str, Any]]:
        waiting = [j for j in self.jobs if not brought_home(self.ctx, j.record)]
        active = [j for j in waiting if j.record.get("job_id")]  # an earlier run's: polled, not resubmitted
        queue = [j for j in waiting if not j.record.get("job_id")]
        failures: list[str] = []
        with ExitStack() as bars:
            try:
                while active or (queue and not failures):
                    while queue and not failures and len(active) < self.concurrency:
                        job = queue.pop(0)
                        self._submit(job)
                        active.append(job)
                    for job in list(active):
                        if job.bar is None:
                            job.bar = bars.enter_context(self.ctx.progress(f"serverless {job.variant.label}", None))
                        state = self._status(job)
                        if state is None or state["status"] in LOST:  # expired, or cancelled by an earlier run
                            self.ctx.log(f"{job.variant.label}: job {job.record['job_id']} "
                                         f"{'expired' if state is None else state['status'].lower()}: submitted again")
                            self._submit(job)
                            continue
                        self._show(job, state)
                        if state["status"] == "COMPLETED":
                            self._bring_home(job, state)
                            active.remove(job)
                        elif state["status"] == "FAILED":
                            failures.append(f"{job.variant.label}: {readable_error(state.get('error'))}")
                            job.record.pop("job_id", None)  # a rerun submits it again
                            self._save()
                            active.remove(job)
                    if active:
                        time.sleep(POLL_S)
            except (Interrupted, KeyboardInterrupt):
                # Every job with an id, not only `active`: the signal may land between a /run and the append.
                self._cancel([j for j in self.jobs if j.record.get("job_id") and not j.record.get("images")])
                raise
        if failures:
            raise TaskFailed("; ".join(failures))
        return [image for job in self.jobs for image in job.record.get("images", [])]

    def cost(self) -> tuple[float, float]:
        """(worker seconds billed, US dollars): the worker price × each job's execution time."""
        seconds = sum(float(j.record.get("execution_s") or 0.0) for j in self.jobs)
        return seconds, seconds / 3600 * float(self.ctx.params.get("worker_usd_per_hour") or 0.0)

    # -- internals -------------------------------------------------------------------------

    def _save(self) -> None:
        self.ctx.memory["jobs"] = {j.variant.label: j.record for j in self.jobs}

    def _submit(self, job: Job) -> None:
        import requests

        try:
            answer = self.endpoint.run({"input": {"workflow": job.variant.graph, "images": self.images}})
        except requests.RequestException as error:
            raise TransientError(f"endpoint {self.endpoint_id} refused the job for {job.variant.label}: "
                                 f"{error}") from error
        job.record.update(job_id=answer.job_id, submitted_at=time.time())
        self._save()  # before anything else: a run killed now finds this job instead of paying for it twice
        self.ctx.log(f"{job.variant.label}: job {answer.job_id}")

    def _status(self, job: Job) -> dict[str, Any] | None:
        import requests

        try:
            return self.endpoint.rp_client.get(f"{self.endpoint_id}/status/{job.record['job_id']}")
        except requests.HTTPError as error:
            if error.response is not None and error.response.status_code == 404:
                return None
            raise TransientError(f"endpoint {self.endpoint_id}: {error}") from error
        except requests.RequestException as error:
            raise TransientError(f"endpoint {self.endpoint_id} did not answer: {error}") from error

    def _show(self, job: Job, state: dict[str, Any]) -> None:
        status = state["status"].replace("_", " ").lower()
        progress = state.get("output") if state["status"] == "IN_PROGRESS" else None
        detail = progress.get("progress") if isinstance(progress, dict) else None
        assert job.bar is not None
        job.bar.update(0, None, f"{job.variant.label}: {status}" + (f" — {detail}" if detail else ""))

    def _bring_home(self, job: Job, state: dict[str, Any]) -> None:
        outputs = (state.get("output") or {}).get("images") or []
        if not outputs:
            raise TaskFailed(f"{job.variant.label}: job {job.record['job_id']} finished without images: "
                             f"{readable_error((state.get('output') or {}).get('errors'))}")
        values = {**self.flow.values(), **job.variant.values}
        prefix = str(values.get("filename_prefix") or "ComfyUI")
        folder = self.ctx.path(self.ctx.params["output_dir"])
        seconds = (state.get("executionTime") or 0) / 1000
        images = []
        for index, output in enumerate(outputs):
            name = variant_file_name(prefix, job.variant.label, output["filename"], index)
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(fetch_output(output))
            # worker-comfyui names the file only; it saved it under the SaveImage prefix's folder.
            server_path = "/".join(p for p in ("output", str(Path(prefix).parent), output["filename"]) if p != ".")
            images.append(kept_image(self.ctx, path, server_path, values, job.variant.label, job.record["job_id"],
                                     seconds, None))
        job.record.update(images=images, execution_s=seconds)
        self._save()

    def _cancel(self, active: list[Job]) -> None:
        for job in active:
            try:
                self.endpoint.rp_client.post(f"{self.endpoint_id}/cancel/{job.record['job_id']}", data=None, timeout=5)
                self.ctx.log(f"{job.variant.label}: job {job.record['job_id']} cancelled")
            except Exception as error:  # noqa: BLE001 — leaving on Ctrl-C: say it, never hide the interrupt
                self.ctx.log(f"{job.variant.label}: could not cancel job {job.record['job_id']}: {error}")


def variant_file_name(prefix: str, label: str, server_name: str, index: int) -> str:
    """``quality_tests/elena_refiner_cfg=5.0.png``: one file per variant, whichever worker made it
    (each worker numbers its files from 00001, so the server's own names collide)."""
    slug = re.sub(r"[^\w.=-]+", "_", label).strip("_") or "base"
    suffix = Path(server_name).suffix or ".png"
    return f"{prefix}_{slug}{f'_{index + 1}' if index else ''}{suffix}"


def fetch_output(output: dict[str, Any]) -> bytes:
    """An output image's bytes: inline base64, or the S3 URL the worker uploaded it to."""
    if output.get("type") == "s3_url":
        import httpx

        answer = httpx.get(str(output["data"]), timeout=120, follow_redirects=True)
        answer.raise_for_status()
        return answer.content
    data = str(output.get("data", ""))
    return base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data)


def readable_error(error: Any) -> str:
    """worker-comfyui's error (a string, a list of strings, or JSON-ish text) on one line."""
    if not error:
        return "no message"
    if isinstance(error, list):
        return "; ".join(readable_error(e) for e in error)
    return " ".join(str(error).split())
