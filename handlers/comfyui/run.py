"""``comfyui.run``: run the task's workflow on a ComfyUI server and bring its images home."""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.handlers.comfyui import workflow as wf
from ralph.handlers.comfyui.service import DEFAULT_PORT
from ralph.handlers.facts import ComfyServer, Images, MachineHandle
from ralph.handlers.images import pngtext

from ralph import units
from ralph.config import load_config
from ralph.context import Context, EstimateContext
from ralph.facts import Need
from ralph.handler import (
    Estimate,
    Evidence,
    Figure,
    Handler,
    Interrupted,
    Param,
    Problem,
    Result,
    TaskBlocked,
    TaskFailed,
    TransientError,
    criterion,
)
from ralph.measures import SECONDS_PER_IMAGE, Measures
from ralph.model import Task, TaskFile
from ralph.paths import run_folder
from ralph.state import state_dir_for

if TYPE_CHECKING:  # httpx and websockets load when a workflow runs, not for `ralph check`
    from ralph.handlers.comfyui.client import ComfyClient
    from ralph.handlers.comfyui.schema import NodeSchema

PNG_KEY = "ralph"  # the PNG text chunk holding a variant's parameters
DEFAULT_SECONDS_PER_IMAGE = 60.0  # SDXL with a refiner pass on a 24 GB card, roughly


