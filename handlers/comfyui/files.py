"""Step 3 of comfyui.setup: each model file and the face reference in its ComfyUI folder.

A file comes from this machine's disk (resumable, verified upload; linked from the model cache
when the machine already holds the same bytes) or from a URL the machine downloads itself
(curl/wget there, far faster than a home uplink), checked by size and sha256. A marker records
the size, sha256 and mtime: an unchanged file (same size and mtime) is not hashed or sent again.
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ralph.handlers.comfyui.workspace import Layout, Markers, sh
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandTimeout, Machine, TransferFailed

from ralph import units
from ralph.context import Context
from ralph.handler import TaskBlocked, TaskFailed, TransientError
from ralph.measures import UPLOAD_SPEED, Measures

# Where each ``models:`` key goes under ComfyUI; any other key goes to ``models/<key>``.
FOLDERS = {
    "checkpoints": "models/checkpoints",
    "loras": "models/loras",
    "instantid": "models/instantid",
    "controlnet": "models/controlnet",
    "antelopev2": "models/insightface/models/antelopev2",
}
FACE = "face_reference"  # the category of the face reference, which goes to input/
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
_URL = re.compile(r"(https?|ftp)://", re.I)
# curl exits that no retry can fix: bad URL, HTTP error (404, 403), write error, no such tool.
_CURL_FATAL = {3, 22, 23, 127}
MEASURED_UPLOAD_MIN_BYTES = 4_000_000  # smaller transfers measure latency more than bandwidth


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
        linked = sh(provider, 'mkdir -p -- "$(dirname -- "$f")" && ln -f -- "$b" "$f" && echo linked',
                     b=blob, f=dest, check=False)
        if linked.strip() == "linked":
            return {"sha256": sha, "bytes_sent": 0, "how": "linked from the model cache", "resumed_from": 0}
    with ctx.progress(f"upload {spec.name}", size) as bar:
        try:
            sent = provider.put(spec.path, dest, progress=lambda done, total: bar.update(done, total))
        except TransferFailed as e:
            raise TaskFailed(f"upload of {ctx.display_path(spec.path)} failed verification: {e}") from None
    # A cache entry that cannot be made (another file system) only costs the next run an upload.
    sh(provider, 'mkdir -p -- "$(dirname -- "$b")" && ln -f -- "$f" "$b"', b=blob, f=dest, check=False)
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
            result = provider.run(remote_shell.assign(f=dest, p=part, u=spec.url) + _DOWNLOAD, check=False,
                                  timeout=timeout)
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
        sh(provider, 'rm -f -- "$p"', p=part)
        raise TaskFailed(f"{spec.url}: downloaded {size} bytes, but the size given for it is {spec.size}")
    got = transfer.remote_sha256(provider, part)  # type: ignore[arg-type]
    if spec.sha256 and got != spec.sha256:
        sh(provider, 'rm -f -- "$p"', p=part)
        raise TaskFailed(f"{spec.url}: the downloaded file's sha256 is {got}, but the sha256 given for it is "
                         f"{spec.sha256} (download removed)")
    sh(provider, 'mv -f -- "$p" "$f"', p=part, f=dest)
    seconds = time.monotonic() - t0
    return {"sha256": got, "bytes_sent": 0, "downloaded": size, "how": f"downloaded on the machine in {seconds:.1f} s"}


