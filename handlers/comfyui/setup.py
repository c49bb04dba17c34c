"""``comfyui.setup``: ComfyUI, a recent torch and the models on the pod, ComfyUI running.

Every step is idempotent and leaves a "done" marker on the machine
(``<workspace>/.ralph/setup/<step>.json``) holding the sha256 of the step's parameters and what
it did; a resumed or repeated run skips a step whose marker matches its current parameters, and
a changed parameter reruns it. Markers are written only after a step succeeded, so a failed
check is checked again next time. Steps, in order:

1. ``install``: ComfyUI at ``<workspace>/ComfyUI`` (``main.py`` there means present: a pre-baked
   image is left alone); else ``install_command`` runs (default: git clone + pip install -r).
2. ``torch``: ``torch.__version__`` read with the machine's ``python`` and compared with
   ``min_torch``; ``torch_upgrade_command`` (if set) runs once when it is lower.
3. ``file-<folder>-<name>``: each model file and the face reference, from this machine's disk
   (resumable, verified upload) or from a URL the machine downloads itself (curl/wget there,
   far faster than a home uplink), checked by size and sha256. A marker records the size,
   sha256 and mtime: an unchanged file (same size and mtime) is not hashed or sent again.
4. ``service``: ComfyUI as a background service on the pod's 127.0.0.1:<port> (setsid + nohup,
   pid and log files under ``<workspace>/.ralph/``), health-checked through an SSH tunnel
   (``/system_stats``); started again when its pid is dead. No marker: it is checked live.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, CommandTimeout, Machine, MachineError, TransferFailed

from ralph import units
from ralph.context import Context, EstimateContext
from ralph.handler import (
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

# Where each ``models:`` key goes under ComfyUI; any other key goes to ``models/<key>``.
FOLDERS = {
    "checkpoints": "models/checkpoints",
    "loras": "models/loras",
    "instantid": "models/instantid",
    "controlnet": "models/controlnet",
    "antelopev2": "models/insightface/models/antelopev2",
}
FACE = "face_reference"  # the category of the face reference, which goes to input/
DEFAULT_INSTALL = ("rm -rf {dir}.ralph-part && "
                   "git clone --depth 1 https://github.com/comfyanonymous/ComfyUI.git {dir}.ralph-part && "
                   "{python} -m pip install -q -r {dir}.ralph-part/requirements.txt && mv {dir}.ralph-part {dir}")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_URL = re.compile(r"(https?|ftp)://", re.I)
_FILE_NAME = re.compile(r"\b[\w.+-]+\.(?:safetensors|bin|onnx|ckpt|pth|pt|jpe?g|png|webp)\b", re.I)
_BACKTICKED = re.compile(r"`([^`]+)`")
# curl exits that no retry can fix: bad URL, HTTP error (404, 403), write error, no such tool.
_CURL_FATAL = {3, 22, 23, 127}
# What the estimate assumes where nothing was measured or configured.
DEFAULT_UPLOAD_MB_PER_S = 5.0  # a home or office uplink
POD_DOWNLOAD_MB_PER_S = 50.0  # a data centre fetching from Hugging Face
SETUP_ALLOWANCE_S = 300  # install ComfyUI and its packages, start it
MEASURED_UPLOAD_MIN_BYTES = 4_000_000  # smaller transfers measure latency more than bandwidth


# -- parameters ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileSpec:
    """One file to place: from ``path`` (this machine) or ``url`` (fetched by the machine)."""

    category: str
    name: str
    folder: str  # relative to the ComfyUI folder
    path: Path | None = None
    url: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def source(self) -> str:
        return self.url or str(self.path)

    @property
    def step(self) -> str:
        return "file-" + re.sub(r"[^\w.-]", "_", f"{self.folder.replace('/', '_')}-{self.name}")


def folder_for(category: str) -> str:
    return "input" if category == FACE else FOLDERS.get(category, f"models/{category}")


def file_specs(params: dict[str, Any], workdir: Path) -> list[FileSpec]:
    """The files ``models`` and ``face_reference`` name; ValueError says what is malformed."""
    entries: list[tuple[str, Any]] = []
    models = params.get("models") or {}
    if not isinstance(models, dict):
        raise ValueError("models: expected a mapping of folder → list of files")
    for category, items in models.items():
        if not isinstance(items, list):
            raise ValueError(f"models.{category}: expected a list of {{path|url, sha256?, name?}}")
        if not re.fullmatch(r"[\w-]+", str(category)):
            raise ValueError(f"models: {category!r} is not a model folder name")
        entries += [(str(category), item) for item in items]
    if params.get(FACE):
        entries.append((FACE, params[FACE]))
    specs = [_spec(category, item, workdir) for category, item in entries]
    seen: dict[tuple[str, str], str] = {}
    for spec in specs:
        key = (spec.folder, spec.name)
        if key in seen:
            raise ValueError(f"{spec.folder}/{spec.name} is given twice ({seen[key]} and {spec.source})")
        seen[key] = spec.source
    return specs


def _spec(category: str, item: Any, workdir: Path) -> FileSpec:
    where = FACE if category == FACE else f"models.{category}"
    if isinstance(item, str):
        item = {"url": item} if _URL.match(item) else {"path": item}
    if not isinstance(item, dict) or set(item) - {"path", "url", "sha256", "name", "size"}:
        raise ValueError(f"{where}: each file is {{path|url, sha256?, name?, size?}}, not {item!r}")
    if ("path" in item) == ("url" in item):
        raise ValueError(f"{where}: give exactly one of path or url ({item!r})")
    sha = item.get("sha256")
    if sha is not None and not _SHA256.match(str(sha).lower()):
        raise ValueError(f"{where}: sha256 must be 64 hex digits, not {sha!r}")
    size = item.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"{where}: size must be a byte count, not {size!r}")
    if "url" in item:
        url = str(item["url"])
        if not _URL.match(url):
            raise ValueError(f"{where}: {url!r} is not an http(s) or ftp URL")
        default_name = posixpath.basename(unquote(urlparse(url).path))
        path = None
    else:
        url = None
        path = (workdir / Path(str(item["path"])).expanduser()).resolve()
        default_name = path.name
    name = str(item.get("name") or default_name)
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"{where}: cannot name the file from {item!r}; add name:")
    return FileSpec(category, name, folder_for(category), path, url,
                    str(sha).lower() if sha else None, size)


def version_key(version: str) -> tuple[tuple[int, ...], int]:
    """Comparable key: ``2.14.1+cu124`` → ((2, 14, 1), 1); pre-releases (a, b, rc, dev) sort
    before their release; local labels (+cu124) and post-releases do not lower it."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)(.*)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    release = tuple(int(p) for p in m.group(1).split("."))
    release += (0,) * (3 - len(release))
    suffix = m.group(2).split("+", 1)[0].lower().lstrip(".-_")
    pre = bool(re.match(r"(a|alpha|b|beta|c|rc|pre|preview|dev)\d*", suffix))
    return release, 0 if pre else 1


