"""ralph's ComfyUI client: submit an API-format graph, follow it to the end, fetch its files.

What it guards against (see the project's ComfyUI notes): a 200 that carries ``node_errors``
(treated as a rejection), unreadable validation errors (rendered ``node 11 (KSampler) input
cfg: …``), the race where ``/history`` is still empty right after the last event (read with
retries), sockets that go quiet or drop (polling ``/history`` and ``/queue`` instead, and
reconnecting with the same client id), fixed timeouts on long jobs (a stall timeout that
any sign of life resets), a server that disappears (a clear error after a grace period),
resubmission after a resume (:meth:`ComfyClient.find` / ``run(prompt_id=…)``), oversized
uploads (checked before sending) and hostile output names (refused before download).

Newer servers (about v0.6 on) have a jobs API (``/api/jobs/{id}``: one answer for queued,
running, finished or unknown; ``/api/jobs/{id}/cancel``, idempotent): where ``/api/jobs``
answers, finding, polling and cancelling go through it; on older ones (v0.3.75, the tests'
server) through ``/history`` and ``/queue``.

HTTP goes through httpx; the WebSocket through ``websockets``' synchronous client.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

Progress = Callable[[str, int, int], None]
"""Called as ``on_progress(node_id, value, max)`` for each progress event of our prompt."""

PromptState = Literal["pending", "running", "success", "error"]

# ComfyUI's default --max-upload-size is 100 MB, counted on the whole multipart request.
DEFAULT_MAX_UPLOAD = 100 * 1024 * 1024
_MULTIPART_MARGIN = 64 * 1024

# Client-chosen prompt ids from v0.3.45; /interrupt with a prompt_id from v0.3.57.
_CLIENT_PROMPT_ID = (0, 3, 45)
_TARGETED_INTERRUPT = (0, 3, 57)

# The jobs API's statuses, as find() names them.
_JOB_STATES: dict[str, PromptState] = {"pending": "pending", "in_progress": "running", "completed": "success",
                                       "failed": "error", "cancelled": "error"}
_DONE = ("success", "error")


class ComfyError(Exception):
    """Anything that stops a ComfyUI run; ``str()`` is a readable one- or few-line reason."""


class PromptRejected(ComfyError):
    """The server refused the graph (400, or 200 with ``node_errors``)."""

    def __init__(self, summary: str, errors: list[NodeError]) -> None:
        self.errors = errors
        lines = [summary, *(f"  {e}" for e in errors)]
        super().__init__("\n".join(lines))


class ExecutionFailed(ComfyError):
    """A node raised while the prompt ran."""

    def __init__(self, prompt_id: str, node_id: str | None, node_type: str | None, message: str) -> None:
        self.prompt_id, self.node_id, self.node_type = prompt_id, node_id, node_type
        where = f"node {node_id} ({node_type})" if node_id else "prompt"
        super().__init__(f"{where} failed: {message}")


class PromptInterrupted(ComfyError):
    """The prompt was interrupted (by us, the UI or another client)."""


class Stalled(ComfyError):
    """No sign of life for the stall timeout."""


class ServerGone(ComfyError):
    """The server stopped answering, or restarted and forgot the prompt."""


class _Unreachable(ServerGone):
    """A request failed at the transport level; waiting tolerates it for ``gone_timeout``."""


class UnsafeOutputName(ComfyError):
    """The server named an output file that would land outside the download folder."""


class UploadTooLarge(ComfyError):
    """The file exceeds the server's upload limit; nothing was sent."""


@dataclass(frozen=True)
class NodeError:
    node_id: str | None
    class_type: str | None
    input: str | None
    message: str

    def __str__(self) -> str:
        where = f"node {self.node_id}" if self.node_id else ""
        if self.node_id and self.class_type:
            where += f" ({self.class_type})"
        if self.input:
            where = f"{where} input {self.input}".strip()
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True)
class OutputFile:
    """One file a node reported: ``kind`` is the output key (images, gifs, audio, …)."""

    node_id: str
    kind: str
    filename: str
    subfolder: str
    type: str