class ComfyRun(Handler):
    """Run the task's ComfyUI workflow and download its images.

    The workflow is the task's own node list (``Node 11: KSampler … → params: CFG=7.0``) with
    its Positive/Negative prompts, or a template from workflows/ (``template: refiner``);
    ``overrides`` change parameters by name (cfg, denoise2, steps, lora_strength, seed…), and
    ``sweep`` (``{cfg: [5, 7, 9]}``) plus ``seeds`` run every combination in one session.
    ``ralph check`` validates it against ComfyUI's node schemas and lints it; before paying for
    anything the run validates it again against the live server's /object_info.
    Each prompt id is saved before submitting, so a resumed run finds its prompt instead of
    resubmitting.  Images land in ``output_dir`` with their parameters in the PNG's "ralph" text.
    ``executor: serverless`` runs each variant as a job on a RunPod Serverless endpoint instead
    (serverless.py).
    """

    name = "comfyui.run"
    needs = (Need(MachineHandle, unless=("server", "executor=serverless")),)
    provides = (Images,)
    warm_imports = ("ralph.handlers.comfyui.client", "httpcore")  # httpx imports httpcore on first use
    params = {
        "template": Param((str, type(None)), None, "a workflow template of workflows/ instead of the node list"),
        "overrides": Param(dict, {}, "workflow parameters to change, by name or 'node.input'"),
        "sweep": Param(dict, {}, "parameter name → list of values; every combination runs"),
        "seeds": Param(list, [], "seeds to run each variant with"),
        "server": Param((str, type(None)), None, "ComfyUI URL; default: the pod's, through an SSH tunnel"),
        "output_dir": Param(str, "output/comfyui", "where images are downloaded (relative to the task file)"),
        "stall_timeout": Param((int, float), 600, "seconds without progress before giving up"),
        "strict_lint": Param(bool, False, "treat lint warnings as errors"),
        "seconds_per_image": Param((int, float, type(None)), None, "generation time the estimate assumes; "
                                   "default: the last one measured on this machine"),
        # executor: serverless (handlers/comfyui/serverless.py): each variant a RunPod Serverless job
        "executor": Param(str, "pod", "pod (a ComfyUI server) or serverless (jobs on a RunPod endpoint)"),
        "endpoint": Param((str, dict, type(None)), None, "serverless: the endpoint id, or {create: true, …}"),
        "concurrency": Param(int, 3, "serverless: jobs running at once"),
        "inputs": Param(dict, {}, "serverless: files the LoadImage nodes name, {name: path}"),
        "worker_usd_per_hour": Param((int, float, type(None)), None, "serverless: the worker's price"),
    }

    def kept_on_redo(self, memory: Mapping[str, Any]) -> dict[str, Any]:
        """A redone task finds its prompts (on a server) or jobs (on an endpoint) again, but
        downloads their images anew."""
        kept = {}
        for key in ("variants", "jobs"):
            records = {label: {k: v for k, v in record.items() if k != "images"}
                       for label, record in memory.get(key, {}).items()}
            if records:
                kept[key] = records
        return kept

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        flow = wf.build(file, task, params, wf.snapshot_schemas(state_dir_for(file.path)), _provided_files(file))
        problems = [_as_problem(p, flow.fallback_line, params["strict_lint"]) for p in flow.problems]
        if params["executor"] == "serverless":
            from ralph.handlers.comfyui import serverless

            problems += serverless.problems(params, flow, file.path.parent)
        elif params["executor"] != "pod":
            problems.append(Problem(flow.fallback_line, f"executor: {params['executor']!r} is not pod or serverless"))
        return problems

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        flow = wf.build(context.file, task, params, wf.snapshot_schemas(context.state_dir),
                        _provided_files(context.file))
        source = (f"template {params['template']}" if params["template"]
                  else f"the task's node list ({len(flow.graph)} nodes)")
        lines = [f"runs {source} on ComfyUI" + (f" at {params['server']}" if params["server"] else "")]
        if params["overrides"]:
            lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in params["overrides"].items()))
        sweep, seeds = params["sweep"], params["seeds"]
        variants = math.prod(len(values) for values in sweep.values()) * max(1, len(seeds))
        per_variant = _images_per_variant(flow.graph)
        images = variants * per_variant
        axes = [f"{name} {', '.join(map(str, values))}" for name, values in sweep.items()]
        axes += [f"seeds {', '.join(map(str, seeds))}"] if seeds else []
        shape = f": {units.count(variants, 'variant')} ({' × '.join(axes)})" if axes else ""
        shape += f", {per_variant} images each" if per_variant > 1 else ""
        lines.append(f"{units.count(images, 'image')}{shape}, into {params['output_dir']}/")
        pace = seconds_per_image(params, context.measures)
        basis = f"{units.count(images, 'image')} × {units.duration(pace.value)} ({pace.basis})"
        if params["executor"] == "serverless":
            from ralph.handlers.comfyui import serverless

            lines.extend(serverless.plan(params, variants, images * pace.value))
        return Estimate(tuple(lines), images=images, machine_seconds=Figure(images * pace.value, basis))

    def run(self, ctx: Context) -> Result:
        from ralph.handlers.comfyui.client import ComfyClient, ComfyError

        if ctx.params["executor"] == "serverless":
            from ralph.handlers.comfyui import serverless

            # No server to ask: the workflow is checked against the schemas `ralph check` uses.
            flow = wf.build(ctx.file, ctx.task, ctx.params, wf.snapshot_schemas(ctx.state_dir),
                            _provided_files(ctx.file))
            _refuse_errors(flow, ctx.params["strict_lint"])
            variants = flow.variants(ctx.params["sweep"], ctx.params["seeds"])
            images, cost, where = serverless.run(ctx, flow, variants)
            return _result(ctx, flow, variants, images, where, None, cost)
        with server_url(ctx) as url, ComfyClient(url, stall_timeout=ctx.params["stall_timeout"]) as client:
            try:
                schemas = _live_schemas(ctx, client)
            except (ComfyError, OSError) as error:
                raise TransientError(f"ComfyUI at {url} did not answer: {error}") from error
            server = ctx.fact(ComfyServer)
            flow = wf.build(ctx.file, ctx.task, ctx.params, schemas,
                            (server.files or None) if server is not None else _provided_files(ctx.file))
            _refuse_errors(flow, ctx.params["strict_lint"])
            variants = flow.variants(ctx.params["sweep"], ctx.params["seeds"])
            images = [image for variant, following in zip(variants, [*variants[1:], None], strict=True)
                      for image in self._variant(ctx, client, variant, flow, following)]
            version = _version(client)
        return _result(ctx, flow, variants, images, url, version)

    def _variant(self, ctx: Context, client: ComfyClient, variant: wf.Variant, flow: wf.Workflow,
                 following: wf.Variant | None) -> list[dict[str, Any]]:
        """Run one variant and bring its images home. Once it is executing, the ``following``
        variant is queued behind it: the GPU goes on to it while this one's images come home,
        instead of waiting for ralph's next request."""
        from ralph.handlers.comfyui.client import ComfyError, PromptRejected, ServerGone, Stalled

        known = _prompt_record(ctx, variant)
        if known is None:
            return list(ctx.memory["variants"][variant.label]["images"])  # finished in an earlier run
        record, fresh = known
        if not fresh and client.find(record["prompt_id"]) == "error":  # stopped or failed in an earlier run
            record, fresh = _new_prompt(ctx, variant, record), True
        ctx.log(f"{variant.label}: prompt {record['prompt_id']}")
        folder = run_folder(ctx.path(ctx.params["output_dir"]), ctx.file.path, ctx.run_id)
        first_step: list[float] = []  # when the server reported its first step (bench/volume_cache.py)
        behind: list[str | None] = []  # once offered: the following variant's prompt id, if it was queued
        with ctx.progress(f"ComfyUI {variant.label}", None, unit="steps") as bar:

            def progress(node: str, value: int, maximum: int) -> None:
                first_step[:] = first_step or [time.time()]
                kind = variant.graph.get(node, {}).get("class_type", "?")
                bar.update(value, maximum, f"{variant.label}: node {node} ({kind}) step {value}/{maximum}")
                if following is not None and not behind:
                    behind.append(_queue_behind(ctx, client, following))

            try:
                try:
                    result = client.run(variant.graph, prompt_id=record["prompt_id"], fresh=fresh,
                                        on_progress=progress, dest=folder)
                except BaseException as error:
                    # This task stops: the following variant must not run on. Withdrawn first, or it
                    # would start the moment the running one is interrupted.
                    running = [record["prompt_id"]] if isinstance(error, Interrupted) else []
                    for prompt_id in [p for p in behind if p] + running:
                        _withdraw(client, prompt_id)
                    raise
            except PromptRejected as error:
                raise TaskFailed(f"ComfyUI refused the workflow: {error}") from error
            except ServerGone as error:
                raise _stopped(ctx, error) from error
            except Stalled as error:
                raise TaskFailed(str(error)) from error
            except ComfyError as error:
                raise TaskFailed(f"{variant.label}: {error}") from error
        paths = [_labelled(path, variant.label) for path in client.download(result, folder)]  # what run() left
        values = {**flow.values(), **variant.values}
        images = []
        for output, path in zip([o for o in result.outputs if o.type == "output"], paths, strict=False):
            server_path = "/".join(p for p in ("output", output.subfolder, output.filename) if p)
            images.append(kept_image(ctx, path, server_path, values, variant.label, result.prompt_id,
                                     result.server_seconds, first_step[0] if first_step else None))
        record["images"] = images
        ctx.memory["variants"] = {**ctx.memory["variants"], variant.label: record}
        if images and result.server_seconds:
            machine = ctx.fact(MachineHandle)
            on = f" on {machine.gpu}" if machine is not None and machine.gpu else ""
            Measures().record(SECONDS_PER_IMAGE, result.server_seconds / len(images),
                              f"{len(images)} image(s) of {ctx.file.path.name} task {ctx.task.number}{on}")
        return images

    @criterion(r"workflow .*(sans erreur|without error)|workflow (ran|runs|executed)")
    def ran(self, ctx: Context, result: Result, text: str) -> Evidence:
        images = result.data.get("images", [])
        if not images:
            return Evidence(False, "no image came back")
        prompts = sorted({i["prompt_id"] for i in images})
        return Evidence(True, f"{len(prompts)} prompt(s) finished with success: {', '.join(p[:8] for p in prompts)}")

    @criterion(r"image.* (sauvegardee|saved|enregistree)")
    def saved(self, ctx: Context, result: Result, text: str) -> Evidence:
        images = result.data.get("images", [])
        if not images:
            return Evidence(False, "no image was saved")
        named = _named_folder(text)
        missing = [i["path"] for i in images if not ctx.path(i["path"]).is_file()]
        if missing:
            return Evidence(False, f"not on disk: {', '.join(missing)}")
        if named and not all(f"{i['server_path']}".startswith(named) for i in images):
            where = ", ".join(i["server_path"] for i in images)
            return Evidence(False, f"saved as {where}, not under {named}")
        where = ", ".join(f"{i['server_path']} → {i['path']}" for i in images)
        return Evidence(True, f"saved {where}")


