"""``comfyui.setup``: ComfyUI, a recent torch and the models on the machine, ComfyUI running.

Every step is idempotent and leaves a "done" marker on the machine
(``<workspace>/.ralph/setup/<step>.json``, workspace.py) holding the sha256 of the step's
parameters and what it did; a resumed or repeated run skips a step whose marker matches its
current parameters, and a changed parameter reruns it. Markers are written only after a step
succeeded, so a failed check is checked again next time. Steps, in order, one module each:
``install`` (install.py), ``node-<name>`` and ``packages`` (nodes.py), ``torch``
(torch_check.py), ``file-<folder>-<name>`` (files.py) and the service (service.py, no marker:
checked live). What was checked out is then read back (checkout.py). The server it leaves
running is published as the fact ``ComfyServer`` (port, folder, version, commits) for
comfyui.run, images.evaluate and the session's document.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ralph.handlers.comfyui.checkout import Revision, revisions
from ralph.handlers.comfyui.files import FACE, FOLDERS, file_specs, folder_for, place_file
from ralph.handlers.comfyui.install import (
    DEFAULT_REPOSITORY,
    DEFAULT_VERSION,
    Source,
    install_comfyui,
    pin_warning,
    source,
)
from ralph.handlers.comfyui.nodes import custom_nodes, install_nodes, pip_pins
from ralph.handlers.comfyui.service import DEFAULT_PORT, ensure_service, stop_service
from ralph.handlers.comfyui.torch_check import check_torch, version_at_least, version_key
from ralph.handlers.comfyui.workspace import Layout, Markers
from ralph.handlers.facts import ComfyServer, MachineHandle
from ralph.handlers.machines.base import CommandFailed, Machine, MachineError, TransferFailed

from ralph import units
from ralph.context import Context, EstimateContext
from ralph.facts import Need
from ralph.handler import (
    BACKTICKED,
    Estimate,
    Evidence,
    Figure,
    Handler,
    Param,
    Problem,
    Result,
    TaskBlocked,
    TaskFailed,
    TransientError,
    criterion,
)
from ralph.measures import UPLOAD_SPEED, Measures
from ralph.model import Task, TaskFile

_FILE_NAME = re.compile(r"\b[\w.+-]+\.(?:safetensors|bin|onnx|ckpt|pth|pt|jpe?g|png|webp)\b", re.I)
# What the estimate assumes where nothing was measured or configured.
DEFAULT_UPLOAD_MB_PER_S = 5.0  # a home or office uplink
POD_DOWNLOAD_MB_PER_S = 50.0  # a data centre fetching from Hugging Face
SETUP_ALLOWANCE_S = 300  # install ComfyUI and its packages, start it


def machine(ctx: Context) -> Machine:
    """The machine the task sets up: the one this run holds (its connection is the session's)."""
    from ralph.handlers.machines import session

    _, provider = session.connect(ctx)
    return provider


# -- the handler ----------------------------------------------------------------------------------
class ComfyUISetup(Handler):
    """Set up ComfyUI on the held pod: install its pinned release (comfyui_version) and custom nodes
    at pinned commits (custom_nodes), check torch, upload or download the models and the face
    reference into their folders, start it on the pod's 127.0.0.1:<port> and health-check it
    through an SSH tunnel. Each step leaves a content-hashed "done" marker on the pod
    (<workspace>/.ralph/setup/), so a rerun skips what is done and redoes what changed. The
    results name what ran: ComfyUI's version, tag and commit, each custom node's commit.

    ``models`` maps a folder to files: ``{checkpoints: [{path: ~/models/bigLove_xl1.safetensors}],
    loras: [...], instantid: [...], controlnet: [...], antelopev2: [...]}``; each file is
    ``{path|url, sha256?, name?, size?}`` (a path is uploaded, resumably; a URL is downloaded by the
    pod). Checks: ComfyUI running (version from /system_stats), torch >= N, each backticked folder
    holding its configured files, InstantID / antelopev2 files, the face reference in input/.
    """

    name = "comfyui.setup"
    needs = (Need(MachineHandle),)
    provides = (ComfyServer,)
    params = {
        "workspace": Param(str, "", "folder on the machine holding ComfyUI/ and ralph's markers "
                           "(default: the machine's workspace, /workspace on a pod)"),
        "python": Param(str, "python3", "the pod's python that runs ComfyUI"),
        "comfyui_version": Param(str, DEFAULT_VERSION, "ComfyUI's release: a tag of comfyui_repository or a "
                                 "full commit; a checkout ralph installed moves to a changed one"),
        "comfyui_repository": Param(str, DEFAULT_REPOSITORY, "ComfyUI's git repository"),
        "custom_nodes": Param(list, [], "[{url, commit, name?, requirements?}]: each into ComfyUI/custom_nodes/"
                              "<name> at exactly that commit (full 40 hex), with its requirements.txt"),
        "pip": Param(list, [], "more packages for the machine's python, each pinned: [insightface==0.7.3, …]"),
        "install_command": Param((str, type(None)), None, "instead of the pinned install, when "
                                 "<workspace>/ComfyUI/main.py is missing; {dir}, {python}, {workspace} are "
                                 "replaced, quoted; nothing is pinned then"),
        "install_timeout": Param((int, float), 1800, "seconds the install may take"),
        "min_torch": Param(str, "2.4.0", "lowest torch version accepted"),
        "torch_upgrade_command": Param((str, type(None)), None, "run when torch is older than min_torch"),
        "models": Param(dict, {}, "folder → list of {path|url, sha256?, name?, size?}"),
        "face_reference": Param((str, dict, type(None)), None, "path or URL (or {path|url, sha256?, name?}) "
                                "of the face reference, placed in ComfyUI/input/"),
        "download_timeout": Param((int, float), 3600, "seconds one download on the pod may take"),
        "port": Param(int, DEFAULT_PORT, "ComfyUI's port on the pod's 127.0.0.1"),
        "comfyui_args": Param(list, [], "extra arguments for ComfyUI's main.py (e.g. --cpu)"),
        "start_timeout": Param((int, float), 300, "seconds ComfyUI may take to answer after starting"),
        "upload_mb_per_s": Param((int, float, type(None)), None, "upload speed (megabytes/s) the estimate "
                                 "assumes; default: the last upload measured on this machine"),
    }

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        try:
            specs = file_specs(params, Path(file.path).resolve().parent)
        except ValueError as e:
            return [Problem(task.line, f"{task.label}: {e}")]
        problems = [Problem(task.line, f"{task.label}: {s.category} file {s.path} does not exist")
                    for s in specs if s.path is not None and not s.path.is_file()]
        for check in (source, custom_nodes, pip_pins):
            try:
                check(params)
            except ValueError as e:
                problems.append(Problem(task.line, f"{task.label}: {e}"))
        try:
            version_key(params["min_torch"])
        except ValueError as e:
            problems.append(Problem(task.line, f"{task.label}: min_torch: {e}"))
        return problems

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        try:
            specs = file_specs(params, context.workdir)
        except ValueError as e:
            return Estimate((f"cannot tell which files: {e}",))
        where = f"{params['workspace'].rstrip('/')}/ComfyUI" if params["workspace"] else "the machine's workspace"
        what = "ComfyUI (install_command)" if params["install_command"] else f"ComfyUI {params['comfyui_version']}"
        nodes = f" and {units.count(len(params['custom_nodes']), 'custom node')}" if params["custom_nodes"] else ""
        lines = [f"installs {what}{nodes} in {where} unless it is there, checks torch >= {params['min_torch']}, "
                 f"starts it on 127.0.0.1:{params['port']}"]
        uploads = [(s, s.path.stat().st_size) for s in specs if s.path is not None and s.path.is_file()]
        sent = sum(n for _, n in uploads)
        if uploads:
            lines.append(f"uploads {units.count(len(uploads), 'file')}, {units.size(sent)}: "
                         + ", ".join(f"{s.name} {units.size(n)}" for s, n in uploads)
                         + " (a file already on the machine is confirmed, not sent again)")
        downloads = [s for s in specs if s.url is not None]
        known = sum(s.size for s in downloads if s.size is not None)
        unknown = [s for s in downloads if s.size is None]
        if downloads:
            sizes = [units.size(known)] if known else []
            sizes += [f"{len(unknown)} of unknown size (no size: given)"] if unknown else []
            unverified = sum(1 for s in downloads if s.sha256 is None)
            sizes += [f"{unverified} with no sha256: given, so not verified"] if unverified else []
            lines.append(f"the machine downloads {units.count(len(downloads), 'file')} itself: " + "; ".join(sizes))
        speed = upload_speed(params, context.measures)
        seconds = sent / speed.value + known / (POD_DOWNLOAD_MB_PER_S * 1e6) + SETUP_ALLOWANCE_S
        basis = [f"upload {units.size(sent)} at {units.size(speed.value)}/s ({speed.basis})"] if sent else []
        if known:
            basis.append(f"downloads at {POD_DOWNLOAD_MB_PER_S:g} MB/s (default)")
        if unknown:
            basis.append("downloads of unknown size not counted")
        basis.append(f"{units.duration(SETUP_ALLOWANCE_S)} to install and start (default)")
        return Estimate(tuple(lines), upload_bytes=sent, download_bytes=known, unknown_downloads=len(unknown),
                        machine_seconds=Figure(seconds, "; ".join(basis)))

    def run(self, ctx: Context) -> Result:
        p = ctx.params
        try:
            specs = file_specs(p, ctx.workdir)
            src, nodes, pins = source(p), custom_nodes(p), pip_pins(p)
        except ValueError as e:
            raise TaskFailed(str(e)) from None
        from ralph.handlers.machines import session

        handle, provider = session.connect(ctx)
        layout = Layout((p["workspace"] or handle.workspace or "/workspace").rstrip("/") or "/")
        try:
            markers = Markers(provider, layout.markers)
            install = install_comfyui(provider, layout, markers, src, p["python"], p["install_timeout"], ctx.log)
            extras = install_nodes(provider, layout, markers, nodes, pins, p["python"], p["install_timeout"], ctx.log)
            found = revisions(provider, [layout.comfyui, *(n.folder(layout) for n in nodes)])
            comfy = found[layout.comfyui]
            node_commits = {n.name: found[n.folder(layout)].commit for n in nodes}
            extras["custom_nodes"] = [{**n, "commit": node_commits[n["name"]]} for n in extras["custom_nodes"]]
            changed = (install["installed"] and not install["skipped"]) or not extras["packages"]["skipped"] \
                or any(not n["skipped"] for n in extras["custom_nodes"])
            if changed and stop_service(provider, handle.services_dir):
                ctx.log("stopped the running ComfyUI: its code or packages changed, so it starts again on them")
            torch = check_torch(provider, markers, p["python"], p["min_torch"], p["torch_upgrade_command"], ctx.log)
            files = [place_file(ctx, provider, layout, markers, spec, p["download_timeout"]) for spec in specs]
            if torch["ok"]:
                service = ensure_service(provider, handle.services_dir, layout, p["python"], p["port"],
                                         [str(a) for a in p["comfyui_args"]], p["start_timeout"], ctx.log)
            else:
                service = {"port": p["port"], "error": f"not started: torch check failed ({_torch_text(ctx, torch)})"}
            warning = pin_warning(src, install, comfy, service.get("version"))
            if torch["ok"]:
                ctx.publish(ComfyServer(handle.id, p["port"], layout.comfyui, service.get("version"),
                                        [f["name"] for f in files], p["python"], [str(a) for a in p["comfyui_args"]],
                                        p["start_timeout"], torch.get("version"),
                                        {f["name"]: f.get("sha256") or "" for f in files},
                                        commit=comfy.commit, tag=comfy.tag, custom_nodes=node_commits,
                                        unpinned=warning))
        except (CommandFailed, TransferFailed) as e:
            raise TaskFailed(str(e)) from None
        except MachineError as e:  # a dropped connection or a timeout: a rerun resumes from the markers
            raise TransientError(str(e)) from None
        sent = sum(f.get("bytes_sent", 0) for f in files)
        skipped = [f["name"] for f in files if f["skipped"]]
        summary = (f"ComfyUI {service.get('version') or '(not running)'} ({_revision_text(src, install, comfy)}) at "
                   f"{ctx.display_path(layout.comfyui)}; "
                   + "".join(f"custom node {name} {commit[:12] or '(not a git checkout)'}; "
                             for name, commit in node_commits.items())
                   + f"{_torch_text(ctx, torch)}; {len(files)} files ({len(skipped)} already done, {sent} bytes sent)")
        if warning:
            ctx.log(f"WARNING: {warning}")
            summary = f"WARNING: {warning}. {summary}"
        install = {**install, "pinned": src.pin, "commit": comfy.commit, "tag": comfy.tag}
        return Result(summary=summary, data={"workspace": layout.workspace, "comfyui_dir": layout.comfyui,
                                             "install": install, **extras,
                                             "torch": torch, "files": files, "service": service,
                                             "warning": warning})

    # -- checks ------------------------------------------------------------------------------------
    @criterion(r"\btorch\b\s*(>=|≥|>|at least|au moins)")
    def torch_version(self, ctx: Context, result: Result, text: str) -> Evidence:
        torch = result.data.get("torch") or {}
        m = re.search(r"(>=|≥|>|at least|au moins)\s*v?(\d+(?:\.\d+)*)", text)
        minimum = m.group(2) if m else torch.get("min", "0")
        version = torch.get("version")
        if version is None:
            return Evidence(False, f"torch not importable by {_python(ctx, torch)}: "
                                   f"{torch.get('error') or 'not checked'}")
        ok = version_at_least(version, minimum)
        return Evidence(ok, f"torch {version} {'>=' if ok else '<'} {minimum} (read with {_python(ctx, torch)})")

    @criterion(r"comfyui\b.*\b(install|running|demarr|lance|started|tourne)")
    def running(self, ctx: Context, result: Result, text: str) -> Evidence:
        service = result.data.get("service") or {}
        if not service.get("version") and "pid" not in service:
            return Evidence(False, service.get("error") or "ComfyUI did not answer /system_stats")
        port = re.search(r"port\s*(\d+)", text)
        if port and int(port.group(1)) != service["port"]:
            return Evidence(False, f"ComfyUI runs on port {service['port']}, not {port.group(1)}")
        who = f"pid {service['pid']}" if service.get("ours") else "not started by ralph"
        return Evidence(True, f"ComfyUI {service.get('version')} at {ctx.display_path(result.data['comfyui_dir'])} "
                              f"answered /system_stats on 127.0.0.1:{service['port']} through the SSH tunnel ({who})")

    @criterion(r"(antelopev2|insightface)\b.*\b(model|fichier|file|telecharg|download|upload|present|place)")
    def antelopev2(self, ctx: Context, result: Result, text: str) -> Evidence:
        return self._files_evidence(ctx, result, text, {"antelopev2"}, "antelopev2 (models.antelopev2)")

    @criterion(r"instantid\b.*\b(model|fichier|file|telecharg|download|upload|present|place)|ip-adapter")
    def instantid(self, ctx: Context, result: Result, text: str) -> Evidence:
        return self._files_evidence(ctx, result, text, {"instantid"}, "InstantID (models.instantid, models.controlnet)",
                                    extra=lambda f: f["category"] == "controlnet" and "instantid" in f["name"].lower())

    @criterion(r"(face ref|visage de reference|reference (face|image)).*\b(upload|telecharg|download|copie|place)")
    def face_reference(self, ctx: Context, result: Result, text: str) -> Evidence:
        return self._files_evidence(ctx, result, text, {FACE}, "the face reference (face_reference)")

    @criterion(r"`[^`]*\b(models/[\w./-]+|input)/?`")
    def in_folder(self, ctx: Context, result: Result, text: str) -> Evidence:
        folders = [b for b in BACKTICKED.findall(text) if "/" in b]
        if not folders:
            return Evidence(None, "no backticked folder in the criterion to check")
        wanted = folders[-1].strip().rstrip("/")
        categories = {c for c in [*FOLDERS, FACE, *(f["category"] for f in result.data.get("files", []))]
                      if wanted == folder_for(c) or wanted.endswith("/" + folder_for(c))}
        if not categories:
            return Evidence(None, f"`{folders[-1]}` is not a folder comfyui.setup places files in")
        category = max(categories, key=lambda c: len(folder_for(c)))
        return self._files_evidence(ctx, result, text, {category}, f"{folder_for(category)}/ (models.{category})")

    def _files_evidence(self, ctx: Context, result: Result, text: str, categories: set[str], what: str,
                        extra: Callable[[dict[str, Any]], bool] | None = None) -> Evidence:
        files = [f for f in result.data.get("files", [])
                 if f["category"] in categories or (extra is not None and extra(f))]
        named = {n.lower() for n in _FILE_NAME.findall(text)}
        missing = sorted(named - {f["name"].lower() for f in result.data.get("files", [])})
        if missing:
            return Evidence(None, f"{', '.join(missing)} named here but not configured in params: not checked")
        files += [f for f in result.data.get("files", []) if f["name"].lower() in named and f not in files]
        if not files:
            return Evidence(None, f"{what}: not configured in params, so not checked")
        try:
            provider = machine(ctx)
            found = {f["dest"]: provider.file_info(f["dest"]) for f in files}
        except (MachineError, TaskBlocked) as e:
            return Evidence(None, f"cannot reach the machine to look: {e}")
        wrong = [f"{ctx.display_path(f['dest'])} is missing" if found[f["dest"]] is None else
                 f"{ctx.display_path(f['dest'])} is {found[f['dest']].size} bytes, not {f['size']}"  # type: ignore[union-attr]
                 for f in files if found[f["dest"]] is None or found[f["dest"]].size != f["size"]]  # type: ignore[union-attr]
        if wrong:
            return Evidence(False, "; ".join(wrong))
        return Evidence(True, "; ".join(f"{f['name']} in {ctx.display_path(posixpath.dirname(f['dest']))}/ "
                                        f"({units.size(f['size'])}, sha256 {f['sha256'][:12]}…, {f['how']})"
                                        for f in files))


def upload_speed(params: dict[str, Any], measures: Measures) -> Figure:
    """Bytes/s this machine uploads at: configured, else measured on an earlier upload, else a default."""
    if params.get("upload_mb_per_s"):
        return Figure(params["upload_mb_per_s"] * 1e6, "upload_mb_per_s")
    measured = measures.get(UPLOAD_SPEED)
    if measured is not None:
        return Figure(measured.value, f"measured on {measured.at}: {measured.detail}")
    return Figure(DEFAULT_UPLOAD_MB_PER_S * 1e6, "default: no upload measured yet; set upload_mb_per_s in "
                                                 "comfyui.setup's params")


def _revision_text(src: Source, install: dict[str, Any], revision: Revision) -> str:
    """What is checked out, and the pin when ralph checked it out (never a pin that did not run)."""
    if not revision.commit:
        return "not a git checkout"
    where = f"{revision.tag}, commit {revision.commit[:12]}" if revision.tag else f"commit {revision.commit[:12]}"
    return f"{where}, pinned {src.pin}" if src.pin and install["installed"] else where


def _python(ctx: Context, torch: dict[str, Any]) -> str:
    return ctx.display_path(torch["python"]) if torch.get("python") else "?"


def _torch_text(ctx: Context, torch: dict[str, Any]) -> str:
    if torch.get("version") is None:
        return f"torch not importable by {_python(ctx, torch)} ({torch.get('error')})"
    return f"torch {torch['version']} ({'ok' if torch['ok'] else 'below ' + torch['min']})"