@dataclass
class RunResult:
    prompt_id: str
    outputs: list[OutputFile]
    history: dict[str, Any] = field(repr=False)
    fetched: dict[OutputFile, Path] = field(default_factory=dict, repr=False)  # downloaded while it ran

    @property
    def server_seconds(self) -> float | None:
        """Execution time by the server's own clock (execution_start → execution_success)."""
        stamps = {ev: data.get("timestamp") for ev, data in self.history.get("status", {}).get("messages", [])}
        start, end = stamps.get("execution_start"), stamps.get("execution_success")
        return (end - start) / 1000 if start is not None and end is not None else None


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def node_errors(body: dict[str, Any]) -> list[NodeError]:
    """Every reason in a /prompt error body, one per input, nothing collapsed."""
    out: list[NodeError] = []
    for node_id, entry in (body.get("node_errors") or {}).items():
        class_type = entry.get("class_type")
        for err in entry.get("errors", []):
            extra = err.get("extra_info") or {}
            msg = err.get("message") or err.get("type") or "invalid"
            details = err.get("details")
            name = extra.get("input_name")
            if details and name and details.startswith(f"{name}: "):
                details = details[len(name) + 2:]  # already said by "input NAME"
            if details and details != name and details not in msg:
                msg = f"{msg}: {details}"
            out.append(NodeError(str(node_id), class_type, name, msg))
    return out


def _rejection(status: int, body: dict[str, Any]) -> PromptRejected:
    error = body.get("error")
    err: dict[str, Any] = error if isinstance(error, dict) else {}
    summary = err.get("message") or f"ComfyUI rejected the prompt (HTTP {status})"
    if err.get("details"):
        summary = f"{summary.rstrip('.')} ({err['details']})"
    return PromptRejected(summary, node_errors(body))


def outputs_of(history_entry: dict[str, Any]) -> list[OutputFile]:
    """The files in a history entry's outputs (any key whose items carry a filename)."""
    files: list[OutputFile] = []
    for node_id, node_out in (history_entry.get("outputs") or {}).items():
        for kind, items in node_out.items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    files.append(OutputFile(str(node_id), kind, item["filename"],
                                            str(item.get("subfolder") or ""), str(item.get("type") or "output")))
    return files


_SAFE_PART = re.compile(r"^[^/\\\x00]+$")


def local_path(dest: Path, f: OutputFile) -> Path:
    """Where ``f`` goes under ``dest`` (its subfolder kept), or UnsafeOutputName when the
    server-given name is absolute, has ``..``/backslashes/NULs, or resolves outside."""
    parts = [p for p in f.subfolder.split("/") if p] + [f.filename]
    bad = (f.subfolder.startswith("/") or not f.filename
           or any(p in (".", "..") or not _SAFE_PART.match(p) or re.match(r"^[A-Za-z]:", p) for p in parts))
    if bad:
        raise UnsafeOutputName(f"refusing server file name {PurePosixPath(f.subfolder, f.filename)!s} "
                               f"from node {f.node_id}: it would leave {dest}")
    root = dest.resolve()
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root):  # a symlink inside dest pointing out
        raise UnsafeOutputName(f"refusing {target}: outside {root}")
    return target