def _version(client: ComfyClient) -> str | None:
    """The version of the ComfyUI that ran the workflow (known since the first prompt was sent;
    None if the server does not say, or no longer answers)."""
    from ralph.handlers.comfyui.client import ComfyError

    try:
        name = client.version_name()
    except (ComfyError, OSError, KeyError):
        return None
    return None if name == "0" else name


def _live_schemas(ctx: Context, client: ComfyClient) -> Mapping[str, NodeSchema]:
    """The server's schemas for the workflow's node classes, asked side by side. A task file's
    first run asks for every class (``ralph check`` knows them all from then on), as does a
    workflow naming a class the server lacks (for the "did you mean" hints)."""
    classes = wf.class_types(ctx.task, ctx.params)
    object_info = client.object_info(classes) if classes and wf.has_cache(ctx.state_dir) else {}
    if not classes or not classes <= object_info.keys():
        object_info = client.object_info()
    wf.cache_schemas(object_info, ctx.state_dir)
    return wf.live_schemas(object_info)


def _refuse_errors(flow: wf.Workflow, strict: bool) -> None:
    errors = [p for p in flow.problems if p.is_error or (strict and p.severity == "warning")]
    if errors:
        raise TaskFailed("; ".join(f"line {p.line or flow.fallback_line}: {p}" for p in errors))


