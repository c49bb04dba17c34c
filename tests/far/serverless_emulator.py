"""RunPod Serverless's job API on 127.0.0.1, for tests: the far side the ``runpod`` SDK's
``Endpoint`` talks to, with every worker a real ComfyUI server (CPU, tiny models) running each
job the way runpod-workers/worker-comfyui does.

Manual
======

Start and point the SDK at it
-----------------------------
``ServerlessEmulator(root, workers=N)`` serves once started (``start()``/``stop()`` or ``with``).
``emulator.base_url`` (``http://127.0.0.1:P/v2``) is the value for ``RUNPOD_ENDPOINT_BASE_URL``
(the SDK reads it at import; a test process that already imported ``runpod`` sets
``runpod.endpoint_url_base`` too); ``emulator.api_key`` is the Bearer key; ``emulator.endpoint_id``
is the one endpoint it serves (``add_endpoint`` serves more: the management side of
``runpod_emulator.py`` calls it for ``POST /v2/serverless``).

What it serves, under ``/v2/<endpoint id>``
-------------------------------------------
- ``POST /run`` ``{"input": {...}}`` → ``{"id", "status": "IN_QUEUE"}``; a body over ``RUN_LIMIT``
  bytes is 413. ``POST /runsync`` waits up to ``runsync_wait_s`` and answers like ``/status``
  (body limit ``RUNSYNC_LIMIT``).
- ``GET /status/<job>`` → ``{"id", "status", "delayTime"?, "executionTime"?, "output"? | "error"?,
  "workerId"?}``; statuses ``IN_QUEUE``, ``IN_PROGRESS``, ``COMPLETED``, ``FAILED``, ``CANCELLED``.
  While a job runs, ``output`` holds the worker's last progress line (``{"progress": "…"}``), as
  ``runpod.serverless.progress_update`` makes it. An unknown or expired job is 404
  ``{"error": "request does not exist"}``.
- ``GET /stream/<job>`` → ``{"status", "stream": []}`` (worker-comfyui does not stream).
- ``POST /cancel/<job>`` → ``{"id", "status": "CANCELLED"}``; a running job's prompt is interrupted.
- ``GET /health`` → ``{"jobs": {completed, failed, inProgress, inQueue, retried}, "workers": {idle,
  initializing, running}}``.
- Auth: ``Authorization: Bearer <api_key>``, else 401. Unknown endpoint: 404.

Workers
-------
Each endpoint has ``workers`` worker threads. A worker starts its ComfyUI on its first job (the
cold start: ``cold_starts`` counts them; the job stays ``IN_QUEUE`` meanwhile, so it counts in
``delayTime``, not ``executionTime``), then keeps it warm. A job: the input's ``images``
(``[{"name", "image": base64 or data URI}]``) are written into ComfyUI's ``input/`` (which starts
empty: nothing but what the job sends is there), the ``workflow`` is queued with ``/prompt``, the
worker polls ``/history`` until done and returns ``{"images": [{"filename", "type": "base64",
"data"}]}``. A refused workflow or a node that raises fails the job with worker-comfyui's message
(``Workflow execution error: Node Type: X, Node ID: N, Message: …``).
``kill_worker(job_id)`` kills the ComfyUI running that job (a worker that dies mid-job): the job
goes back to the queue (``retried`` counts it) and the worker cold-starts again. Finished jobs
are kept ``result_ttl_s`` seconds (RunPod: 30 min after /run), or until ``expire(job_id)``.
``submitted`` lists every accepted job's id in order: a test counts resubmissions with it;
``peak_running`` is the most jobs that ran at once. While ``paused`` is true, no worker takes a job
(they stay ``IN_QUEUE``, as on a throttled endpoint).
"""
from __future__ import annotations

import base64
import binascii
import json
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from .comfyui_server import ComfyServer, start_server

RUN_LIMIT = 10 * 1024 * 1024
RUNSYNC_LIMIT = 20 * 1024 * 1024
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