class ComfyClient:
    """A ComfyUI server at ``base_url`` (``http://host:port``).

    ``stall_timeout``: seconds without any sign of progress before :class:`Stalled`.
    ``quiet_s``: seconds of socket silence before polling ``/history`` and ``/queue``.
    ``gone_timeout``: seconds of refused/failed connections before :class:`ServerGone`.
    """

    def __init__(self, base_url: str, *, stall_timeout: float = 600.0, quiet_s: float = 5.0,
                 gone_timeout: float = 60.0, http_timeout: float = 30.0,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD) -> None:
        self.base_url = base_url.rstrip("/")
        self.stall_timeout = stall_timeout
        self.quiet_s = quiet_s
        self.gone_timeout = gone_timeout
        self.max_upload_bytes = max_upload_bytes
        # A verifying TLS context costs 0.1-0.3 s to build (it loads the CA bundle), a large part of
        # a one-image run's overhead on a GPU box: build it only for a server that speaks TLS.
        self._http = httpx.Client(base_url=self.base_url, timeout=http_timeout,
                                  verify=self.base_url.startswith("https://"))
        self._version: str | None = None
        self._has_jobs: bool | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain requests ------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        return self._get_json("/system_stats")

    def version_name(self) -> str:
        """The server's ``comfyui_version`` ("0" when it does not say), asked once."""
        if self._version is None:
            self._version = str(self.system_stats()["system"].get("comfyui_version", "0"))
        return self._version

    def version(self) -> tuple[int, ...]:
        return parse_version(self.version_name())

    def object_info(self, classes: Collection[str] | None = None) -> dict[str, Any]:
        """``/object_info``: every node class the server has, or only ``classes``, asked side by
        side (the server builds each entry on request, so the whole list is slow where many custom
        nodes are installed; one at a time, each would cost a round trip through a tunnel). A
        class the server lacks is absent from the answer."""
        if classes is None:
            return self._get_json("/object_info")
        from concurrent.futures import ThreadPoolExecutor

        found: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(classes)))) as pool:
            for answer in pool.map(lambda name: self._get_json(f"/object_info/{quote(name, safe='')}"), classes):
                found.update(answer)
        return found

    def has_jobs_api(self) -> bool:
        """Whether the server answers ``/api/jobs`` (v0.3.75 answers 404)."""
        if self._has_jobs is None:
            r = self._request("GET", "/api/jobs", params={"limit": 1})
            self._has_jobs = r.status_code == 200 and "jobs" in _json_or_empty(r)
        return self._has_jobs

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """The jobs API's record of ``prompt_id``, or None if the server does not know it."""
        r = self._request("GET", f"/api/jobs/{prompt_id}")
        if r.status_code == 404:
            return None
        self._check(r, "GET /api/jobs")
        return r.json()

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None (unknown or not finished yet)."""
        if self.has_jobs_api():
            job = self.job(prompt_id)
            if job is None or _JOB_STATES.get(job.get("status", "")) not in _DONE:
                return None
            return _history_entry(job)
        return self._get_json(f"/history/{prompt_id}").get(prompt_id)

    def find(self, prompt_id: str) -> PromptState | None:
        """Where the server has ``prompt_id``: queued, running, finished — or None if it
        does not know it (never submitted, or the server restarted: history is in memory)."""
        if self.has_jobs_api():
            job = self.job(prompt_id)
            return None if job is None else _JOB_STATES.get(job.get("status", ""), "running")
        entry = self.history(prompt_id)
        if entry is None:
            queue = self._get_json("/queue")
            if any(item[1] == prompt_id for item in queue.get("queue_running", [])):
                return "running"
            if any(item[1] == prompt_id for item in queue.get("queue_pending", [])):
                return "pending"
            entry = self.history(prompt_id)  # it may have finished between the two reads
            if entry is None:
                return None
        return "error" if entry.get("status", {}).get("status_str") == "error" else "success"

    def interrupt(self, prompt_id: str, *, settle_s: float = 5.0) -> None:
        """Stop ``prompt_id`` if running and drop it if queued; other prompts are untouched
        (before v0.3.57 /interrupt is global, so it is sent only while ours is running).

        A queued prompt may start between a delete and an interrupt, so both are repeated
        until the server has it neither queued nor running (or ``settle_s`` has passed)."""
        deadline = time.monotonic() + settle_s
        while True:
            if self.has_jobs_api():  # the server handles the queued-then-started race itself
                self._post(f"/api/jobs/{prompt_id}/cancel", {})
                if self.find(prompt_id) not in ("pending", "running") or time.monotonic() > deadline:
                    return
                time.sleep(0.1)
                continue
            self._post("/queue", {"delete": [prompt_id]})
            state = self.find(prompt_id)
            if state == "running":
                targeted = self.version() >= _TARGETED_INTERRUPT
                self._post("/interrupt", {"prompt_id": prompt_id} if targeted else {})
            elif state != "pending":
                return
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def upload_image(self, path: Path | str, *, subfolder: str = "", overwrite: bool = True) -> str:
        """Upload ``path`` into the server's input folder; returns the name LoadImage takes."""
        path = Path(path)
        size = path.stat().st_size
        if size + _MULTIPART_MARGIN > self.max_upload_bytes:
            raise UploadTooLarge(f"{path} is {size / 2**20:.1f} MiB; the server accepts at most "
                                 f"{self.max_upload_bytes / 2**20:.1f} MiB per upload (--max-upload-size)")
        with path.open("rb") as fh:
            r = self._request("POST", "/upload/image", files={"image": (path.name, fh)},
                              data={"overwrite": str(overwrite).lower(), "subfolder": subfolder, "type": "input"})
        if r.status_code == 413:
            raise UploadTooLarge(f"{path}: the server refused it as too large (HTTP 413)")
        self._check(r, "upload")
        body = r.json()
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    # -- running ---------------------------------------------------------------------------

    def run(self, graph: dict[str, Any], *, prompt_id: str | None = None, fresh: bool = False,
            on_progress: Progress | None = None, dest: Path | str | None = None) -> RunResult:
        """Run ``graph`` to the end and return its outputs.

        Pass a ``prompt_id`` saved before a previous attempt to resume: if the server still
        knows it, this waits for (or returns) that prompt instead of submitting again; with
        ``fresh`` the id was never sent, so the server is not asked first.
        With ``dest``, each output file is fetched there as soon as its node reports it (the
        server is still finishing the prompt meanwhile); :meth:`download` then skips it."""
        if prompt_id is not None and not fresh and self.find(prompt_id) is not None:
            return self.wait(prompt_id, on_progress=on_progress)
        prompt_id = prompt_id or str(uuid.uuid4())
        with ExitStack() as sockets:
            ws = self._connect_ws(prompt_id, sockets)  # before submitting, or early events are lost
            self.submit(graph, prompt_id)
            return self._follow(prompt_id, ws, sockets, on_progress, None if dest is None else Path(dest))

    def submit(self, graph: dict[str, Any], prompt_id: str) -> None:
        """Queue ``graph`` as ``prompt_id``; PromptRejected unless every output validated."""
        if self.version() < _CLIENT_PROMPT_ID:
            raise ComfyError(f"ComfyUI {'.'.join(map(str, self.version()))} cannot take a client prompt id "
                             "(needs 0.3.45 or later)")
        r = self._request("POST", "/prompt", json={"prompt": graph, "client_id": _client_id(prompt_id),
                                                   "prompt_id": prompt_id})
        body = _json_or_empty(r)
        if r.status_code == 400:
            raise _rejection(400, body)
        self._check(r, "submit")
        if body.get("node_errors"):
            # The outputs that validated would run anyway: cancel them, report all.
            self.interrupt(prompt_id)
            raise _rejection(200, {"error": {"message": "some outputs of the prompt failed validation"},
                                   "node_errors": body["node_errors"]})

    def wait(self, prompt_id: str, *, on_progress: Progress | None = None) -> RunResult:
        """Follow an already-submitted ``prompt_id`` to the end."""
        with ExitStack() as sockets:
            ws = self._connect_ws(prompt_id, sockets)
            # It may have finished already (or between a find() and now): no event would come.
            entry = self.history(prompt_id)
            if entry is not None:
                return self._result(prompt_id, entry)
            return self._follow(prompt_id, ws, sockets, on_progress)

    def download(self, result: RunResult | Iterable[OutputFile], dest: Path | str,
                 types: tuple[str, ...] = ("output",)) -> list[Path]:
        """Fetch the outputs (by default only ``type == "output"``, not previews) into
        ``dest``, keeping subfolders; every name is checked before anything is fetched."""
        files = result.outputs if isinstance(result, RunResult) else list(result)
        fetched = result.fetched if isinstance(result, RunResult) else {}
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        chosen = [f for f in files if f.type in types]
        targets = [local_path(dest, f) for f in chosen]
        for f, target in zip(chosen, targets, strict=True):
            if fetched.get(f) != target or not target.is_file():
                self._download_one(f, target)
        return targets

    # -- internals -------------------------------------------------------------------------

    def _follow(self, prompt_id: str, ws: ClientConnection | None, sockets: ExitStack,
                on_progress: Progress | None, dest: Path | None = None) -> RunResult:
        seen = _PromptEvents()
        try:
            return self._follow_events(prompt_id, ws, sockets, on_progress, dest, seen)
        except BaseException:
            for path in seen.fetched.values():  # a failed prompt leaves no half of its outputs
                path.unlink(missing_ok=True)
            raise

    def _follow_events(self, prompt_id: str, ws: ClientConnection | None, sockets: ExitStack,
                       on_progress: Progress | None, dest: Path | None, seen: _PromptEvents) -> RunResult:
        last_life = time.monotonic()
        last_seen: object = None  # what polling saw last; a change is a sign of life
        down_since: float | None = None
        while True:
            event = None
            if ws is not None:
                try:
                    event = _recv_event(ws, self.quiet_s)
                except (ConnectionClosed, OSError):
                    ws = None
                    seen.gap()
            if event is None:
                if ws is None:
                    ws = self._connect_ws(prompt_id, sockets)  # same client id: events resume
                    if ws is None:
                        time.sleep(min(self.quiet_s, 1.0))
                try:
                    polled = self._poll(prompt_id)
                except _Unreachable as exc:
                    down_since = down_since or time.monotonic()
                    if time.monotonic() - down_since > self.gone_timeout:
                        raise ServerGone(f"ComfyUI at {self.base_url} stopped answering while prompt {prompt_id} "
                                         f"was running: {exc.__cause__}") from exc
                    continue
                down_since = None
                if isinstance(polled, RunResult):
                    polled.fetched.update(seen.fetched)
                    return polled
                if polled != last_seen:
                    last_seen, last_life = polled, time.monotonic()
            else:
                kind, data = event
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if kind in ("status", "crystools.monitor"):
                    continue
                last_life = time.monotonic()
                seen.add(kind, data)
                if kind == "progress" and on_progress is not None:
                    on_progress(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))
                elif kind == "executed" and dest is not None:
                    for f in outputs_of({"outputs": {data.get("node"): data.get("output") or {}}}):
                        if f.type == "output" and f not in seen.fetched:
                            seen.fetched[f] = self._download_one(f, local_path(dest, f))
                elif kind == "execution_success" and seen.complete:
                    # Every event of the run came on this socket: the result is known now, without
                    # waiting for `executing: null` and /history, which ComfyUI sends only after
                    # its post-prompt cleanup (a gc.collect that takes 0.3 s on a loaded GPU box).
                    return RunResult(prompt_id, outputs_of(seen.entry), seen.entry, dict(seen.fetched))
                elif kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    result = self._finished(prompt_id)
                    result.fetched.update(seen.fetched)
                    return result
                elif kind == "execution_error":
                    raise _execution_failed(prompt_id, data)
                elif kind == "execution_interrupted":
                    raise PromptInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
            if time.monotonic() - last_life > self.stall_timeout:
                raise Stalled(f"prompt {prompt_id}: no progress for {self.stall_timeout:.0f} s")

    def _poll(self, prompt_id: str) -> RunResult | tuple[str, int]:
        """A finished result, or a snapshot (state, prompts ahead) to compare for life."""
        if self.has_jobs_api():
            job = self.job(prompt_id)
            if job is None:
                raise self._forgotten(prompt_id)
            state = _JOB_STATES.get(job.get("status", ""), "running")
            if state in _DONE:
                return self._result(prompt_id, _history_entry(job))
            return (state, int(job.get("priority") or 0))
        entry = self.history(prompt_id)
        if entry is not None:
            return self._result(prompt_id, entry)
        queue = self._get_json("/queue")
        if any(item[1] == prompt_id for item in queue.get("queue_running", [])):
            return ("running", 0)
        pending = sorted(queue.get("queue_pending", []), key=lambda item: item[0])
        for ahead, item in enumerate(pending):
            if item[1] == prompt_id:
                return ("pending", ahead + len(queue.get("queue_running", [])))
        entry = self.history(prompt_id)  # finished between the two reads
        if entry is not None:
            return self._result(prompt_id, entry)
        raise self._forgotten(prompt_id)

    def _forgotten(self, prompt_id: str) -> ServerGone:
        return ServerGone(f"ComfyUI at {self.base_url} no longer knows prompt {prompt_id} "
                          "(restarted, or the queue was cleared)")

    def _finished(self, prompt_id: str) -> RunResult:
        # /history can lag the last event by a moment (Comfy-Org/ComfyUI#11540).
        delay = 0.05
        deadline = time.monotonic() + max(10.0, self.quiet_s)
        while True:
            entry = self.history(prompt_id)
            if entry is not None:
                return self._result(prompt_id, entry)
            if time.monotonic() > deadline:
                raise ComfyError(f"prompt {prompt_id} finished but /history has no entry for it")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _result(self, prompt_id: str, entry: dict[str, Any]) -> RunResult:
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            for kind, data in status.get("messages", []):
                if kind == "execution_error":
                    raise _execution_failed(prompt_id, data)
                if kind == "execution_interrupted":
                    raise PromptInterrupted(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
            raise ExecutionFailed(prompt_id, None, None, "ComfyUI reports an error without details")
        return RunResult(prompt_id, outputs_of(entry), entry)

    def _download_one(self, f: OutputFile, target: Path) -> Path:
        try:
            self._fetch(f, target)
        except httpx.TransportError as exc:
            raise ServerGone(f"ComfyUI at {self.base_url} stopped answering while sending "
                             f"{f.filename}: {exc}") from exc
        return target

    def _fetch(self, f: OutputFile, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        params = {"filename": f.filename, "subfolder": f.subfolder, "type": f.type}
        # Into a temporary file first: an interrupted download never looks complete.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        try:
            with os.fdopen(fd, "wb") as out, self._http.stream("GET", "/view", params=params) as r:
                if r.status_code != 200:
                    raise ComfyError(f"downloading {f.subfolder}/{f.filename}: HTTP {r.status_code}")
                for chunk in r.iter_bytes(1 << 20):
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _connect_ws(self, prompt_id: str, sockets: ExitStack) -> ClientConnection | None:
        """A socket for ``prompt_id``'s events, closed with ``sockets``; None if refused
        (waiting then relies on polling)."""
        url = re.sub(r"^http", "ws", self.base_url) + f"/ws?clientId={_client_id(prompt_id)}"
        try:
            # Previews arrive as large binary frames: no size cap; ComfyUI does not ping.
            conn = connect(url, open_timeout=min(10.0, self.gone_timeout), max_size=None, ping_interval=None)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed):  # closed mid-handshake
            return None
        return sockets.enter_context(conn)

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise _Unreachable(f"ComfyUI at {self.base_url} is not answering ({type(exc).__name__}: {exc})") from exc

    def _get_json(self, path: str) -> dict[str, Any]:
        r = self._request("GET", path)
        self._check(r, f"GET {path}")
        return r.json()

    def _post(self, path: str, body: dict[str, Any]) -> None:
        self._check(self._request("POST", path, json=body), f"POST {path}")

    @staticmethod
    def _check(r: httpx.Response, what: str) -> None:
        if r.status_code >= 400:
            raise ComfyError(f"{what}: HTTP {r.status_code} {r.text[:500]}")


class _PromptEvents:
    """One prompt's events as they came, assembled like its /history entry (ComfyUI records
    the same outputs and the same stamped messages there) while no event can have been lost."""

    _RECORDED = ("execution_start", "execution_cached", "execution_success", "execution_error",
                 "execution_interrupted")

    def __init__(self) -> None:
        self.complete = False  # saw execution_start, and the socket has not dropped since
        self.outputs: dict[str, Any] = {}
        self.messages: list[list[Any]] = []
        self.fetched: dict[OutputFile, Path] = {}

    def add(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_start":
            self.complete, self.outputs, self.messages = True, {}, []
        if kind == "executed" and data.get("output") is not None:
            self.outputs[str(data.get("node"))] = data["output"]
        if kind in self._RECORDED:
            self.messages.append([kind, data])

    def gap(self) -> None:
        self.complete = False  # events sent while the socket was down are gone for good

    @property
    def entry(self) -> dict[str, Any]:
        return {"outputs": self.outputs,
                "status": {"status_str": "success", "completed": True, "messages": self.messages}}


def _history_entry(job: dict[str, Any]) -> dict[str, Any]:
    """A finished job's record in the shape of its /history entry (which it carries)."""
    return {"outputs": job.get("outputs") or {}, "status": job.get("execution_status") or {}}


def _client_id(prompt_id: str) -> str:
    # Derived from the (fresh, uuid4) prompt id: a resumed run re-attaches to the events.
    return f"ralph-{prompt_id}"


def _recv_event(ws: ClientConnection, timeout: float) -> tuple[str, dict[str, Any]] | None:
    """The next JSON event, or None after ``timeout`` seconds without one (binary preview
    frames are skipped and do not count)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            msg = ws.recv(timeout=left)
        except TimeoutError:
            return None
        if isinstance(msg, str):
            try:
                parsed = json.loads(msg)
            except json.JSONDecodeError:
                continue
            return str(parsed.get("type")), parsed.get("data") or {}


def _execution_failed(prompt_id: str, data: dict[str, Any]) -> ExecutionFailed:
    message = f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}"
    return ExecutionFailed(prompt_id, data.get("node_id"), data.get("node_type"), message)


def _json_or_empty(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