def _result(ctx: Context, flow: wf.Workflow, variants: list[wf.Variant], images: list[dict[str, Any]],
            server: str, version: str | None, cost_usd: float | None = None) -> Result:
    """The images for the tasks after this one (the ``Images`` fact) and this task's result;
    ``version``: what the server's /system_stats said it is (None: not asked, on Serverless)."""
    lint = [str(p) for p in flow.problems if p.severity == "warning"]
    ctx.publish(Images(images, flow.values(), lint))
    return Result(
        summary=f"{len(images)} image(s) from {len(variants)} variant(s) in {ctx.params['output_dir']}"
                + (f" (ComfyUI {version})" if version else ""),
        data={
            "images": images,
            "workflow": flow.values(),
            "lint": lint,
            "server": server,
            "comfyui_version": version,
        },
        cost_usd=cost_usd,
        files=[image["path"] for image in images],
    )


def seconds_per_image(params: dict[str, Any], measures: Measures) -> Figure:
    """ComfyUI's time per image: configured, else measured on an earlier run, else a default."""
    if params.get("seconds_per_image"):
        return Figure(float(params["seconds_per_image"]), "seconds_per_image")
    measured = measures.get(SECONDS_PER_IMAGE)
    if measured is not None:
        return Figure(measured.value, f"measured on {measured.at}: {measured.detail}")
    return Figure(DEFAULT_SECONDS_PER_IMAGE, "default: no image measured yet; set seconds_per_image in "
                                             "comfyui.run's params")


def _images_per_variant(graph: dict[str, Any]) -> int:
    """SaveImage nodes × the latent batch: what one prompt brings home."""
    saves = sum(1 for node in graph.values() if node.get("class_type") == "SaveImage")
    batches = [node.get("inputs", {}).get("batch_size") for node in graph.values()
               if node.get("class_type") == "EmptyLatentImage"]
    batch = max((b for b in batches if isinstance(b, int)), default=1)
    return max(1, saves) * batch