@dataclass
class Job:
    id: str
    endpoint: str
    input: dict[str, Any]
    submitted_at: float
    status: str = "IN_QUEUE"
    started_at: float | None = None
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    worker: str | None = None
    prompt_id: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def as_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started_at is not None:
            body["delayTime"] = int((self.started_at - self.submitted_at) * 1000)
            body["workerId"] = self.worker
        if self.finished_at is not None and self.started_at is not None:
            body["executionTime"] = int((self.finished_at - self.started_at) * 1000)
        if self.error is not None:
            body["error"] = self.error
        elif self.output is not None:
            body["output"] = self.output
        return body


class WorkerDied(Exception):
    """The worker's ComfyUI vanished mid-job."""


class JobFailed(Exception):
    """What worker-comfyui returns as ``{"error": …}``."""


class Worker:
    """One serverless worker: a thread that takes jobs from its endpoint's queue and runs each on
    its own ComfyUI, started on the first job (the cold start)."""

    def __init__(self, emulator: ServerlessEmulator, endpoint: str, name: str) -> None:
        self.emulator, self.endpoint, self.name = emulator, endpoint, name
        self.server: ComfyServer | None = None
        self.state = "idle"
        self.starts = 0
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        jobs = self.emulator._queues[self.endpoint]
        while not self.emulator._stopping.is_set():
            if self.emulator.paused:
                time.sleep(0.05)
                continue
            try:
                job = jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            if job.status != "IN_QUEUE":  # cancelled while queued
                continue
            self._take(job)

    def _take(self, job: Job) -> None:
        self._ensure_server()  # a cold start keeps the job IN_QUEUE: RunPod counts it in delayTime
        with self.emulator._lock:
            if job.status != "IN_QUEUE":  # cancelled meanwhile
                return
            job.status, job.worker, job.started_at = "IN_PROGRESS", self.name, time.time()
            self.state = "running"
            self.emulator.peak_running = max(self.emulator.peak_running, self.emulator.running_jobs())
        try:
            output = self._run(job)
        except WorkerDied:
            with self.emulator._lock:
                if job.status == "IN_PROGRESS":  # RunPod retries a job whose worker vanished
                    job.status, job.worker, job.started_at, job.output = "IN_QUEUE", None, None, None
                    self.emulator.retried += 1
                    self.emulator._queues[self.endpoint].put(job)
            self.state = "idle"
            return
        except JobFailed as error:
            self._finish(job, "FAILED", error=str(error))
            return
        self._finish(job, "COMPLETED", output=output)

    def _finish(self, job: Job, status: str, output: Any = None, error: str | None = None) -> None:
        with self.emulator._lock:
            if job.status == "IN_PROGRESS":
                job.status, job.output, job.error = status, output, error
            job.finished_at = time.time()
            job.done.set()
        self.state = "idle"

    def _ensure_server(self) -> None:
        if self.server is not None and self.server.alive():
            return
        if self.server is not None:
            self.server.stop()
        self.state = "initializing"
        self.starts += 1
        base = self.emulator.root / self.endpoint / f"{self.name}-{self.starts}"
        self.server = start_server(base)
        self.emulator.cold_starts += 1
        for item in self.server.input_dir.iterdir():  # the worker image ships no inputs
            shutil.rmtree(item) if item.is_dir() else item.unlink()

    def _run(self, job: Job) -> dict[str, Any]:
        assert self.server is not None
        server = self.server
        workflow = job.input.get("workflow")
        if not isinstance(workflow, dict):
            raise JobFailed("Missing 'workflow' parameter")
        for image in job.input.get("images") or []:
            data = str(image.get("image", ""))
            data = data.split(",", 1)[1] if data.startswith("data:") else data
            try:
                (server.input_dir / Path(str(image["name"])).name).write_bytes(base64.b64decode(data, validate=True))
            except (binascii.Error, KeyError) as error:
                raise JobFailed(f"Error uploading image {image.get('name')}: {error}") from error
        try:
            answer = httpx.post(f"{server.url}/prompt", json={"prompt": workflow, "client_id": job.id}, timeout=30)
            if answer.status_code != 200 or answer.json().get("node_errors"):
                raise JobFailed(f"ComfyUI validation failed: {answer.text}")
            job.prompt_id = answer.json()["prompt_id"]
            entry = self._wait(job)
        except httpx.TransportError as error:
            raise WorkerDied(str(error)) from error
        if job.status != "IN_PROGRESS":
            return {}
        status = entry.get("status", {})
        if status.get("status_str") == "error":
            for event, data in status.get("messages", []):
                if event == "execution_error":
                    raise JobFailed(f"Workflow execution error: Node Type: {data.get('node_type')}, "
                                    f"Node ID: {data.get('node_id')}, Message: {data.get('exception_message')}")
            raise JobFailed("Workflow execution failed")
        images = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                if image.get("type") != "output":
                    continue
                path = server.output_dir / image.get("subfolder", "") / image["filename"]
                images.append({"filename": image["filename"], "type": "base64",
                               "data": base64.b64encode(path.read_bytes()).decode()})
        if not images:
            raise JobFailed("Workflow produced no images")
        return {"images": images}

    def _wait(self, job: Job) -> dict[str, Any]:
        assert self.server is not None
        while True:
            if not self.server.alive():
                raise WorkerDied("ComfyUI exited")
            if job.status != "IN_PROGRESS":  # cancelled: stop the prompt as worker-comfyui's cancel does
                httpx.post(f"{self.server.url}/interrupt", json={"prompt_id": job.prompt_id}, timeout=10)
                return {}
            history = httpx.get(f"{self.server.url}/history/{job.prompt_id}", timeout=10).json()
            if job.prompt_id in history:
                return history[job.prompt_id]
            queued = httpx.get(f"{self.server.url}/queue", timeout=10).json()
            place = "running" if any(item[1] == job.prompt_id for item in queued.get("queue_running", [])) else "queued"
            job.output = {"progress": f"ComfyUI prompt {place}"}
            time.sleep(0.1)


