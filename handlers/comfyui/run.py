"""``comfyui.run``: run the task's workflow on a ComfyUI server and bring its images home."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.config import load_config
from ralph.context import Context
from ralph.handler import (
    Evidence,
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
from ralph.handlers.comfyui import workflow as wf
from ralph.handlers.images import pngtext
from ralph.model import Task, TaskFile
from ralph.state import state_dir_for

if TYPE_CHECKING:  # httpx and websockets load when a workflow runs, not for `ralph check`
    from ralph.handlers.comfyui.client import ComfyClient

PNG_KEY = "ralph"  # the PNG text chunk holding a variant's parameters


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
    """

    name = "comfyui.run"
    params = {
        "template": Param((str, type(None)), None, "a workflow template of workflows/ instead of the node list"),
        "overrides": Param(dict, {}, "workflow parameters to change, by name or 'node.input'"),
        "sweep": Param(dict, {}, "parameter name → list of values; every combination runs"),
        "seeds": Param(list, [], "seeds to run each variant with"),
        "server": Param((str, type(None)), None, "ComfyUI URL; default: the pod's, through an SSH tunnel"),
        "output_dir": Param(str, "output/comfyui", "where images are downloaded (relative to the task file)"),
        "stall_timeout": Param((int, float), 600, "seconds without progress before giving up"),
        "strict_lint": Param(bool, False, "treat lint warnings as errors"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        flow = wf.build(file, task, params, wf.snapshot_schemas(state_dir_for(file.path)), _provided_files(file))
        return [_as_problem(p, flow.fallback_line, params["strict_lint"]) for p in flow.problems]

    def run(self, ctx: Context) -> Result:
        from ralph.handlers.comfyui.client import ComfyClient, ComfyError

        with _server(ctx) as url, ComfyClient(url, stall_timeout=ctx.params["stall_timeout"]) as client:
            try:
                object_info = client.object_info()
                schemas = wf.live_schemas(object_info)
            except (ComfyError, OSError) as error:
                raise TransientError(f"ComfyUI at {url} did not answer: {error}") from error
            wf.cache_schemas(object_info, ctx.state_dir)  # `ralph check` validates against it next time
            flow = wf.build(ctx.file, ctx.task, ctx.params, schemas, _provided_files(ctx.file))
            errors = [p for p in flow.problems if p.is_error or (ctx.params["strict_lint"] and p.severity == "warning")]
            if errors:
                raise TaskFailed("; ".join(f"line {p.line or flow.fallback_line}: {p}" for p in errors))
            variants = flow.variants(ctx.params["sweep"], ctx.params["seeds"])
            images = [image for variant in variants for image in self._variant(ctx, client, variant, flow)]
        return Result(
            summary=f"{len(images)} image(s) from {len(variants)} variant(s) in {ctx.params['output_dir']}",
            data={
                "images": images,
                "workflow": flow.values(),
                "lint": [str(p) for p in flow.problems if p.severity == "warning"],
                "server": url,
            },
            files=[image["path"] for image in images],
        )

    def _variant(self, ctx: Context, client: ComfyClient, variant: wf.Variant, flow: wf.Workflow) -> list[dict[str, Any]]:
        from ralph.handlers.comfyui.client import ComfyError, PromptRejected, ServerGone, Stalled

        done: dict[str, Any] = ctx.memory.get("variants", {})
        record = done.get(variant.label, {})
        if record.get("images") and all(ctx.path(i["path"]).exists() for i in record["images"]):
            return list(record["images"])  # finished in an earlier run
        if record.get("graph") != wf.graph_digest(variant.graph):
            record = {"prompt_id": None, "graph": wf.graph_digest(variant.graph)}
        record["prompt_id"] = record.get("prompt_id") or str(uuid.uuid4())
        done[variant.label] = record
        ctx.memory["variants"] = done  # saved before submitting: a resume finds this prompt
        ctx.log(f"{variant.label}: prompt {record['prompt_id']}")
        with ctx.progress(f"ComfyUI {variant.label}", None) as bar:

            def progress(node: str, value: int, maximum: int) -> None:
                kind = variant.graph.get(node, {}).get("class_type", "?")
                bar.update(value, maximum, f"{variant.label}: node {node} ({kind}) step {value}/{maximum}")

            try:
                result = client.run(variant.graph, prompt_id=record["prompt_id"], on_progress=progress)
            except Interrupted:
                client.interrupt(record["prompt_id"])
                raise
            except PromptRejected as error:
                raise TaskFailed(f"ComfyUI refused the workflow: {error}") from error
            except (ServerGone, Stalled) as error:
                raise TaskFailed(str(error)) from error
            except ComfyError as error:
                raise TaskFailed(f"{variant.label}: {error}") from error
        folder = ctx.path(ctx.params["output_dir"])
        paths = client.download(result, folder)
        values = {**flow.values(), **variant.values}
        images = []
        for output, path in zip([o for o in result.outputs if o.type == "output"], paths):
            _stamp_png(path, values)
            images.append(
                {
                    "path": str(path.relative_to(ctx.workdir)) if path.is_relative_to(ctx.workdir) else str(path),
                    "server_path": "/".join(p for p in ("output", output.subfolder, output.filename) if p),
                    "params": values,
                    "variant": variant.label,
                    "prompt_id": result.prompt_id,
                    "seed": values.get("seed"),
                    "server_seconds": result.server_seconds,
                }
            )
        record["images"] = images
        done[variant.label] = record
        ctx.memory["variants"] = done
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


def _named_folder(text: str) -> str | None:
    found = re.search(r"`?((?:output/)?[\w.-]+(?:/[\w.-]+)*/)`?", text)
    if not found:
        return None
    folder = found.group(1)
    return folder if folder.startswith("output/") else "output/" + folder


def _stamp_png(path: Path, values: dict[str, Any]) -> None:
    """Record the variant's parameters in the PNG, keeping ComfyUI's own text chunks."""
    if path.suffix.lower() != ".png":
        return
    pngtext.set_text(path, PNG_KEY, json.dumps(values, sort_keys=True, default=str))


@contextmanager
def _server(ctx: Context) -> Iterator[str]:
    if ctx.params["server"]:
        yield ctx.params["server"].rstrip("/")
        return
    try:
        from ralph.handlers.machines.session import comfyui_url
    except ImportError:
        raise TaskBlocked("no ComfyUI server: set the `server` parameter (pods are not available here)") from None
    with comfyui_url(ctx) as url:
        yield url


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