def _named_folder(text: str) -> str | None:
    found = re.search(r"`?((?:output/)?[\w.-]+(?:/[\w.-]+)*/)`?", text)
    if not found:
        return None
    folder = found.group(1)
    return folder if folder.startswith("output/") else "output/" + folder


def _prompt_record(ctx: Context, variant: wf.Variant) -> tuple[dict[str, Any], bool] | None:
    """The variant's prompt as this task remembers it, and whether its id is new (never sent);
    None once its images are home."""
    record = ctx.memory.get("variants", {}).get(variant.label, {})
    if brought_home(ctx, record):
        return None
    if record.get("graph") == wf.graph_digest(variant.graph) and record.get("prompt_id"):
        return record, False
    return _new_prompt(ctx, variant, {"graph": wf.graph_digest(variant.graph)}), True


def _new_prompt(ctx: Context, variant: wf.Variant, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` under a new prompt id, saved before anything is submitted: a resume finds the
    prompt instead of sending it again."""
    record = {**record, "prompt_id": str(uuid.uuid4())}
    ctx.memory["variants"] = {**ctx.memory.get("variants", {}), variant.label: record}
    return record


def _queue_behind(ctx: Context, client: ComfyClient, variant: wf.Variant) -> str | None:
    """Queue ``variant`` behind the prompt executing; its prompt id, or None when it is not sent
    now (done already, or sent by an earlier run: looked for in its turn; refused: sent again in
    its turn, and the refusal reported then)."""
    from ralph.handlers.comfyui.client import ComfyError

    known = _prompt_record(ctx, variant)
    if known is None or not known[1]:
        return None
    try:
        client.submit(variant.graph, known[0]["prompt_id"])
    except ComfyError:
        return None
    return str(known[0]["prompt_id"])


def _withdraw(client: ComfyClient, prompt_id: str) -> None:
    """Stop a prompt ralph will not follow (the task stops): interrupted if running, dropped if
    queued. Best effort: the server may be the reason the task stops."""
    from ralph.handlers.comfyui.client import ComfyError

    try:
        client.interrupt(prompt_id)
    except (ComfyError, OSError):
        pass


def brought_home(ctx: Context, record: dict[str, Any]) -> bool:
    """Whether a variant's images, as an earlier run recorded them, are all on disk."""
    images = record.get("images") or []
    return bool(images) and all(ctx.path(i["path"]).exists() for i in images)


def kept_image(ctx: Context, path: Path, server_path: str, values: dict[str, Any], variant: str, prompt_id: str,
               server_seconds: float | None, first_step_at: float | None) -> dict[str, Any]:
    """An image on disk, stamped with its variant's parameters, as the result records it (whoever ran it)."""
    _stamp_png(path, values)
    return {
        "path": ctx.display_path(path),
        "server_path": server_path,
        "params": values,
        "variant": variant,
        "prompt_id": prompt_id,
        "seed": values.get("seed"),
        "server_seconds": server_seconds,
        "first_step_at": first_step_at,
    }


def _stamp_png(path: Path, values: dict[str, Any]) -> None:
    """Record the variant's parameters in the PNG, keeping ComfyUI's own text chunks."""
    if path.suffix.lower() != ".png":
        return
    pngtext.set_text(path, PNG_KEY, json.dumps(values, sort_keys=True, default=str))


@contextmanager
def server_url(ctx: Context) -> Iterator[str]:
    """The ``server`` parameter, else ComfyUI on the held machine through an SSH tunnel (the
    machine exposes no port but SSH; ComfyUI listens on its 127.0.0.1), on the port the
    comfyui.setup before started it on (its ``ComfyServer`` fact), else ComfyUI's default."""
    if ctx.params["server"]:
        yield ctx.params["server"].rstrip("/")
        return
    try:
        from ralph.handlers.machines import session
        from ralph.handlers.machines.forwarding import forward
    except ImportError:
        raise TaskBlocked("no ComfyUI server: set the `server` parameter (pods are not available here)") from None
    handle, machine = session.connect(ctx)
    server = ctx.fact(ComfyServer)
    ours = server is not None and server.machine == handle.id
    if server is not None and ours and server.python:
        _start_again_if_stopped(ctx, machine, handle, server)
    with forward(machine, remote_port=server.port if server is not None and ours else DEFAULT_PORT) as forwarded:
        yield forwarded.url


def _start_again_if_stopped(ctx: Context, machine: Any, handle: MachineHandle, server: ComfyServer) -> None:
    """A ComfyUI that died (a crash, a reboot of the machine) is started again the way
    comfyui.setup started it, so a rerun of this task finds a server to resubmit to."""
    from ralph.handlers.comfyui import service
    from ralph.handlers.comfyui.workspace import Layout

    if service.service_pid(machine, handle.services_dir) is None:
        ctx.log("ComfyUI is not running on the machine: starting it again as comfyui.setup did")
        service.ensure_service(machine, handle.services_dir, Layout(posixpath.dirname(server.folder)), server.python,
                               server.port, list(server.args), server.start_timeout, ctx.log)


def _stopped(ctx: Context, error: Exception) -> TaskFailed:
    """A server that went away mid-task, named as such, with the end of its log when ralph started it."""
    message = f"ComfyUI on the machine stopped: {error}"
    server = ctx.fact(ComfyServer)
    if server is not None and server.python and not ctx.params["server"]:
        from ralph.handlers.comfyui.service import SERVICE
        from ralph.handlers.machines import services, session

        try:
            handle, machine = session.connect(ctx)
            tail = services.log_tail(machine, handle.services_dir, SERVICE)
        except Exception as failure:  # noqa: BLE001 (the machine itself may be gone; the message stands)
            tail = f"(its log could not be read: {type(failure).__name__})"
        message += f"; a rerun starts it again and resubmits the prompt. Its log ends:\n{tail[-1500:]}"
    return TaskFailed(message)


def _provided_files(file: TaskFile) -> list[str] | None:
    """The files the setup handler is configured to place (models and the face reference),
    for the lint rule on model files the workflow names but nothing provides."""
    config = load_config(file.path)
    sources = [config.params.get("comfyui.setup", {})]
    sources += [entry.params for entry in config.tasks.values() if entry.handler == "comfyui.setup"]
    names = []
    for params in sources:
        items = [item for files in (params.get("models") or {}).values() for item in files]
        if params.get("face_reference"):
            items.append(params["face_reference"])
        for item in items:
            source = item if isinstance(item, str) else item.get("name") or item.get("path") or item.get("url") or ""
            names.append(Path(str(source)).name)
    return names or None


def _as_problem(problem: Any, fallback: int, strict: bool) -> Problem:
    severity = "error" if problem.is_error or (strict and problem.severity == "warning") else problem.severity
    return Problem(problem.line or fallback, str(problem), severity)


# Short names for the usual swept parameters in file names ("cfg=7 denoise2=0.25 seed=1" → cfg7-den2_0.25-s1).
_SHORT = {"seed": "s", "denoise": "den", "denoise2": "den2", "steps": "st", "steps2": "st2", "sampler": "smp",
          "scheduler": "sch"}


def file_label(label: str) -> str:
    """A variant's label as a file-name part; "" for the unswept "base"."""
    parts = []
    for pair in label.split():
        name, _, value = pair.partition("=")
        short = _SHORT.get(name, name)
        parts.append(f"{short}{'_' if short[-1:].isdigit() else ''}{value}")
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts)) if "=" in label else ""


def _labelled(path: Path, label: str) -> Path:
    """The downloaded image renamed so that its name carries the variant's parameters."""
    prefix = file_label(label)
    if not prefix:
        return path
    target = path.with_name(f"{prefix}_{path.name}")
    os.replace(path, target)
    return target