class ServerlessEmulator:
    def __init__(self, root: Path, workers: int = 1, *, api_key: str = "sl-test-key",
                 result_ttl_s: float = 30 * 60, runsync_wait_s: float = 90.0) -> None:
        self.root = root
        self.workers_per_endpoint = workers
        self.api_key = api_key
        self.result_ttl_s = result_ttl_s
        self.runsync_wait_s = runsync_wait_s
        self.jobs: dict[str, Job] = {}
        self.submitted: list[str] = []
        self.cold_starts = 0
        self.retried = 0
        self.peak_running = 0  # the most jobs IN_PROGRESS at one time
        self.paused = False  # while True no worker takes a job: they stay IN_QUEUE (a throttled endpoint)
        self.workers: dict[str, list[Worker]] = {}
        self._queues: dict[str, queue.Queue[Job]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http_thread: threading.Thread | None = None
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.base_url = f"http://127.0.0.1:{self._http.server_address[1]}/v2"
        self.endpoint_id = self.add_endpoint()

    def add_endpoint(self, endpoint_id: str | None = None, workers: int | None = None) -> str:
        endpoint_id = endpoint_id or uuid.uuid4().hex[:14]
        self._queues[endpoint_id] = queue.Queue()
        self.workers[endpoint_id] = [Worker(self, endpoint_id, f"worker-{endpoint_id[:4]}-{i}")
                                     for i in range(workers or self.workers_per_endpoint)]
        for worker in self.workers[endpoint_id]:
            if self._http_thread is not None:
                worker.thread.start()
        return endpoint_id

    def remove_endpoint(self, endpoint_id: str) -> None:
        for worker in self.workers.pop(endpoint_id, []):
            if worker.server is not None:
                worker.server.stop()
        self._queues.pop(endpoint_id, None)

    def start(self) -> ServerlessEmulator:
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()
        for workers in self.workers.values():
            for worker in workers:
                worker.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        for workers in self.workers.values():
            for worker in workers:
                worker.thread.join(30)
                if worker.server is not None:
                    worker.server.stop()

    def __enter__(self) -> ServerlessEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # What tests do to the far side
    def kill_worker(self, job_id: str) -> None:
        job = self.jobs[job_id]
        worker = next(w for w in self.workers[job.endpoint] if w.name == job.worker)
        assert worker.server is not None
        worker.server.kill()

    def expire(self, job_id: str) -> None:
        with self._lock:
            self.jobs.pop(job_id, None)

    def running_jobs(self) -> int:
        return sum(1 for job in self.jobs.values() if job.status == "IN_PROGRESS")

    def statuses(self) -> list[str]:
        """Every job's status, in the order they were submitted."""
        return [self.jobs[i].status for i in self.submitted if i in self.jobs]

    # The API
    def submit(self, endpoint: str, body: dict[str, Any]) -> Job:
        job = Job(f"{uuid.uuid4()}-u1", endpoint, body.get("input") or {}, time.time())
        with self._lock:
            self.jobs[job.id] = job
            self.submitted.append(job.id)
        self._queues[endpoint].put(job)
        return job

    def find(self, job_id: str) -> Job | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None and job.finished_at is not None and time.time() - job.submitted_at > self.result_ttl_s:
                del self.jobs[job_id]
                return None
            return job

    def cancel(self, job: Job) -> None:
        with self._lock:
            if job.status not in FINAL:
                job.status = "CANCELLED"
                job.finished_at = time.time()
                job.done.set()

    def health(self, endpoint: str) -> dict[str, Any]:
        jobs = [j for j in self.jobs.values() if j.endpoint == endpoint]
        count = lambda status: sum(1 for j in jobs if j.status == status)  # noqa: E731
        states = [w.state for w in self.workers[endpoint]]
        return {"jobs": {"completed": count("COMPLETED"), "failed": count("FAILED"), "inProgress": count("IN_PROGRESS"),
                         "inQueue": count("IN_QUEUE"), "retried": self.retried},
                "workers": {s: states.count(s) for s in ("idle", "initializing", "running")}}


def _handler_for(emulator: ServerlessEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet: the tests read the answers
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            if self.headers.get("Authorization") != f"Bearer {emulator.api_key}":
                return self._send(401, {"error": "Unauthorized"})
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) < 3 or parts[0] != "v2" or parts[1] not in emulator.workers:
                return self._send(404, {"error": "endpoint not found"})
            endpoint, action, rest = parts[1], parts[2], parts[3:]
            length = int(self.headers.get("Content-Length") or 0)
            limit = RUNSYNC_LIMIT if action == "runsync" else RUN_LIMIT
            if length > limit:
                self.rfile.read(length)
                return self._send(413, {"error": f"request body over {limit} bytes"})
            raw = self.rfile.read(length) if length else b""
            if method == "POST" and action in ("run", "runsync") and not rest:
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    return self._send(400, {"error": "invalid JSON"})
                if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
                    return self._send(400, {"error": "input is required"})
                job = emulator.submit(endpoint, body)
                if action == "runsync":
                    job.done.wait(emulator.runsync_wait_s)
                    return self._send(200, job.as_status())
                return self._send(200, {"id": job.id, "status": "IN_QUEUE"})
            if method == "GET" and action == "health" and not rest:
                return self._send(200, emulator.health(endpoint))
            if action in ("status", "stream", "cancel") and len(rest) == 1:
                if (method == "POST") != (action == "cancel"):
                    return self._send(405, {"error": "method not allowed"})
                job = emulator.find(rest[0])
                if job is None or job.endpoint != endpoint:
                    return self._send(404, {"error": "request does not exist"})
                if action == "cancel":
                    emulator.cancel(job)
                    return self._send(200, {"id": job.id, "status": job.status})
                if action == "stream":
                    return self._send(200, {"status": job.status, "stream": []})
                return self._send(200, job.as_status())
            return self._send(404, {"error": "not found"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