def version_at_least(version: str, minimum: str) -> bool:
    return version_key(version) >= version_key(minimum)


# -- the machine ----------------------------------------------------------------------------------
def machine(ctx: Context) -> Machine:
    """The machine the task sets up: the pod this run holds (its connection is the session's)."""
    from ralph.handlers.machines import session

    _, provider = session.connect(ctx)
    return provider


def _workspace(ctx: Context) -> str:
    """The ``workspace`` parameter, else the machine's own (a pod's /workspace, a local folder)."""
    from ralph.handlers.machines import session

    handle = session.held(ctx)
    chosen = ctx.params["workspace"] or (handle.workspace if handle else "") or "/workspace"
    return chosen.rstrip("/") or "/"


def _sh(provider: Machine, script: str, *, timeout: float | None = 120, check: bool = True,
        **values: str | int) -> str:
    """Run ``script`` with ``values`` as quoted shell variables (names never reach the shell raw)."""
    assign = "".join(f"{k}={remote_shell.quote(v)}; " for k, v in values.items())
    return provider.run(assign + script, timeout=timeout, check=check).stdout


def digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class Markers:
    """The steps' "done" markers in one folder on the machine, read in one round trip."""

    def __init__(self, provider: Machine, folder: str):
        self.provider, self.folder = provider, folder
        out = _sh(provider, 'for m in "$d"/*.json; do [ -f "$m" ] && { printf "%s\\t" "${m##*/}"; '
                            'tr -d "\\n" < "$m"; echo; }; done; true', d=folder)
        self.known: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            name, _, body = line.partition("\t")
            try:
                self.known[name.removesuffix(".json")] = json.loads(body)
            except ValueError:
                continue  # a torn marker counts as absent: the step reruns

    def done(self, step: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """What the step recorded, if it ran with these very parameters."""
        marker = self.known.get(step)
        return marker.get("outcome") if marker and marker.get("digest") == digest(params) else None

    def write(self, step: str, params: dict[str, Any], outcome: dict[str, Any]) -> None:
        marker = {"step": step, "digest": digest(params), "params": params, "outcome": outcome,
                  "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        _sh(self.provider, 'mkdir -p -- "$d" && printf "%s\\n" "$body" > "$d/.$s.tmp" && mv -f -- "$d/.$s.tmp" '
                           '"$d/$s.json"',
            d=self.folder, s=step, body=json.dumps(marker, sort_keys=True))
        self.known[step] = marker


@dataclass
class Layout:
    workspace: str

    @property
    def comfyui(self) -> str:
        return posixpath.join(self.workspace, "ComfyUI")

    @property
    def state(self) -> str:
        return posixpath.join(self.workspace, ".ralph")

    @property
    def markers(self) -> str:
        return posixpath.join(self.state, "setup")

    @property
    def pid_file(self) -> str:
        return posixpath.join(self.state, "comfyui.pid")

    @property
    def log_file(self) -> str:
        return posixpath.join(self.state, "comfyui.log")

    def dest(self, spec: FileSpec) -> str:
        return posixpath.join(self.comfyui, spec.folder, spec.name)

    def blob(self, sha256: str) -> str:
        """The model cache: every uploaded file also lives here under its content hash, so a
        workspace on a network volume serves the next experiment's files, whatever their names."""
        return posixpath.join(self.state, "blobs", sha256)


# -- steps ------------------------------------------------------------------------------------------
def install_comfyui(provider: Machine, layout: Layout, markers: Markers, command: str, python: str,
                    timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    params = {"dir": layout.comfyui, "command": command, "python": python}
    present = provider.exists(posixpath.join(layout.comfyui, "main.py"))
    if present and (done := markers.done("install", params)) is not None:
        return {**done, "skipped": True}
    if present:
        outcome = {"installed": False, "found": True}
        log(f"ComfyUI already present at {layout.comfyui}")
    else:
        quoted = {k: remote_shell.quote(v) for k, v in
                  {"dir": layout.comfyui, "python": python, "workspace": layout.workspace}.items()}
        try:
            line = command.format(**quoted)
        except (KeyError, IndexError, ValueError) as e:
            raise TaskFailed(f"install_command: unknown placeholder {e} (use {{dir}}, {{python}}, {{workspace}}; "
                             "double literal braces)") from None
        log(f"installing ComfyUI into {layout.comfyui}")
        _sh(provider, 'mkdir -p -- "$w"', w=layout.workspace)
        try:
            provider.run(line, timeout=timeout)
        except CommandFailed as e:
            raise TaskFailed(f"installing ComfyUI failed: {e}") from None
        if not provider.exists(posixpath.join(layout.comfyui, "main.py")):
            raise TaskFailed(f"the install command ran but {layout.comfyui}/main.py is missing: {line}")
        outcome = {"installed": True, "found": False}
    markers.write("install", params, outcome)
    return {**outcome, "skipped": False}


_TORCH_PROBE = "import torch; print(torch.__version__)"


def read_torch(provider: Machine, python: str) -> tuple[str | None, str]:
    """(torch version or None, why not) as ``python`` on the machine sees it."""
    result = provider.run(f"{remote_shell.join(python, '-c', _TORCH_PROBE)} 2>&1", check=False, timeout=300)
    lines = result.stdout.strip().splitlines()
    if result.ok and lines:
        return lines[-1].strip(), ""
    return None, (lines[-1] if lines else f"exit {result.exit_code}")


def check_torch(provider: Machine, markers: Markers, python: str, minimum: str, upgrade: str | None,
                log: Callable[[str], None]) -> dict[str, Any]:
    params = {"python": python, "min_torch": minimum, "upgrade": upgrade}
    if (done := markers.done("torch", params)) is not None:
        return {**done, "skipped": True}
    version, why = read_torch(provider, python)
    upgraded = False
    if upgrade and (version is None or not version_at_least(version, minimum)):
        log(f"torch {version or 'missing'} < {minimum}: running torch_upgrade_command")
        try:
            provider.run(upgrade, timeout=1800)
        except CommandFailed as e:
            raise TaskFailed(f"torch_upgrade_command failed: {e}") from None
        version, why = read_torch(provider, python)
        upgraded = True
    ok = version is not None and version_at_least(version, minimum)
    outcome = {"version": version, "error": why, "python": python, "min": minimum, "ok": ok, "upgraded": upgraded}
    if ok:
        markers.write("torch", params, outcome)
    return {**outcome, "skipped": False}


def place_file(ctx: Context, provider: Machine, layout: Layout, markers: Markers, spec: FileSpec,
               download_timeout: float) -> dict[str, Any]:
    """Upload or download one file unless its marker and the file on the machine say it is there."""
    dest = layout.dest(spec)
    record = {"category": spec.category, "name": spec.name, "folder": spec.folder, "dest": dest,
              "source": spec.source}
    params: dict[str, Any] = {"dest": dest, "source": spec.source, "sha256": spec.sha256, "size": spec.size}
    if spec.path is not None:
        if not spec.path.is_file():
            raise TaskBlocked(f"{spec.category} file {ctx.display_path(spec.path)} does not exist on this machine")
        local_size = spec.path.stat().st_size
        local_sha = provider.hashes.sha256(spec.path)  # type: ignore[attr-defined]
        if spec.sha256 and local_sha != spec.sha256:
            raise TaskFailed(f"{ctx.display_path(spec.path)}: its sha256 is {local_sha}, but the sha256 given for it "
                             f"is {spec.sha256}")
        if spec.size is not None and local_size != spec.size:
            raise TaskFailed(f"{ctx.display_path(spec.path)}: it is {local_size} bytes, but the size given for it is "
                             f"{spec.size}")
        params["content"] = [local_size, local_sha]  # a changed local file reruns the step
    info = provider.file_info(dest)
    done = markers.done(spec.step, params)
    if done is not None and info is not None and [info.size, info.mtime] == [done["size"], done["mtime"]]:
        return {**record, **done, "skipped": True, "bytes_sent": 0}
    if spec.path is not None:
        outcome = _upload(ctx, provider, layout, spec, dest, params["content"])
    else:
        outcome = _download(ctx, provider, spec, dest, info is not None, download_timeout)
    after = provider.file_info(dest)
    assert after is not None
    outcome.update(size=after.size, mtime=after.mtime)
    markers.write(spec.step, params, {k: outcome[k] for k in ("size", "mtime", "sha256", "how")})
    return {**record, **outcome, "skipped": False}


def _upload(ctx: Context, provider: Machine, layout: Layout, spec: FileSpec, dest: str,
            content: list[Any]) -> dict[str, Any]:
    """Link the file from the model cache when it holds the same bytes, else upload it and add it
    there (a hard link: no second copy on the disk)."""
    assert spec.path is not None
    size, sha = content
    blob = layout.blob(sha)
    cached = provider.file_info(blob)
    if cached is not None and cached.size == size:
        linked = _sh(provider, 'mkdir -p -- "$(dirname -- "$f")" && ln -f -- "$b" "$f" && echo linked',
                     b=blob, f=dest, check=False)
        if linked.strip() == "linked":
            return {"sha256": sha, "bytes_sent": 0, "how": "linked from the model cache", "resumed_from": 0}
    with ctx.progress(f"upload {spec.name}", size) as bar:
        try:
            sent = provider.put(spec.path, dest, progress=lambda done, total: bar.update(done, total))
        except TransferFailed as e:
            raise TaskFailed(f"upload of {ctx.display_path(spec.path)} failed verification: {e}") from None
    # A cache entry that cannot be made (another file system) only costs the next run an upload.
    _sh(provider, 'mkdir -p -- "$(dirname -- "$b")" && ln -f -- "$f" "$b"', b=blob, f=dest, check=False)
    how = "already there" if sent.skipped else f"uploaded ({sent.method})"
    if sent.method != "copy" and sent.bytes_sent >= MEASURED_UPLOAD_MIN_BYTES and sent.seconds > 0:
        Measures().record(UPLOAD_SPEED, sent.bytes_sent / sent.seconds,
                          f"{units.size(sent.bytes_sent)} of {spec.name} over {sent.method}")
    return {"sha256": sent.sha256, "bytes_sent": sent.bytes_sent, "how": how, "resumed_from": sent.resumed_from}


# Network libraries (httpx, paramiko via transfer/tunnel) are imported where used: ``ralph check``
# loads this module only to validate parameters.
_DOWNLOAD = r"""
mkdir -p -- "$(dirname -- "$f")" || exit 23
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 3 --retry-delay 2 --connect-timeout 30 -C - -o "$p" -- "$u"; rc=$?
  # 33/36: the server cannot resume; start the part file over.
  if [ $rc = 33 ] || [ $rc = 36 ]; then rm -f -- "$p"; curl -fsSL --retry 3 --connect-timeout 30 -o "$p" -- "$u"; rc=$?; fi
elif command -v wget >/dev/null 2>&1; then
  wget -q -c -O "$p" -- "$u"; rc=$?; [ $rc = 8 ] && rc=22
else
  echo "neither curl nor wget on the machine" >&2; rc=127
fi
exit $rc
"""  # noqa: E501 (a shell script's lines)


def _download(ctx: Context, provider: Machine, spec: FileSpec, dest: str, exists: bool,
              timeout: float) -> dict[str, Any]:
    from ralph.handlers.machines import transfer

    assert spec.url is not None
    if exists and spec.sha256:
        # A file already there (an earlier run, a baked image) is kept when it is the right one.
        have = transfer.remote_sha256(provider, dest)  # type: ignore[arg-type]
        if have == spec.sha256 and spec.size in (None, provider.file_info(dest).size):  # type: ignore[union-attr]
            return {"sha256": have, "bytes_sent": 0, "how": "already there"}
    part = transfer.part_name(dest)
    t0 = time.monotonic()
    with ctx.progress(f"download {spec.name} on the machine", spec.size) as bar:
        try:
            result = provider.run(_assign(f=dest, p=part, u=spec.url) + _DOWNLOAD, check=False, timeout=timeout)
        except CommandTimeout:
            raise TransientError(f"downloading {spec.url} took over {timeout:g} s; a rerun resumes it") from None
        if not result.ok:
            why = (result.stderr or result.stdout).strip()[-500:]
            message = f"the machine could not download {spec.url} (exit {result.exit_code}): {why}"
            raise (TaskFailed if result.exit_code in _CURL_FATAL else TransientError)(message)
        info = provider.file_info(part)
        size = info.size if info else 0
        bar.update(size, size)
    if spec.size is not None and size != spec.size:
        _sh(provider, 'rm -f -- "$p"', p=part)
        raise TaskFailed(f"{spec.url}: downloaded {size} bytes, but the size given for it is {spec.size}")
    got = transfer.remote_sha256(provider, part)  # type: ignore[arg-type]
    if spec.sha256 and got != spec.sha256:
        _sh(provider, 'rm -f -- "$p"', p=part)
        raise TaskFailed(f"{spec.url}: the downloaded file's sha256 is {got}, but the sha256 given for it is "
                         f"{spec.sha256} (download removed)")
    _sh(provider, 'mv -f -- "$p" "$f"', p=part, f=dest)
    seconds = time.monotonic() - t0
    return {"sha256": got, "bytes_sent": 0, "downloaded": size, "how": f"downloaded on the machine in {seconds:.1f} s"}


def _assign(**values: str) -> str:
    return "".join(f"{k}={remote_shell.quote(v)}; " for k, v in values.items())


_ALIVE = r"""
[ -f "$pf" ] || exit 0
pid=$(cat -- "$pf") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || exit 0
tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'main.py' && echo "$pid"
true
"""
_START = r"""
mkdir -p -- "$(dirname -- "$pf")" && cd -- "$dir" || exit 1
setsid nohup "$@" > "$log" 2>&1 < /dev/null &
echo $! > "$pf"; cat -- "$pf"
"""


def service_pid(provider: Machine, layout: Layout) -> int | None:
    """The pid of the ComfyUI ralph started, when it is still alive."""
    out = _sh(provider, _ALIVE, pf=layout.pid_file).strip()
    return int(out) if out.isdigit() else None


def stop_service(provider: Machine, workspace: str, grace: float = 10.0) -> bool:
    """Stop the ComfyUI ralph started in ``workspace`` (TERM, then KILL after ``grace`` s)."""
    layout = Layout(workspace)
    pid = service_pid(provider, layout)
    if pid is None:
        return False
    _sh(provider, 'kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"; i=0; '
                  'while kill -0 "$pid" 2>/dev/null && [ $i -lt "$n" ]; do sleep 0.2; i=$((i+1)); done; '
                  'kill -KILL -- "-$pid" 2>/dev/null; rm -f -- "$pf"; true',
        pid=pid, n=int(grace * 5), pf=layout.pid_file)
    return True


def _stats(url: str) -> dict[str, Any] | None:
    import httpx

    try:
        response = httpx.get(f"{url}/system_stats", timeout=5)
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def ensure_service(provider: Machine, layout: Layout, python: str, port: int, args: list[str],
                   timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    from ralph.handlers.machines.forwarding import forward

    pid = service_pid(provider, layout)
    with forward(provider, remote_port=port) as tunnel:
        stats = _stats(tunnel.url)
        started = False
        if stats is None and pid is None:
            argv = [python, "main.py", *args, "--listen", "127.0.0.1", "--port", str(port)]
            out = provider.run(_assign(pf=layout.pid_file, dir=layout.comfyui, log=layout.log_file)
                               + "set -- " + remote_shell.join(*argv) + "\n" + _START, timeout=60).stdout
            pid, started = int(out.strip().splitlines()[-1]), True
            log(f"started ComfyUI (pid {pid}): {' '.join(argv)}")
        deadline = time.monotonic() + timeout
        while stats is None:
            if time.monotonic() > deadline:
                raise TaskFailed(f"ComfyUI did not answer /system_stats on 127.0.0.1:{port} within {timeout:g} s "
                                 f"({_tunnel_note(tunnel)}); log {layout.log_file}:\n{log_tail(provider, layout)}")
            time.sleep(0.5)
            stats = _stats(tunnel.url)
            if stats is None and pid is not None and service_pid(provider, layout) is None:
                raise TaskFailed(f"ComfyUI (pid {pid}) exited while starting; log {layout.log_file}:\n"
                                 f"{log_tail(provider, layout)}")
    system = stats.get("system", {}) if isinstance(stats, dict) else {}
    return {"port": port, "pid": pid, "started": started, "ours": pid is not None,
            "version": system.get("comfyui_version"), "pytorch": system.get("pytorch_version"),
            "devices": [d.get("name") for d in stats.get("devices", []) if isinstance(d, dict)]}


def _tunnel_note(tunnel: Any) -> str:
    return tunnel.error or "through the SSH tunnel"


def log_tail(provider: Machine, layout: Layout) -> str:
    return _sh(provider, 'tail -c 3000 -- "$l" 2>/dev/null; true', l=layout.log_file).strip()


# -- the handler ----------------------------------------------------------------------------------
class ComfyUISetup(Handler):
    """Set up ComfyUI on the held pod: install it, check torch, upload or download the models and
    the face reference into their folders, start it on the pod's 127.0.0.1:<port> and health-check
    it through an SSH tunnel. Each step leaves a content-hashed "done" marker on the pod
    (<workspace>/.ralph/setup/), so a rerun skips what is done and redoes what changed.

    ``models`` maps a folder to files: ``{checkpoints: [{path: ~/models/bigLove_xl1.safetensors}],
    loras: [...], instantid: [...], controlnet: [...], antelopev2: [...]}``; each file is
    ``{path|url, sha256?, name?, size?}`` (a path is uploaded, resumably; a URL is downloaded by the
    pod). Checks: ComfyUI running (version from /system_stats), torch >= N, each backticked folder
    holding its configured files, InstantID / antelopev2 files, the face reference in input/.
    """

    name = "comfyui.setup"
    params = {
        "workspace": Param(str, "", "folder on the machine holding ComfyUI/ and ralph's markers "
                           "(default: the machine's workspace, /workspace on a pod)"),
        "python": Param(str, "python3", "the pod's python that runs ComfyUI"),
        "install_command": Param(str, DEFAULT_INSTALL, "installs ComfyUI when <workspace>/ComfyUI/main.py is "
                                 "missing; {dir}, {python}, {workspace} are replaced, quoted"),
        "install_timeout": Param((int, float), 1800, "seconds the install may take"),
        "min_torch": Param(str, "2.4.0", "lowest torch version accepted"),
        "torch_upgrade_command": Param((str, type(None)), None, "run when torch is older than min_torch"),
        "models": Param(dict, {}, "folder → list of {path|url, sha256?, name?, size?}"),
        "face_reference": Param((str, dict, type(None)), None, "path or URL (or {path|url, sha256?, name?}) "
                                "of the face reference, placed in ComfyUI/input/"),
        "download_timeout": Param((int, float), 3600, "seconds one download on the pod may take"),
        "port": Param(int, 8188, "ComfyUI's port on the pod's 127.0.0.1"),
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
        lines = [f"installs ComfyUI in {where} unless it is there, checks torch >= {params['min_torch']}, "
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
        except ValueError as e:
            raise TaskFailed(str(e)) from None
        provider = machine(ctx)
        layout = Layout(_workspace(ctx))
        try:
            markers = Markers(provider, layout.markers)
            install = install_comfyui(provider, layout, markers, p["install_command"], p["python"],
                                      p["install_timeout"], ctx.log)
            torch = check_torch(provider, markers, p["python"], p["min_torch"], p["torch_upgrade_command"], ctx.log)
            files = [place_file(ctx, provider, layout, markers, spec, p["download_timeout"]) for spec in specs]
            if torch["ok"]:
                start = {"python": p["python"], "args": [str(a) for a in p["comfyui_args"]],
                         "timeout": p["start_timeout"]}
                service = ensure_service(provider, layout, port=p["port"], log=ctx.log, **start)
                service["start"] = start  # how to start it again: comfyui.run does, if it stopped
            else:
                service = {"port": p["port"], "error": f"not started: torch check failed ({_torch_text(ctx, torch)})"}
        except (CommandFailed, TransferFailed) as e:
            raise TaskFailed(str(e)) from None
        except MachineError as e:  # a dropped connection or a timeout: a rerun resumes from the markers
            raise TransientError(str(e)) from None
        sent = sum(f.get("bytes_sent", 0) for f in files)
        skipped = [f["name"] for f in files if f["skipped"]]
        summary = (f"ComfyUI {service.get('version') or '(not running)'} at {ctx.display_path(layout.comfyui)}; "
                   f"{_torch_text(ctx, torch)}; {len(files)} files ({len(skipped)} already done, {sent} bytes sent)")
        return Result(summary=summary, data={"workspace": layout.workspace, "comfyui_dir": layout.comfyui,
                                             "install": install, "torch": torch, "files": files,
                                             "service": service})

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
        folders = [b for b in _BACKTICKED.findall(text) if "/" in b]
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


def _python(ctx: Context, torch: dict[str, Any]) -> str:
    return ctx.display_path(torch["python"]) if torch.get("python") else "?"


def _torch_text(ctx: Context, torch: dict[str, Any]) -> str:
    if torch.get("version") is None:
        return f"torch not importable by {_python(ctx, torch)} ({torch.get('error')})"
    return f"torch {torch['version']} ({'ok' if torch['ok'] else 'below ' + torch['min']})"
