"""A loopback stand-in for a newer ComfyUI (one with the jobs API), serving the recorded contract.

No ComfyUI newer than v0.3.75 can be installed here, so the client's jobs path is tested
against this: the routes, statuses and answer shapes of ``tests/data/comfyui-jobs-contract.json``
(read from ComfyUI's sources), over real HTTP on 127.0.0.1. Every job record it answers is built
from that file's recorded examples, and :func:`contract_problems` checks an answer against the
recorded keys, so the stand-in cannot drift from the recording unnoticed.

What it does: ``POST /prompt`` takes only canonical UUID prompt ids (the newer rule) and queues
the prompt; one job runs at a time for ``run_s`` seconds and then completes with one image (or
fails, if its graph holds a node of class ``Fail``); ``GET /api/jobs[/{id}]``,
``POST /api/jobs/{id}/cancel`` (a pending job leaves the queue and is forgotten, a running one
ends cancelled, as ComfyUI's queue does); ``GET /view`` serves the image; ``/system_stats``
names the version. It has no WebSocket (clients poll), no ``/history`` and no ``/queue``:
a client that used them would fail here.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONTRACT_PATH = Path(__file__).resolve().parents[1] / "data" / "comfyui-jobs-contract.json"
CONTRACT: dict[str, Any] = json.loads(CONTRACT_PATH.read_text("utf-8"))
VERSION = "0.45.2"
IMAGE = b"\x89PNG\r\n\x1a\n stand-in image bytes"


@dataclass
class _Job:
    id: str
    graph: dict[str, Any]
    client_id: str | None
    priority: int
    create_time: int
    state: str = "pending"
    started: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)


def _ms() -> int:
    return int(time.time() * 1000)


class JobsServer:
    """The stand-in on a free port; ``requests`` lists every "METHOD /path" it answered."""

    def __init__(self, run_s: float = 0.3) -> None:
        self.run_s = run_s
        self.requests: list[str] = []
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._number = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    # -- the queue ------------------------------------------------------------------------
    def _advance(self) -> None:
        """Move the queue on to now: the running job ends after run_s, the next one starts."""
        now = time.monotonic()
        running = next((j for j in self._jobs.values() if j.state == "in_progress"), None)
        if running is not None and now - (running.started or now) >= self.run_s:
            self._finish(running)
            running = None
        if running is None:
            pending = sorted((j for j in self._jobs.values() if j.state == "pending"), key=lambda j: j.priority)
            if pending:
                job = pending[0]
                job.state, job.started = "in_progress", now
                job.messages.append(["execution_start", {"prompt_id": job.id, "timestamp": _ms()}])
                job.messages.append(["execution_cached", {"nodes": [], "prompt_id": job.id, "timestamp": _ms()}])

    def _finish(self, job: _Job) -> None:
        failing = next((n for n, node in job.graph.items() if node.get("class_type") == "Fail"), None)
        if failing is not None:
            job.state = "failed"
            job.messages.append(["execution_error", {
                "prompt_id": job.id, "node_id": failing, "node_type": "Fail", "executed": [],
                "exception_message": "stand-in failure", "exception_type": "RuntimeError", "traceback": [],
                "current_inputs": {}, "current_outputs": {}, "timestamp": _ms()}])
            return
        job.state = "completed"
        saver = next((n for n, node in job.graph.items() if node.get("class_type") == "SaveImage"), "9")
        job.outputs = {saver: {"images": [{"filename": f"{job.id[:8]}_00001_.png", "subfolder": "", "type": "output"}]}}
        job.messages.append(["execution_success", {"prompt_id": job.id, "timestamp": _ms()}])

    def _cancel(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.state not in ("pending", "in_progress"):
            return False
        if job.state == "pending":
            del self._jobs[job_id]  # dequeued: never reaches history
        else:
            job.state = "cancelled"
            job.messages.append(["execution_interrupted", {
                "prompt_id": job.id, "node_id": "9", "node_type": "SaveImage", "executed": [], "timestamp": _ms()}])
        return True

    def _record(self, job: _Job) -> dict[str, Any]:
        """The job as /api/jobs/{id} answers it, shaped after the contract's examples."""
        route = CONTRACT["routes"]["GET /api/jobs/{job_id}"]
        workflow = {"prompt": job.graph, "extra_data": {"client_id": job.client_id, "create_time": job.create_time}}
        if job.state in ("pending", "in_progress"):
            record = copy.deepcopy(route["example_pending"])
            record.update(id=job.id, status=job.state, priority=job.priority, create_time=job.create_time,
                          workflow=workflow)
            return record
        record = copy.deepcopy(route["example_completed"])
        stamps = {event: data["timestamp"] for event, data in job.messages}
        images = [item for out in job.outputs.values() for item in out.get("images", [])]
        record.update(id=job.id, status=job.state, priority=job.priority, create_time=job.create_time,
                      execution_start_time=stamps["execution_start"], outputs=job.outputs,
                      execution_end_time=max(stamps.values()), outputs_count=len(images),
                      previewable_outputs_count=len(images), workflow=workflow,
                      execution_status={"status_str": "success" if job.state == "completed" else "error",
                                        "completed": job.state == "completed", "messages": job.messages})
        if images:
            record["preview_output"] = {**images[0], "nodeId": next(iter(job.outputs)), "mediaType": "images"}
        else:
            record.pop("preview_output")  # None values are left out
        if job.state == "failed":
            record["execution_error"] = next(data for event, data in job.messages if event == "execution_error")
        return record

    # -- the routes -----------------------------------------------------------------------
    def answer(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(f"{method} {path}")
            self._advance()
            if method == "GET" and path == "/system_stats":
                return 200, {"system": {"comfyui_version": VERSION}, "devices": []}
            if method == "POST" and path in ("/prompt", "/api/prompt"):
                return self._submit(body)
            if method == "GET" and path == "/api/jobs":
                jobs = sorted(self._jobs.values(), key=lambda j: j.create_time, reverse=True)
                limit = int(query["limit"]) if "limit" in query else None
                offset = int(query.get("offset", 0))
                page = jobs[offset:][:limit] if limit else jobs[offset:]
                listed = CONTRACT["routes"]["GET /api/jobs/{job_id}"]["queued_or_running_keys"]
                summary_keys = set(listed) - {"workflow"}
                return 200, {"jobs": [{k: v for k, v in self._record(j).items() if k in summary_keys} for j in page],
                             "pagination": {"offset": offset, "limit": limit, "total": len(jobs),
                                            "has_more": offset + len(page) < len(jobs)}}
            if path.startswith("/api/jobs/"):
                job_id = path.removeprefix("/api/jobs/")
                if method == "POST" and job_id.endswith("/cancel"):
                    return 200, {"cancelled": self._cancel(job_id.removesuffix("/cancel"))}
                if method == "GET" and job_id in self._jobs:
                    return 200, self._record(self._jobs[job_id])
                return 404, CONTRACT["routes"]["GET /api/jobs/{job_id}"]["not_found"]["body"]
            if method == "GET" and path == "/view":
                return 200, IMAGE
            return 404, "404: Not Found"

    def _submit(self, body: dict[str, Any]) -> tuple[int, Any]:
        prompt_id = body.get("prompt_id")
        if prompt_id is None:
            prompt_id = str(uuid.uuid4())
        else:
            try:
                canonical = str(uuid.UUID(prompt_id)) == prompt_id
            except (ValueError, TypeError, AttributeError):
                canonical = False
            if not canonical:
                rejected = CONTRACT["prompt_id"]["rejected"]
                return rejected["status"], rejected["body"]
        self._number += 1
        self._jobs[prompt_id] = _Job(prompt_id, body["prompt"], body.get("client_id"), self._number, _ms())
        self._advance()
        return 200, {"prompt_id": prompt_id, "number": self._number, "node_errors": {}}


def contract_problems(route: str, status: int, body: Any) -> list[str]:
    """What in an answer of ``route`` disagrees with the recorded contract (empty: nothing)."""
    spec = CONTRACT["routes"][route]
    problems: list[str] = []
    if route == "GET /api/jobs/{job_id}":
        if status == 404:
            return [] if body == spec["not_found"]["body"] else [f"404 body {body!r}"]
        finished = body.get("status") in ("completed", "failed", "cancelled")
        required = spec["finished_keys"] if finished else spec["queued_or_running_keys"]
        allowed = set(required) | set(spec.get("finished_optional_keys", []) if finished else [])
        problems += [f"missing {k}" for k in required if k not in body]
        problems += [f"unrecorded key {k}" for k in body if k not in allowed]
        if body.get("status") not in CONTRACT["statuses"]:
            problems.append(f"status {body.get('status')!r}")
    elif route == "GET /api/jobs":
        problems += [f"missing {k}" for k in spec["response"]["keys"] if k not in body]
        problems += [f"pagination lacks {k}" for k in spec["response"]["pagination_keys"]
                     if k not in body.get("pagination", {})]
    elif route == "POST /api/jobs/{job_id}/cancel":
        if set(body) != {"cancelled"} or not isinstance(body["cancelled"], bool):
            problems.append(f"cancel body {body!r}")
    return problems


def _handler(server: JobsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip().startswith(b"{") else None
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            status, answer = server.answer(method, url.path, query, body)
            data = answer if isinstance(answer, bytes) else (
                answer.encode() if isinstance(answer, str) else json.dumps(answer).encode())
            kind = "image/png" if isinstance(answer, bytes) else (
                "text/plain" if isinstance(answer, str) else "application/json")
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
