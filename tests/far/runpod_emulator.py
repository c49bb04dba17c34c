"""RunPod's far side for tests: the REST API v2 on 127.0.0.1, faithful to RunPod's OpenAPI document
(``runpod-openapi-v2.json`` here; see README.md), with every pod a local sandbox.

Manual
======

Start and point ralph at it
---------------------------
``RunPodEmulator(root, **options)`` serves on a free loopback port once started (``start()``/``stop()``
or ``with``). ``emulator.url`` is the value for ``RUNPOD_API_BASE_URL`` (no ``/v2``: the client adds it);
``emulator.api_key`` is the account key. The fixture helpers do both and tear everything down::

    from tests.far.runpod_emulator import runpod_emulator  # noqa: F401 (a fixture: defaults)

    @pytest.fixture                                        # or with options
    def emu(tmp_path, monkeypatch):
        yield from emulated_runpod(tmp_path / "runpod", monkeypatch, reads_per_phase=0)

``emulated_runpod`` sets ``RUNPOD_API_BASE_URL`` and ``RUNPOD_API_KEY`` with monkeypatch, stops the
emulator at teardown, then asserts that no pod process or sshd is left and that every response the
emulator sent kept the contract (``response_violations``). Request violations are for the test to assert
on: ralph's client must send none (``assert emu.request_violations == []``).

Constructor options: ``api_key``; ``gpus`` (``GpuModel``s, default ``DEFAULT_GPUS``: RTX A5000, RTX 3090,
RTX 4090, L4, A100 80GB PCIe); ``data_centers`` (``DataCenterModel``s, default EU-RO-1, US-TX-3,
EU-SE-1); ``capacity`` ({(gpu id, data centre id, "SECURE"|"COMMUNITY"): free GPUs}, default
``default_capacity``: every GPU in every data centre, twice its per-pod ceiling); ``reads_per_phase``
and ``seconds_per_phase`` (see Pods); ``page_size`` (see Pods); ``public_ip``; ``kill_grace_s``;
``workspace_link`` (a path the emulator points, as a symlink, at each launched pod's workspace: the pod's
``/workspace`` at a path a test knows before the pod exists).
``reads_per_phase``, ``seconds_per_phase``, ``page_size`` and ``pod_keys_may_terminate`` are also plain
attributes a test may change at any time.

What it serves (under ``/v2``; anything else of the contract answers 501, unknown paths 404, other
methods 405 with ``Allow``)
----------------------------------------------------------------------------------------------
- Auth: ``Authorization: Bearer <key>``. The account key may do everything. Each pod gets its own key
  (``RUNPOD_API_KEY`` in its env): it may ``GET`` its own pod and, while ``pod_keys_may_terminate`` (default
  True), ``DELETE`` it or ``POST .../action {"action": "terminate"}``; anything else is 403. No or an
  unknown key (a terminated pod's included) is 401.
- Pods: ``POST /v2/pods`` (strict: a body off the contract is 422 whose ``errors`` name each violation,
  e.g. ``body $: additional properties 'bogus' not allowed``; exactly one of ``gpu``/``cpu``, else 400;
  ``cloud`` defaults to SECURE; ``dataCenterIds`` is enforced; ``ports`` has no default; ``mounts`` none,
  ``persistent`` or ``network``), ``GET /v2/pods`` (``{"pods": [...]}``; with ``page_size`` set, pages of
  that size with ``pagination: {nextCursor, hasNextPage}`` and a ``cursor`` query parameter; unknown query
  parameters are ignored), ``GET /v2/pods/{id}`` (404 once terminated), ``DELETE /v2/pods/{id}`` (204),
  ``POST /v2/pods/{id}/action`` (terminate 204; stop/start/restart 200 with the pod; invalid for the
  status 409). A create places the pod in the allowed data centre with the most free capacity for its GPU
  and cloud (400 with ``CAPACITY_MESSAGE`` when none has ``count`` free); a network volume pins the pod to
  the volume's data centre (400 if ``dataCenterIds`` excludes it).
  Status goes PROVISIONING -> STARTING -> RUNNING: a pod stays in each phase for ``reads_per_phase``
  reads of it (GET or list; default 1) and ``seconds_per_phase`` seconds (default 0; ``math.inf``: never
  RUNNING); the create's own answer says PROVISIONING. ``ssh.direct`` appears only when ``22/tcp`` is in
  ``ports``, the pod is RUNNING and its sshd is up; ``cost`` is the catalog price for its cloud times
  ``count`` (0 when EXITED); ``actions`` is what the status allows; ``runtime`` is null unless RUNNING.
- Catalog: ``GET /v2/catalog/gpus`` and ``/v2/catalog/gpus/{id}`` (``include=AVAILABILITY`` needs
  ``product``, else 400; ``count``, ``cloud``, ``minCudaVersion``, ``cudaVersions``, ``countryCodes``),
  ``GET /v2/catalog/datacenters`` and ``/{id}`` (``include=GPU_AVAILABILITY``; ``regions``,
  ``networkVolumeTypes``, ``compliance``, ``globalNetwork``). Availability is derived from free capacity
  (``availability_level``: units of ``count`` free: 0 NONE, 1 LOW, 2-3 MEDIUM, 4+ HIGH) unless a test
  makes the catalog lie with ``advertise``.
- Network volumes: ``GET/POST /v2/network-volumes``, ``GET/PATCH/DELETE /v2/network-volumes/{id}``.
  Each is a directory under ``root/volumes``; a pod mounting one works in that directory, so its files
  outlive the pod. Deleting a volume a live pod mounts is 400; its size only grows.
- Serverless endpoints: ``GET/POST /v2/serverless``, ``GET/DELETE /v2/serverless/{id}`` (queue-based only;
  ``networkVolumes`` must exist). With ``emulator.serverless`` set to a ``serverless_emulator.ServerlessEmulator``,
  a created endpoint gets ``workers.max`` workers there (its job API) and a deleted one loses them.
- Every response has ``x-request-id``; authenticated ones ``RateLimit-Policy`` and ``RateLimit``
  (structured-field lists as in the document's examples: ``"minute";r=59;t=60, "hour";...``), counted
  over fixed windows from the emulator's start (reported, not enforced: use the RATE_LIMITED fault);
  ``rate_limit_policy`` (an attribute: ``(window, quota, seconds)`` triples, RunPod's example by default)
  sets the windows — a test that polls fast raises the quota, one about pacing shortens a window.
  Errors are RFC 9457 ``application/problem+json`` ``{title, status, detail, errors?}``.
- ``/graphql`` answers 410 Gone (problem+json) until ``enable_graphql()``; then it serves only
  ``mutation { podTerminate(input: {podId: "..."}) }`` for that pod's own key or the account key (the
  dead-man's switch's last resort). ``/v1/...`` answers 410 Gone (REST v1 retired 2026-11-15).

Pods are local sandboxes
------------------------
Each pod has ``root/pods/<id>/``. Its workspace is the mounted network volume's directory, or a
``persistent`` or ``container`` directory of its own (local paths: the mount ``path`` is recorded, not
created). With ``22/tcp`` in ``ports`` a real OpenSSH server (tests/far/sshd.py) listens on a free
loopback port trusting exactly ``env.PUBLIC_KEY``; sessions start in the workspace. ``args`` runs as
``/bin/sh -c args`` in the workspace, in its own process group, output to ``pod.log_path``, with the
user's ``env`` plus ``RUNPOD_POD_ID``, the pod's ``RUNPOD_API_KEY``, ``RUNPOD_API_BASE_URL``,
``RUNPOD_PUBLIC_IP``, ``RUNPOD_DC_ID``, ``RUNPOD_GPU_COUNT``, ``RUNPOD_TCP_PORT_22``, ``HOME`` and a
``PATH`` that starts with a stand-in ``runpodctl`` (``remove pod ID`` / ``stop pod ID``) which, like the
real one of Sept 2026, calls REST v1 and so fails with 410, printing what it got. Never the account key.
Stopping, ERROR and terminating end the container: the start command's process group, sshd and its
sessions, and every other process whose environment carries the pod's ``RUNPOD_POD_ID`` (a daemon an SSH
session started with ``setsid``, say). An emulator failure (sshd would not start) answers 500 and is
recorded as a response violation, so the fixture's teardown reports it.

Test switches (thread-safe; they act on requests that arrive afterwards)
------------------------------------------------------------------------
- ``set_capacity(free, gpu_id=None, data_center=None, cloud=None)`` / ``no_capacity(gpu_id=None,
  data_center=None, cloud=None)``: free GPUs per (GPU, data centre, cloud); None matches all.
  ``capacity(gpu_id, data_center, cloud="SECURE")`` reads it. A pod holds its GPUs until stopped or
  terminated (an ERROR pod still holds them, and still costs).
- ``advertise(level, gpu_id=None, data_center=None)``: the catalog says ``level`` whatever the capacity
  (``advertise("HIGH", GPU)`` + ``no_capacity(GPU)``: HIGH while creates fail); ``advertise(None)`` stops.
- ``fail(fault, times=1, method=None, path=None, retry_after=2)``: the next ``times`` (None: every)
  matching /v2 request gets a ``Fault``: RATE_LIMITED (429, ``Retry-After``, ``RateLimit`` r=0),
  SERVER_ERROR (500 problem), BAD_GATEWAY (502 HTML page), UNAVAILABLE (503 problem), GARBAGE (200, not
  JSON), WRONG_SHAPE (200 JSON of the wrong shape), INSUFFICIENT_BALANCE (402), FORBIDDEN (403), or
  LOST_ANSWER (the work is done — a pod really is created or terminated — then the connection drops
  without an answer). ``path`` is a concrete path or the contract's template (``/v2/pods/{id}``).
  ``clear_faults()``.
- ``forbid_gpu(*gpu_ids)``: creates of these GPU types are 403 (no access to the pool).
- ``error_next_pods(times=1)``: the next created pods go STARTING -> ERROR instead of RUNNING;
  ``error_pod(pod_id)``: that pod goes to ERROR now.
- ``ignore_terminations(times=1)`` (None: all until ``ignore_terminations(0)``): terminations are
  acknowledged (204, or GraphQL's null) but nothing happens.
- ``pod_keys_may_terminate = False``: a pod's key is refused (403) for DELETE and action terminate;
  ``pod_keys_may_read = False``: for GET of its own pod (a switch that cannot check itself).
- ``enable_graphql()``.

Records
-------
``requests`` (``RecordedRequest``: at, method, path, query, body (parsed JSON), principal ``"account"`` /
``"pod:<id>"`` / None, status, request_id, fault, answered; never a key), ``calls(method=None,
path_prefix="")``, ``creates_sent`` (POST /v2/pods requests), ``pods_created``, ``all_pods`` (terminated
included, creation order), ``live_pods()``, ``pod(id)`` (``EmulatedPod``: status, workspace, directory,
process, sshd, log_path, container_env, pod_key, data_center_id, volume_id, terminate_requests, ...),
``volumes``, ``volume(id)`` / ``create_volume(name, size, data_center, volume_type=None)`` (``EmulatedVolume``:
``directory``, ``snapshot()`` -> ``VolumeSnapshot``; ``later.bytes_written_since(earlier)`` is the size of
every file new or changed in between, so a test can assert a repeat run uploaded 0 bytes),
``violations`` / ``request_violations`` / ``response_violations`` (``Violation``: kind, method, path,
status, request_id, message). Requests that break the contract are answered 422, as RunPod does.
"""

from __future__ import annotations

import http
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .openapi_contract import Contract
from .openapi_contract import Operation as ContractOperation
from .sshd import SshServer, start_sshd

CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
RESUME_CAPACITY_MESSAGE = "There are not enough free GPUs on the host machine to start this pod."
CLOUDS = ("SECURE", "COMMUNITY")
LEVELS = ("NONE", "LOW", "MEDIUM", "HIGH")
# RunPod's example policy: (window, quota, seconds)
RATE_LIMIT_POLICY = (("minute", 60, 60), ("hour", 3000, 3600), ("day", 50000, 86400))

# --------------------------------------------------------------------------------------------------
# The catalog
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuModel:
    id: str  # what a create names
    name: str
    memory: int  # GB
    price_secure: float  # USD per GPU-hour
    price_community: float | None  # None: not offered on community cloud
    cuda_versions: tuple[str, ...]
    max_count_secure: int = 8
    max_count_community: int = 4

    def price(self, cloud: str) -> float | None:
        return self.price_secure if cloud == "SECURE" else self.price_community

    def max_count(self, cloud: str) -> int:
        return self.max_count_secure if cloud == "SECURE" else self.max_count_community


@dataclass(frozen=True)
class DataCenterModel:
    id: str
    name: str
    region: str
    country: str  # ISO 3166-1 alpha-2
    volume_types: tuple[str, ...] = ("STANDARD",)  # the first is the default for a new volume
    compliance: tuple[str, ...] = ()
    global_network: bool = False


_CUDA = ("12.1", "12.2", "12.4", "12.6", "12.8")
DEFAULT_GPUS: tuple[GpuModel, ...] = (
    GpuModel("NVIDIA RTX A5000", "RTX A5000", 24, 0.27, 0.16, _CUDA),
    GpuModel("NVIDIA GeForce RTX 3090", "RTX 3090", 24, 0.43, 0.22, _CUDA),
    GpuModel("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34, _CUDA),
    GpuModel("NVIDIA L4", "L4", 24, 0.43, None, _CUDA[2:], max_count_community=0),
    GpuModel("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19, _CUDA, max_count_community=2),
)
DEFAULT_DATA_CENTERS: tuple[DataCenterModel, ...] = (
    DataCenterModel("EU-RO-1", "EU Romania 1", "EUROPE", "RO", ("STANDARD", "HIGH_PERFORMANCE"),
                    ("GDPR", "ISO_IEC_27001"), True),
    DataCenterModel("US-TX-3", "US Texas 3", "NORTH_AMERICA", "US", ("STANDARD",), ("SOC_2_TYPE_2",), True),
    DataCenterModel("EU-SE-1", "EU Sweden 1", "EUROPE", "SE", ("STANDARD",), ("GDPR", "RENEWABLE")),
)
_CPU_PRICE_PER_VCPU = {"cpu3c": 0.03, "cpu3g": 0.025, "cpu5c": 0.04}  # CPU pods: no capacity modelled

Capacity = dict[tuple[str, str, str], int]  # (gpu id, data centre id, cloud) -> free GPUs


def default_capacity(gpus: Sequence[GpuModel], data_centers: Sequence[DataCenterModel]) -> Capacity:
    """Every GPU in every data centre, for each cloud it is sold on: twice its per-pod ceiling free."""
    return {(g.id, dc.id, cloud): 2 * g.max_count(cloud)
            for g in gpus for dc in data_centers for cloud in CLOUDS if g.price(cloud) is not None}


def availability_level(units: int) -> str:
    """Catalog stock level for ``units`` pods of the asked count that would fit now."""
    return "NONE" if units <= 0 else "LOW" if units == 1 else "MEDIUM" if units <= 3 else "HIGH"


def _cuda_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# --------------------------------------------------------------------------------------------------
# Faults and records
# --------------------------------------------------------------------------------------------------


class Fault(str, Enum):  # noqa: UP042 (StrEnum would change str() of a member)
    RATE_LIMITED = "rate_limited"  # 429 problem, Retry-After, RateLimit r=0
    SERVER_ERROR = "server_error"  # 500 problem
    BAD_GATEWAY = "bad_gateway"  # 502, an HTML page from the gateway
    UNAVAILABLE = "unavailable"  # 503 problem
    GARBAGE = "garbage"  # 200, not JSON
    WRONG_SHAPE = "wrong_shape"  # 200, JSON of the wrong shape
    INSUFFICIENT_BALANCE = "insufficient_balance"  # 402 problem
    FORBIDDEN = "forbidden"  # 403 problem
    LOST_ANSWER = "lost_answer"  # the work is done, then the connection drops unanswered


# Faults whose answer is off the contract on purpose (a gateway's page, a broken body, none at all).
_OFF_CONTRACT = {Fault.BAD_GATEWAY, Fault.GARBAGE, Fault.WRONG_SHAPE, Fault.LOST_ANSWER}


@dataclass
class _FaultRule:
    fault: Fault
    remaining: int | None  # None: for ever
    method: str | None
    path: str | None  # concrete path or contract template
    retry_after: int


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the emulator saw it (the key itself is never kept)."""

    at: float  # time.monotonic()
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # parsed JSON, the raw text when it was not JSON, None when empty
    principal: str | None  # "account", "pod:<id>", or None for a missing or unknown key
    status: int  # what was (or, for a lost answer, would have been) sent
    request_id: str
    fault: Fault | None
    answered: bool  # False when the connection dropped without an answer


@dataclass(frozen=True)
class Violation:
    kind: str  # "request" or "response"
    method: str
    path: str
    status: int
    request_id: str
    message: str


@dataclass(frozen=True)
class VolumeSnapshot:
    """A volume's files at one moment: relative path -> (size, mtime_ns)."""

    files: dict[str, tuple[int, int]]

    def bytes_written_since(self, earlier: VolumeSnapshot) -> int:
        """Bytes of every file that is new or changed (size or mtime) since ``earlier``."""
        return sum(size for path, (size, mtime) in self.files.items() if earlier.files.get(path) != (size, mtime))


@dataclass
class EmulatedVolume:
    id: str
    name: str
    size: int
    data_center: str
    type: str
    directory: Path

    def record(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "size": self.size, "dataCenter": self.data_center,
                "type": self.type}

    def snapshot(self) -> VolumeSnapshot:
        files = {}
        for path in self.directory.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                files[str(path.relative_to(self.directory))] = (stat.st_size, stat.st_mtime_ns)
        return VolumeSnapshot(files)


@dataclass
class EmulatedPod:
    """One pod: what the API shows of it and the local sandbox standing in for its container."""

    id: str
    name: str
    image: str
    args: str
    disk: int
    ports: list[str]
    env: dict[str, str]  # as the create sent it
    mounts: dict[str, Any]
    cloud: str
    gpu_id: str | None
    gpu_count: int
    cpu: dict[str, Any] | None  # CPU pods: {id, vcpuCount, memory}
    price: float  # USD per hour while it holds its machine
    data_center_id: str
    cuda_version: str | None
    volume_id: str | None
    directory: Path
    workspace: Path
    pod_key: str = field(repr=False)
    created_at: str = ""
    status: str = "PROVISIONING"
    phase_since: float = 0.0  # time.monotonic() when the current status began
    phase_reads: int = 0  # reads that reported the current status
    started_at: str | None = None
    running_since: float | None = None
    doomed: bool = False  # goes to ERROR instead of RUNNING
    holds_capacity: bool = True
    terminate_requests: list[str | None] = field(default_factory=list)  # principal of each request
    container_env: dict[str, str] = field(default_factory=dict, repr=False)  # what the container got
    process: subprocess.Popen | None = field(default=None, repr=False)
    sshd: SshServer | None = field(default=None, repr=False)
    sandbox_ready: bool = False
    proxy_user: str = ""

    @property
    def log_path(self) -> Path:
        """Where the start command's stdout and stderr go."""
        return self.directory / "container.log"

    @property
    def terminated(self) -> bool:
        return self.status == "TERMINATED"

    def actions(self) -> list[str]:
        return {"RUNNING": ["stop", "restart", "terminate"], "EXITED": ["start", "terminate"],
                "ERROR": ["start", "terminate"], "PROVISIONING": ["stop", "terminate"],
                "STARTING": ["stop", "terminate"]}.get(self.status, [])


# --------------------------------------------------------------------------------------------------
# HTTP answers
# --------------------------------------------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None
    lost: bool = False


class _Refusal(Exception):
    """Raised by an operation to answer with a problem instead."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None) -> None:
        super().__init__(detail)
        self.reply = _problem(status, detail, errors)


def _json(status: int, value: Any) -> _Reply:
    return _Reply(status, json.dumps(value).encode(), "application/json")


def _problem(status: int, detail: str, errors: list[str] | None = None) -> _Reply:
    problem: dict[str, Any] = {"title": http.HTTPStatus(status).phrase, "status": status, "detail": detail}
    if errors:
        problem["errors"] = errors
    return _Reply(status, json.dumps(problem).encode(), "application/problem+json")


def _fault_reply(rule: _FaultRule) -> _Reply:
    fault = rule.fault
    if fault is Fault.RATE_LIMITED:
        reply = _problem(429, "rate limit exceeded for the minute window")
        reply.headers["Retry-After"] = str(rule.retry_after)
    elif fault is Fault.SERVER_ERROR:
        reply = _problem(500, "internal server error")
    elif fault is Fault.BAD_GATEWAY:
        reply = _Reply(502, b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
                            b"Gateway</h1></center><hr><center>cloudflare</center></body></html>", "text/html")
    elif fault is Fault.UNAVAILABLE:
        reply = _problem(503, "upstream unavailable, try again")
    elif fault is Fault.GARBAGE:
        reply = _Reply(200, b"<!doctype html><title>Maintenance</title><p>Back soon.", "text/html")
    elif fault is Fault.WRONG_SHAPE:
        reply = _json(200, {"data": None, "message": "ok"})
    elif fault is Fault.INSUFFICIENT_BALANCE:
        reply = _problem(402, "insufficient balance: add funds to deploy")
    elif fault is Fault.FORBIDDEN:
        reply = _problem(403, "access denied")
    else:
        raise ValueError(fault)
    reply.fault = fault
    return reply


_RUNPODCTL = '''#!{python}
"""Stand-in runpodctl: its pod commands call REST v1 (as the real one's did in Sept 2026)."""
import os, sys, urllib.error, urllib.request
args = sys.argv[1:]
if args[:2] in (["remove", "pod"], ["pod", "delete"], ["pod", "remove"]) and len(args) == 3:
    method, path = "DELETE", "/v1/pods/" + args[2]
elif args[:2] == ["stop", "pod"] and len(args) == 3:
    method, path = "POST", "/v1/pods/" + args[2] + "/stop"
else:
    sys.exit("usage: runpodctl remove pod POD_ID | stop pod POD_ID")
url = os.environ["RUNPOD_API_BASE_URL"] + path
request = urllib.request.Request(url, method=method,
                                 headers={{"Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"]}})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, body = response.status, response.read().decode(errors="replace")
except urllib.error.HTTPError as error:
    status, body = error.code, error.read().decode(errors="replace")
print("runpodctl: %s %s -> %d %s" % (method, path, status, body), file=sys.stderr)
sys.exit(0 if status < 300 else 1)
'''

_GRAPHQL_TERMINATE = re.compile(
    r'^\s*mutation\b[^{]*\{\s*podTerminate\s*\(\s*input\s*:\s*\{\s*podId\s*:\s*"([^"\\]+)"\s*\}\s*\)\s*\}\s*$')


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _new_id(n: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


# --------------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------------

_OperationHandler = Callable[["RunPodEmulator", "_Request"], _Reply]


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, str]  # path parameters
    query: dict[str, list[str]]
    body: Any
    principal: str

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def list_arg(self, name: str) -> list[str]:
        value = self.arg(name)
        return [v for v in value.split(",") if v] if value else []


class RunPodEmulator:
    """RunPod's REST API v2 on 127.0.0.1 with local pods (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        api_key: str | None = None,
        gpus: Sequence[GpuModel] = DEFAULT_GPUS,
        data_centers: Sequence[DataCenterModel] = DEFAULT_DATA_CENTERS,
        capacity: Mapping[tuple[str, str, str], int] | None = None,
        reads_per_phase: int = 1,
        seconds_per_phase: float = 0.0,
        page_size: int | None = None,
        public_ip: str = "127.0.0.1",
        kill_grace_s: float = 1.0,
        workspace_link: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.api_key = api_key or "rpa_emulated_" + secrets.token_hex(16)
        self.gpus = {g.id: g for g in gpus}
        self.data_centers = {dc.id: dc for dc in data_centers}
        self.reads_per_phase = reads_per_phase
        self.seconds_per_phase = seconds_per_phase
        self.page_size = page_size
        self.rate_limit_policy: Sequence[tuple[str, int, int]] = RATE_LIMIT_POLICY  # (window, quota, seconds)
        self.public_ip = public_ip
        self.kill_grace_s = kill_grace_s
        self.workspace_link = workspace_link
        self.pod_keys_may_terminate = True
        self.pod_keys_may_read = True
        self.contract = Contract.load()
        self._capacity: Capacity = dict(capacity if capacity is not None else default_capacity(gpus, data_centers))
        self._advertised: dict[tuple[str | None, str | None], str] = {}
        self._forbidden_gpus: set[str] = set()
        self._faults: list[_FaultRule] = []
        self._doomed_creates = 0
        self._ignored_terminations: int | None = 0  # None: every termination is ignored
        self._graphql = False
        self._lock = threading.RLock()
        self._pods: dict[str, EmulatedPod] = {}  # every pod ever created, terminated ones included
        self._volumes: dict[str, EmulatedVolume] = {}
        self._endpoints: dict[str, dict[str, Any]] = {}  # serverless endpoints, by id
        # The job side of the endpoints: an object with add_endpoint(id, workers) and remove_endpoint(id),
        # such as serverless_emulator.ServerlessEmulator; None: endpoints exist but run nothing.
        self.serverless: Any = None
        self._requests: list[RecordedRequest] = []
        self._violations: list[Violation] = []
        self._window_counts: dict[tuple[str, int], int] = {}
        self._started = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- serving ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The value for RUNPOD_API_BASE_URL (the client appends /v2)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"  # type: ignore[str-bytes-safe]  # AF_INET: host is a str

    def start(self) -> RunPodEmulator:
        self.root.mkdir(parents=True, exist_ok=True)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.emulator = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="runpod-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and tear every pod's processes and sshd down (pods stay recorded)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for pod in self.all_pods:
            self._halt(pod)

    def __enter__(self) -> RunPodEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def leftover_processes(self) -> list[int]:
        """Pids of pod processes or sshds still running (none after stop())."""
        procs = [p for pod in self.all_pods for p in (pod.process, pod.sshd.process if pod.sshd else None)
                 if p is not None]
        return [p.pid for p in procs if p.poll() is None] + [pid for pod in self.all_pods
                                                                for pid in _processes_of(pod.id)]

    # ---- test switches -----------------------------------------------------------------------------

    def set_capacity(self, free: int, gpu_id: str | None = None, data_center: str | None = None,
                     cloud: str | None = None) -> None:
        """Free GPUs for every (GPU, data centre, cloud) matching the given ones (None: all)."""
        with self._lock:
            for g in self.gpus.values():
                for dc in self.data_centers:
                    for c in CLOUDS:
                        if (gpu_id in (None, g.id) and data_center in (None, dc) and cloud in (None, c)
                                and g.price(c) is not None):
                            self._capacity[(g.id, dc, c)] = free

    def no_capacity(self, gpu_id: str | None = None, data_center: str | None = None,
                    cloud: str | None = None) -> None:
        self.set_capacity(0, gpu_id, data_center, cloud)

    def capacity(self, gpu_id: str, data_center: str, cloud: str = "SECURE") -> int:
        with self._lock:
            return self._capacity.get((gpu_id, data_center, cloud), 0)

    def advertise(self, level: str | None, gpu_id: str | None = None, data_center: str | None = None) -> None:
        """Make the catalog say ``level`` for this GPU / data centre (None: all); ``None`` level: stop
        lying there (``advertise(None)`` stops every lie)."""
        with self._lock:
            if level is None:
                if gpu_id is None and data_center is None:
                    self._advertised.clear()
                else:
                    self._advertised.pop((gpu_id, data_center), None)
            else:
                if level not in LEVELS:
                    raise ValueError(f"availability is one of {LEVELS}")
                self._advertised[(gpu_id, data_center)] = level

    def fail(self, fault: Fault | str, *, times: int | None = 1, method: str | None = None,
             path: str | None = None, retry_after: int = 2) -> None:
        with self._lock:
            self._faults.append(_FaultRule(Fault(fault), times, method and method.upper(), path, retry_after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def forbid_gpu(self, *gpu_ids: str) -> None:
        with self._lock:
            self._forbidden_gpus.update(gpu_ids)

    def error_next_pods(self, times: int = 1) -> None:
        with self._lock:
            self._doomed_creates += times

    def error_pod(self, pod_id: str) -> None:
        with self._lock:
            pod = self._pods[pod_id]
            self._enter(pod, "ERROR")
        self._halt(pod)

    def ignore_terminations(self, times: int | None = 1) -> None:
        with self._lock:
            self._ignored_terminations = times

    def enable_graphql(self) -> None:
        with self._lock:
            self._graphql = True

    def create_volume(self, name: str, size: int, data_center: str, volume_type: str | None = None) -> EmulatedVolume:
        """A network volume, as ``POST /v2/network-volumes`` makes one (refused for an unknown data
        centre or a type it does not offer)."""
        dc = self.data_centers.get(data_center)
        if dc is None:
            raise _Refusal(400, f"unknown data center {data_center!r}")
        volume_type = volume_type or dc.volume_types[0]
        if volume_type not in dc.volume_types:
            raise _Refusal(400, f"data center {data_center} offers no {volume_type} network volumes")
        with self._lock:
            volume_id = _new_id(10)
            volume = EmulatedVolume(volume_id, name, size, data_center, volume_type,
                                    self.root / "volumes" / volume_id)
            volume.directory.mkdir(parents=True)
            self._volumes[volume_id] = volume
        return volume

    # ---- records -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, method: str | None = None, path_prefix: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests
                if (method is None or r.method == method.upper()) and r.path.startswith(path_prefix)]

    @property
    def creates_sent(self) -> list[RecordedRequest]:
        return [r for r in self.calls("POST") if r.path == "/v2/pods"]

    @property
    def pods_created(self) -> int:
        with self._lock:
            return len(self._pods)

    @property
    def all_pods(self) -> list[EmulatedPod]:
        with self._lock:
            return list(self._pods.values())

    def live_pods(self) -> list[EmulatedPod]:
        """Pods that exist (in any status but TERMINATED)."""
        return [p for p in self.all_pods if not p.terminated]

    def pod(self, pod_id: str) -> EmulatedPod:
        with self._lock:
            return self._pods[pod_id]

    @property
    def volumes(self) -> list[EmulatedVolume]:
        with self._lock:
            return list(self._volumes.values())

    def volume(self, volume_id: str) -> EmulatedVolume:
        with self._lock:
            return self._volumes[volume_id]

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    @property
    def request_violations(self) -> list[Violation]:
        return [v for v in self.violations if v.kind == "request"]

    @property
    def response_violations(self) -> list[Violation]:
        return [v for v in self.violations if v.kind == "response"]

    # ---- one HTTP exchange ---------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        """Answer one request; records it and checks both sides against the contract."""
        request_id = "req_" + secrets.token_hex(8)
        split = urlsplit(target)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        authorization = headers.get("Authorization")
        principal = self._principal(authorization)
        content_type = headers.get("Content-Type")
        checked = False
        try:
            if path == "/graphql":
                reply = self._graphql_answer(principal, body)
            elif path == "/v1" or path.startswith("/v1/"):
                reply = _problem(410, "REST API v1 was retired on 2026-11-15; use /v2")
            elif not path.startswith("/v2/"):
                reply = _problem(404, f"no such path {path}")
            else:
                checked = self.contract.operation(method, path) is not None
                reply = self._v2(method, path, query, content_type, body, principal, authorization, request_id)
        except Exception as exc:  # noqa: BLE001 (e.g. sshd would not start)
            # RunPod's 500 for the client; for the test, a failure the fixture's teardown reports
            failure = f"emulator failure: {type(exc).__name__}: {exc}"
            reply = _problem(500, failure)
            self._violation("response", method, path, 500, request_id, failure)
        reply.headers["x-request-id"] = request_id
        if principal is not None:
            reply.headers.update(self._rate_headers(reply))
        if checked and reply.fault not in _OFF_CONTRACT and not reply.lost:
            response_headers = {**reply.headers}
            if reply.content_type:
                response_headers["Content-Type"] = reply.content_type
            for message in self.contract.check_response(method, path, reply.status, response_headers, reply.body):
                self._violation("response", method, path, reply.status, request_id, message)
        with self._lock:
            self._requests.append(RecordedRequest(
                at=time.monotonic(), method=method, path=path, query=query, body=_parsed(body),
                principal=principal, status=reply.status, request_id=request_id, fault=reply.fault,
                answered=not reply.lost,
            ))
        return reply

    def _v2(self, method: str, path: str, query: dict[str, list[str]], content_type: str | None,
            body: bytes, principal: str | None, authorization: str | None, request_id: str) -> _Reply:
        if principal is None:
            return _problem(401, "invalid API key" if authorization else "missing bearer token")
        operation = self.contract.operation(method, path)
        if operation is None:
            allowed = self.contract.allowed_methods(path)
            if not allowed:
                return _problem(404, f"no such path {path}")
            reply = _problem(405, "The requested method is not allowed for this path.")
            reply.headers["Allow"] = ", ".join(allowed)
            return reply
        if not self._pod_key_allows(principal, operation.operation_id, operation.path_params, body):
            return _problem(403, "access denied")
        rule = self._take_fault(method, path, operation.template)
        if rule is not None and rule.fault is not Fault.LOST_ANSWER:
            return _fault_reply(rule)
        reply = self._operate(operation, method, path, query, content_type, body, principal, request_id)
        if rule is not None:  # LOST_ANSWER: the work is done, the answer never leaves
            reply.fault, reply.lost = rule.fault, True
        return reply

    def _operate(self, operation: ContractOperation, method: str, path: str, query: dict[str, list[str]],
                 content_type: str | None, body: bytes, principal: str, request_id: str) -> _Reply:
        violations = self.contract.check_request(method, path, query, content_type, body)
        for message in violations:
            self._violation("request", method, path, 422, request_id, message)
        if violations:
            return _problem(422, "Request validation failed.", violations)
        handler = _OPERATIONS.get(operation.operation_id)
        if handler is None:
            return _problem(501, f"{operation.operation_id} is not emulated")
        try:
            return handler(self, _Request(method, path, operation.path_params, query, _parsed(body), principal))
        except _Refusal as refusal:
            return refusal.reply

    def _principal(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        key = authorization.removeprefix("Bearer ").strip()
        if secrets.compare_digest(key, self.api_key):
            return "account"
        with self._lock:
            for pod in self._pods.values():
                if not pod.terminated and secrets.compare_digest(key, pod.pod_key):
                    return f"pod:{pod.id}"
        return None

    def _pod_key_allows(self, principal: str, operation_id: str, params: dict[str, str], body: bytes) -> bool:
        """The account may do anything; a pod's key reads its own pod and may terminate it."""
        if principal == "account":
            return True
        if params.get("id") != principal.removeprefix("pod:"):
            return False
        if operation_id == "getPod":
            return self.pod_keys_may_read
        action = _parsed(body)
        terminating = operation_id == "deletePod" or (
            operation_id == "podAction" and isinstance(action, dict) and action.get("action") == "terminate")
        return terminating and self.pod_keys_may_terminate

    def _take_fault(self, method: str, path: str, template: str) -> _FaultRule | None:
        with self._lock:
            for rule in self._faults:
                if rule.method not in (None, method) or rule.path not in (None, path, template):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._faults.remove(rule)
                return rule
        return None

    def _rate_headers(self, reply: _Reply) -> dict[str, str]:
        """RateLimit-Policy and RateLimit over fixed windows since start (counted, not enforced)."""
        elapsed = time.monotonic() - self._started
        remaining = []
        with self._lock:
            for name, quota, seconds in self.rate_limit_policy:
                window = (name, int(elapsed // seconds))
                self._window_counts[window] = self._window_counts.get(window, 0) + 1
                reset = max(1, math.ceil(seconds - elapsed % seconds))
                left = max(0, quota - self._window_counts[window])
                if reply.fault is Fault.RATE_LIMITED and name == "minute":
                    left, reset = 0, int(reply.headers["Retry-After"])
                remaining.append(f'"{name}";r={left};t={reset}')
        return {"RateLimit-Policy": ", ".join(f'"{n}";q={q};w={w}' for n, q, w in self.rate_limit_policy),
                "RateLimit": ", ".join(remaining)}

    def _violation(self, kind: str, method: str, path: str, status: int, request_id: str, message: str) -> None:
        with self._lock:
            self._violations.append(Violation(kind, method, path, status, request_id, message))

    # ---- GraphQL: retired, except the switch's last resort -----------------------------------------

    def _graphql_answer(self, principal: str | None, body: bytes) -> _Reply:
        if not self._graphql:
            return _problem(410, "The GraphQL API is retired; use the REST API at /v2")
        if principal is None:
            return _json(401, {"errors": [{"message": "Unauthorized"}]})
        request = _parsed(body)
        query = request.get("query") if isinstance(request, dict) else None
        match = _GRAPHQL_TERMINATE.match(query) if isinstance(query, str) else None
        if match is None:
            return _json(400, {"errors": [{"message": "only podTerminate(input: {podId}) is served here"}]})
        pod_id = match.group(1)
        if principal not in ("account", f"pod:{pod_id}"):
            return _json(403, {"errors": [{"message": "access denied"}]})
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None or pod.terminated:
            return _json(200, {"errors": [{"message": "pod not found", "path": ["podTerminate"]}], "data": None})
        self._terminate(pod, principal)
        return _json(200, {"data": {"podTerminate": None}})

    # ---- pods ------------------------------------------------------------------------------------------

    def _list_pods(self, request: _Request) -> _Reply:
        pods = self.live_pods()
        answer: dict[str, Any] = {}
        if self.page_size is not None:
            cursor = request.arg("cursor")
            ids = [p.id for p in pods]
            start = ids.index(cursor) + 1 if cursor in ids else 0
            page = pods[start:start + self.page_size]
            more = start + self.page_size < len(pods)
            answer["pagination"] = {"nextCursor": page[-1].id if more else None, "hasNextPage": more}
            pods = page
        answer["pods"] = [self._observe(p) for p in pods]
        return _json(200, answer)

    def _get_pod(self, request: _Request) -> _Reply:
        return _json(200, self._observe(self._live_pod(request.params["id"])))

    def _delete_pod(self, request: _Request) -> _Reply:
        self._terminate(self._live_pod(request.params["id"]), request.principal)
        return _Reply(204)

    def _pod_action(self, request: _Request) -> _Reply:
        pod = self._live_pod(request.params["id"])
        action = request.body["action"]
        with self._lock:
            if action not in pod.actions():
                raise _Refusal(409, f"action {action} is not valid for a pod in status {pod.status}; "
                                    f"valid now: {', '.join(pod.actions())}")
        if action == "terminate":
            self._terminate(pod, request.principal)
            return _Reply(204)
        if action == "stop":
            with self._lock:
                self._release(pod)
                self._enter(pod, "EXITED")
            self._halt(pod)
        elif action == "restart":
            self._halt(pod)
            with self._lock:
                self._enter(pod, "STARTING")
            self._launch(pod)
        else:  # start
            with self._lock:
                if not pod.holds_capacity:
                    if pod.gpu_id is not None:
                        key = (pod.gpu_id, pod.data_center_id, pod.cloud)
                        if self._capacity.get(key, 0) < pod.gpu_count:
                            raise _Refusal(400, RESUME_CAPACITY_MESSAGE)
                        self._capacity[key] -= pod.gpu_count
                    pod.holds_capacity = True
                pod.doomed = False
                self._enter(pod, "PROVISIONING")
            self._launch(pod)
        with self._lock:
            return _json(200, self._record(pod))

    def _live_pod(self, pod_id: str) -> EmulatedPod:
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None or pod.terminated:
            raise _Refusal(404, f"pod {pod_id} not found")
        return pod

    def _create_pod(self, request: _Request) -> _Reply:
        spec: dict[str, Any] = request.body
        if ("gpu" in spec) == ("cpu" in spec):
            raise _Refusal(400, "exactly one of gpu or cpu must be set")
        if "templateId" in spec:
            raise _Refusal(404, f"template {spec['templateId']} not found")
        mounts = spec.get("mounts") or {}
        if "persistent" in mounts and mounts.get("network"):
            raise _Refusal(400, "mounts.persistent and mounts.network are mutually exclusive")
        if "cpu" in spec and "persistent" in mounts:
            raise _Refusal(400, "mounts.persistent is invalid for CPU pods")
        cloud = spec.get("cloud", "SECURE")
        wanted = spec.get("dataCenterIds") or list(self.data_centers)
        unknown = [dc for dc in wanted if dc not in self.data_centers]
        if unknown:
            raise _Refusal(400, f"unknown data center {unknown[0]!r}")
        volume = None
        if mounts.get("network"):
            volume_id = mounts["network"][0]["volumeId"]
            with self._lock:
                volume = self._volumes.get(volume_id)
            if volume is None:
                raise _Refusal(400, f"network volume {volume_id} not found")
            if volume.data_center not in wanted:
                raise _Refusal(400, f"network volume {volume.id} is in {volume.data_center}, which "
                                    f"dataCenterIds does not allow: a pod mounts a volume in its data center")
            wanted = [volume.data_center]
        with self._lock:
            if "gpu" in spec:
                placement = self._place_gpu(spec["gpu"], cloud, wanted)
            else:
                placement = self._place_cpu(spec["cpu"], wanted)
            pod = self._new_pod(spec, cloud, volume, *placement)
        try:
            self._launch(pod)
        except Exception:
            with self._lock:
                self._release(pod)
                del self._pods[pod.id]
            self._halt(pod)
            raise
        with self._lock:
            return _json(201, self._record(pod))

    def _place_gpu(self, gpu: dict[str, Any], cloud: str, wanted: list[str]) -> tuple[Any, ...]:
        """(gpu id, count, None, price, data centre, cuda version); takes the capacity. Under the lock."""
        model = self.gpus.get(gpu["id"])
        if model is None:
            raise _Refusal(400, f"unknown GPU type {gpu['id']!r}; see GET /v2/catalog/gpus")
        if model.id in self._forbidden_gpus:
            raise _Refusal(403, f"access denied: your account cannot deploy {model.id}")
        count = gpu.get("count", 1)
        price = model.price(cloud)
        if count > model.max_count(cloud) and price is not None:
            raise _Refusal(400, f"gpu.count {count} exceeds {model.max_count(cloud)} for {model.id} on {cloud}")
        allowed, floor = gpu.get("allowedCudaVersions") or [], gpu.get("minCudaVersion")
        if allowed and floor:
            raise _Refusal(400, "allowedCudaVersions and minCudaVersion are mutually exclusive")
        versions = [v for v in model.cuda_versions
                    if (not allowed or v in allowed) and (not floor or _cuda_key(v) >= _cuda_key(floor))]
        free = {dc: self._capacity.get((model.id, dc, cloud), 0) for dc in wanted}
        best = max(wanted, key=lambda dc: free[dc])
        if price is None or not versions or free[best] < count:
            raise _Refusal(400, CAPACITY_MESSAGE)
        self._capacity[(model.id, best, cloud)] -= count
        return model.id, count, None, round(price * count, 4), best, versions[-1]

    def _place_cpu(self, cpu: dict[str, Any], wanted: list[str]) -> tuple[Any, ...]:
        per_vcpu = _CPU_PRICE_PER_VCPU.get(cpu["id"])
        if per_vcpu is None:
            raise _Refusal(400, f"unknown CPU flavor {cpu['id']!r}")
        vcpus = cpu["vcpuCount"]
        record = {"id": cpu["id"], "vcpuCount": vcpus, "memory": 2 * vcpus}
        return None, 0, record, round(per_vcpu * vcpus, 4), wanted[0], None

    def _new_pod(self, spec: dict[str, Any], cloud: str, volume: EmulatedVolume | None, gpu_id: str | None,
                 count: int, cpu: dict[str, Any] | None, price: float, data_center: str,
                 cuda: str | None) -> EmulatedPod:
        """Record a placed pod in PROVISIONING. Under the lock."""
        pod_id = _new_id(14)
        while pod_id in self._pods:
            pod_id = _new_id(14)
        directory = self.root / "pods" / pod_id
        mounts = spec.get("mounts") or {}
        own = directory / ("persistent" if "persistent" in mounts else "container")
        workspace = volume.directory if volume else own
        pod = EmulatedPod(
            id=pod_id, name=spec["name"], image=spec.get("image", ""), args=spec.get("args", ""),
            disk=spec.get("disk", 20), ports=list(spec.get("ports", [])), env=dict(spec.get("env", {})),
            mounts=mounts, cloud=cloud, gpu_id=gpu_id, gpu_count=count, cpu=cpu, price=price,
            data_center_id=data_center, cuda_version=cuda, volume_id=volume.id if volume else None,
            directory=directory, workspace=workspace, pod_key="rpa_pod_" + secrets.token_hex(16),
            created_at=_now_iso(), phase_since=time.monotonic(), proxy_user=f"{pod_id}-{secrets.token_hex(4)}",
        )
        if self._doomed_creates > 0:
            self._doomed_creates -= 1
            pod.doomed = True
        workspace.mkdir(parents=True, exist_ok=True)
        self._pods[pod_id] = pod
        return pod

    # ---- pod life ------------------------------------------------------------------------------------

    def _observe(self, pod: EmulatedPod) -> dict[str, Any]:
        """A read of the pod: it may move on a phase first, and the read counts towards the next."""
        halt = False
        with self._lock:
            while self._phase_over(pod):
                if pod.status == "PROVISIONING":
                    self._enter(pod, "STARTING")
                elif pod.doomed:
                    self._enter(pod, "ERROR")
                    halt = True
                else:
                    self._enter(pod, "RUNNING")
            pod.phase_reads += 1
            record = self._record(pod)
        if halt:
            self._halt(pod)
            with self._lock:
                record = self._record(pod)
        return record

    def _phase_over(self, pod: EmulatedPod) -> bool:
        if pod.status not in ("PROVISIONING", "STARTING"):
            return False
        if pod.status == "STARTING" and not pod.sandbox_ready:
            return False
        elapsed = time.monotonic() - pod.phase_since
        return pod.phase_reads >= self.reads_per_phase and elapsed >= self.seconds_per_phase

    def _enter(self, pod: EmulatedPod, status: str) -> None:
        pod.status, pod.phase_since, pod.phase_reads = status, time.monotonic(), 0
        if status == "RUNNING":
            pod.running_since, pod.started_at = time.monotonic(), _now_iso()
        else:
            pod.running_since = None

    def _release(self, pod: EmulatedPod) -> None:
        """Give the pod's GPUs back to the data centre. Under the lock."""
        if pod.holds_capacity and pod.gpu_id is not None:
            key = (pod.gpu_id, pod.data_center_id, pod.cloud)
            self._capacity[key] = self._capacity.get(key, 0) + pod.gpu_count
        pod.holds_capacity = False

    def _terminate(self, pod: EmulatedPod, principal: str | None) -> None:
        with self._lock:
            pod.terminate_requests.append(principal)
            if self._ignored_terminations is None:
                return
            if self._ignored_terminations > 0:
                self._ignored_terminations -= 1
                return
            self._release(pod)
            self._enter(pod, "TERMINATED")
        self._halt(pod)

    def _record(self, pod: EmulatedPod) -> dict[str, Any]:
        """The pod as the API shows it (every required field of the contract's Pod). Under the lock."""
        running = pod.status == "RUNNING"
        direct = None
        if running and "22/tcp" in pod.ports and pod.sshd is not None:
            port = pod.sshd.port
            direct = {"host": self.public_ip, "port": port, "username": "root",
                      "command": f"ssh root@{self.public_ip} -p {port}"}
        proxy = None if pod.status == "PROVISIONING" else {
            "host": "ssh.runpod.io", "port": 22, "username": pod.proxy_user,
            "command": f"ssh {pod.proxy_user}@ssh.runpod.io"}
        record: dict[str, Any] = {
            "id": pod.id, "name": pod.name, "status": pod.status, "actions": pod.actions(),
            "image": pod.image, "args": pod.args, "disk": pod.disk, "mounts": pod.mounts, "ports": pod.ports,
            "env": pod.env, "registry": None, "cloud": pod.cloud, "dataCenterId": pod.data_center_id,
            "cudaVersion": pod.cuda_version, "ssh": {"proxy": proxy, "direct": direct}, "template": None,
            "cost": 0.0 if pod.status in ("EXITED", "TERMINATED") else pod.price, "locked": False,
            "runtime": self._runtime(pod) if running else None, "createdAt": pod.created_at,
            "startedAt": pod.started_at, "globalNetworking": {"enabled": False},
        }
        if pod.gpu_id is not None:
            record["gpu"] = {"id": pod.gpu_id, "count": pod.gpu_count}
        else:
            record["cpu"] = pod.cpu
        return record

    def _runtime(self, pod: EmulatedPod) -> dict[str, Any]:
        ports = []
        for spec in pod.ports:
            number, _, kind = spec.partition("/")
            if spec == "22/tcp" and pod.sshd is not None:
                ports.append({"private": 22, "public": pod.sshd.port, "type": "tcp", "ip": self.public_ip})
            else:
                ports.append({"private": int(number), "public": None, "type": kind or "tcp", "ip": None})
        return {"uptime": int(time.monotonic() - (pod.running_since or time.monotonic())), "ports": ports}

    # ---- the sandbox ---------------------------------------------------------------------------------

    def _launch(self, pod: EmulatedPod) -> None:
        """Start the container stand-in: sshd on a loopback port, then the start command."""
        env = {
            **pod.env, "RUNPOD_POD_ID": pod.id, "RUNPOD_API_KEY": pod.pod_key, "RUNPOD_API_BASE_URL": self.url,
            "RUNPOD_PUBLIC_IP": self.public_ip, "RUNPOD_DC_ID": pod.data_center_id,
            "RUNPOD_GPU_COUNT": str(pod.gpu_count),
        }
        home = pod.directory / "home"
        if "22/tcp" in pod.ports:
            workdir = pod.directory / "sshd"
            host_key = workdir / "ssh_host_ed25519_key"  # kept across restarts, as the container's
            # sshd's SetEnv cannot carry quotes, backslashes or newlines; such values stay out of sessions
            safe = {k: v for k, v in env.items() if not any(c in v for c in '"\\\n') and k.isidentifier()}
            pod.sshd = start_sshd(workdir, env=safe, start_dir=pod.workspace,
                                  host_key=host_key if host_key.exists() else None,
                                  authorized_keys=pod.env.get("PUBLIC_KEY", ""))
            env["RUNPOD_TCP_PORT_22"] = str(pod.sshd.port)
            home = pod.sshd.home
        home.mkdir(parents=True, exist_ok=True)
        bin_dir = pod.directory / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        runpodctl = bin_dir / "runpodctl"
        runpodctl.write_text(_RUNPODCTL.format(python=sys.executable))
        runpodctl.chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        env["HOME"] = str(home)
        pod.container_env = env
        if self.workspace_link is not None:  # the pod's /workspace at a path known before it exists
            self.workspace_link.unlink(missing_ok=True)
            self.workspace_link.parent.mkdir(parents=True, exist_ok=True)
            self.workspace_link.symlink_to(pod.workspace, target_is_directory=True)
        if pod.args.strip():
            with pod.log_path.open("ab") as log:
                pod.process = subprocess.Popen(
                    ["/bin/sh", "-c", pod.args], cwd=pod.workspace, env=env, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                )
        pod.sandbox_ready = True

    def _halt(self, pod: EmulatedPod) -> None:
        """Take every process of the pod down, as a container's end does: the start command's process
        group (SIGTERM, SIGKILL after the grace), sshd and its sessions, then whatever else carries the
        pod's RUNPOD_POD_ID (a daemon an SSH session started with setsid, say)."""
        pod.sandbox_ready = False
        if pod.process is not None:
            _kill_group(pod.process, self.kill_grace_s)
        if pod.sshd is not None:
            pod.sshd.stop()
        for pid in _processes_of(pod.id):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---- catalog -------------------------------------------------------------------------------------

    def _list_gpus(self, request: _Request) -> _Reply:
        options = self._availability_options(request)
        gpus = []
        with self._lock:
            for model in self.gpus.values():
                record = self._gpu_record(model, options)
                if options and options["countries"] and not self._stocked_in_countries(model, options["countries"]):
                    continue  # the list drops a GPU type with no data center in those countries
                gpus.append(record)
        return _json(200, {"gpus": gpus})

    def _get_gpu(self, request: _Request) -> _Reply:
        model = self.gpus.get(request.params["id"])
        if model is None:
            raise _Refusal(404, f"GPU type {request.params['id']} not found")
        options = self._availability_options(request)
        with self._lock:
            return _json(200, self._gpu_record(model, options))

    def _availability_options(self, request: _Request) -> dict[str, Any] | None:
        """The availability query (None when not asked for); 400 for what needs include=AVAILABILITY."""
        include, products = request.list_arg("include"), request.list_arg("product")
        if not include:
            for name in ("product", "countryCodes", "cudaVersions", "minCudaVersion"):
                if request.arg(name) is not None:
                    raise _Refusal(400, f"{name} is valid only with include=AVAILABILITY")
            return None
        if not products:
            raise _Refusal(400, "product is required with include=AVAILABILITY")
        exact, floor = request.list_arg("cudaVersions"), request.arg("minCudaVersion")
        if exact and floor:
            raise _Refusal(400, "cudaVersions and minCudaVersion are mutually exclusive")
        return {"count": int(request.arg("count") or 1), "cloud": request.arg("cloud") or "SECURE",
                "countries": set(request.list_arg("countryCodes")), "exact": exact, "floor": floor}

    def _stocked_in_countries(self, model: GpuModel, countries: set[str]) -> bool:
        return any(self.data_centers[dc].country in countries for gpu, dc, _ in self._capacity if gpu == model.id)

    def _gpu_record(self, model: GpuModel, options: dict[str, Any] | None) -> dict[str, Any]:
        """One GpuType; with availability from the capacity (or the lie) when asked. Under the lock."""
        record: dict[str, Any] = {
            "id": model.id, "name": model.name, "pool": None, "manufacturer": "NVIDIA", "memory": model.memory,
            "secure": True, "community": model.price_community is not None,
            "price": {"secure": model.price_secure, "community": model.price_community or 0.0},
            "maxCount": {"secure": model.max_count_secure, "community": model.max_count_community},
        }
        if options is None:
            return record
        count, cloud = options["count"], options["cloud"]
        versions = [v for v in model.cuda_versions
                    if (not options["exact"] or v in options["exact"])
                    and (not options["floor"] or _cuda_key(v) >= _cuda_key(options["floor"]))]
        levels = {}
        for dc in self.data_centers.values():
            if options["countries"] and dc.country not in options["countries"]:
                continue
            if (model.id, dc.id, cloud) not in self._capacity:
                continue  # not stocked there
            fits = versions and count <= model.max_count(cloud)
            units = self._capacity[(model.id, dc.id, cloud)] // count if fits else 0
            levels[dc.id] = self._advertised_level(model.id, dc.id, availability_level(units))
        overall = max(levels.values(), key=LEVELS.index, default="NONE")
        record["availability"] = overall
        listed = [{"id": dc, "name": self.data_centers[dc].name, "availability": level}
                  for dc, level in levels.items() if level != "NONE"]
        if listed:
            record["dataCenters"] = listed
        if versions:
            really_free = any(self._capacity.get((model.id, dc, cloud), 0) >= count for dc in levels)
            record["cudaVersions"] = [{"version": v, "available": really_free} for v in versions]
        return record

    def _advertised_level(self, gpu_id: str, data_center: str | None, actual: str) -> str:
        for key in ((gpu_id, data_center), (gpu_id, None), (None, data_center), (None, None)):
            if key in self._advertised:
                return self._advertised[key]
        return actual

    def _list_data_centers(self, request: _Request) -> _Reply:
        regions, volume_types = request.list_arg("regions"), request.list_arg("networkVolumeTypes")
        compliance, global_network = request.list_arg("compliance"), request.arg("globalNetwork")
        with_gpus = "GPU_AVAILABILITY" in request.list_arg("include")
        with self._lock:
            found = [self._data_center_record(dc, with_gpus) for dc in self.data_centers.values()
                     if (not regions or dc.region in regions)
                     and all(t in dc.volume_types for t in volume_types)
                     and all(c in dc.compliance for c in compliance)
                     and (global_network is None or dc.global_network == (global_network == "true"))]
        return _json(200, {"dataCenters": found})

    def _get_data_center(self, request: _Request) -> _Reply:
        dc = self.data_centers.get(request.params["id"])
        if dc is None:
            raise _Refusal(404, f"data center {request.params['id']} not found")
        with self._lock:
            return _json(200, self._data_center_record(dc, "GPU_AVAILABILITY" in request.list_arg("include")))

    def _data_center_record(self, dc: DataCenterModel, with_gpus: bool) -> dict[str, Any]:
        record: dict[str, Any] = {"id": dc.id, "name": dc.name, "region": dc.region,
                                  "globalNetwork": dc.global_network, "networkVolumeTypes": list(dc.volume_types),
                                  "compliance": list(dc.compliance)}
        if with_gpus:
            offered = []
            for model in self.gpus.values():
                free = [self._capacity[(model.id, dc.id, c)] for c in CLOUDS if (model.id, dc.id, c) in self._capacity]
                if free:
                    level = self._advertised_level(model.id, dc.id, availability_level(max(free)))
                    offered.append({"id": model.id, "name": model.name, "availability": level})
            if offered:
                record["gpuAvailability"] = offered
        return record

    # ---- network volumes -----------------------------------------------------------------------------

    def _list_volumes(self, request: _Request) -> _Reply:
        return _json(200, {"networkVolumes": [v.record() for v in self.volumes]})

    def _create_volume(self, request: _Request) -> _Reply:
        spec = request.body
        volume = self.create_volume(spec["name"], spec["size"], spec["dataCenter"], spec.get("type"))
        return _json(201, volume.record())

    def _get_volume(self, request: _Request) -> _Reply:
        return _json(200, self._existing_volume(request.params["id"]).record())

    def _update_volume(self, request: _Request) -> _Reply:
        volume = self._existing_volume(request.params["id"])
        with self._lock:
            size = request.body.get("size", volume.size)
            if size < volume.size:
                raise _Refusal(400, f"network volume storage cannot be reduced (now {volume.size} GB)")
            volume.size, volume.name = size, request.body.get("name", volume.name)
            return _json(200, volume.record())

    def _delete_volume(self, request: _Request) -> _Reply:
        volume = self._existing_volume(request.params["id"])
        with self._lock:
            users = [p.id for p in self._pods.values() if p.volume_id == volume.id and not p.terminated]
            if users:
                raise _Refusal(400, f"network volume {volume.id} is in use by pod {users[0]}")
            del self._volumes[volume.id]
        shutil.rmtree(volume.directory, ignore_errors=True)
        return _Reply(204)

    def _existing_volume(self, volume_id: str) -> EmulatedVolume:
        with self._lock:
            volume = self._volumes.get(volume_id)
        if volume is None:
            raise _Refusal(404, f"network volume {volume_id} not found")
        return volume

    # ---- serverless endpoints (management) ---------------------------------------------------------

    def endpoints(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._endpoints.values())

    def _list_endpoints(self, request: _Request) -> _Reply:
        return _json(200, {"endpoints": self.endpoints()})

    def _create_endpoint(self, request: _Request) -> _Reply:
        spec = request.body
        if spec["type"] != "QUEUE":
            raise _Refusal(400, "only queue-based endpoints are emulated")
        for volume_id in spec.get("networkVolumes", []):
            self._existing_volume(volume_id)
        workers = {"min": 0, "max": 3, "idleTimeout": 10, **spec.get("workers", {})}
        gpu = spec.get("gpu")
        record: dict[str, Any] = {
            "id": _new_id(14), "name": spec["name"], "type": "QUEUE", "image": spec.get("image", ""),
            "env": spec.get("env", {}), "workers": workers, "scaling": spec["scaling"],
            "gpu": {"pools": gpu["pools"], "allowedCudaVersions": gpu.get("allowedCudaVersions", []),
                    "minCudaVersion": gpu.get("minCudaVersion")} if gpu else None,
            "dataCenterIds": spec.get("dataCenterIds", []), "networkVolumes": spec.get("networkVolumes", []),
            "timeout": spec.get("timeout", 300000), "flashboot": spec.get("flashboot", "OFF"), "createdAt": _now_iso(),
        }
        with self._lock:
            self._endpoints[record["id"]] = record
        if self.serverless is not None:
            self.serverless.add_endpoint(record["id"], workers=max(1, workers["max"]))
        return _json(201, record)

    def _get_endpoint(self, request: _Request) -> _Reply:
        with self._lock:
            record = self._endpoints.get(request.params["id"])
        if record is None:
            raise _Refusal(404, f"endpoint {request.params['id']} not found")
        return _json(200, record)

    def _delete_endpoint(self, request: _Request) -> _Reply:
        with self._lock:
            record = self._endpoints.pop(request.params["id"], None)
        if record is None:
            raise _Refusal(404, f"endpoint {request.params['id']} not found")
        if self.serverless is not None:
            self.serverless.remove_endpoint(record["id"])
        return _Reply(204)


_OPERATIONS: dict[str, _OperationHandler] = {
    "listEndpoints": RunPodEmulator._list_endpoints,
    "createEndpoint": RunPodEmulator._create_endpoint,
    "getEndpoint": RunPodEmulator._get_endpoint,
    "deleteEndpoint": RunPodEmulator._delete_endpoint,
    "listPods": RunPodEmulator._list_pods,
    "createPod": RunPodEmulator._create_pod,
    "getPod": RunPodEmulator._get_pod,
    "deletePod": RunPodEmulator._delete_pod,
    "podAction": RunPodEmulator._pod_action,
    "listGpuTypes": RunPodEmulator._list_gpus,
    "getGpuType": RunPodEmulator._get_gpu,
    "listDataCenters": RunPodEmulator._list_data_centers,
    "getDataCenter": RunPodEmulator._get_data_center,
    "listNetworkVolumes": RunPodEmulator._list_volumes,
    "createNetworkVolume": RunPodEmulator._create_volume,
    "getNetworkVolume": RunPodEmulator._get_volume,
    "updateNetworkVolume": RunPodEmulator._update_volume,
    "deleteNetworkVolume": RunPodEmulator._delete_volume,
}


def _parsed(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def _processes_of(pod_id: str) -> list[int]:
    """Live processes whose environment names this pod (everything started inside it inherits it)."""
    marker = f"RUNPOD_POD_ID={pod_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _kill_group(process: subprocess.Popen, grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; make sure nothing else of its group lingers
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if process.poll() is None:
        process.wait()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET  # noqa: N815

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emulator: RunPodEmulator = self.server.emulator  # type: ignore[attr-defined]
        reply = emulator.handle(self.command, self.path, self.headers, body)  # type: ignore[arg-type]  # a Message maps
        if reply.lost:
            self.close_connection = True  # nothing was written: the client sees the connection drop
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.status != 204:
                self.send_header("Content-Type", reply.content_type or "application/octet-stream")
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller died, e.g. a pod's switch killed by its own termination

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        pass


# --------------------------------------------------------------------------------------------------
# pytest
# --------------------------------------------------------------------------------------------------


def emulated_runpod(root: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[RunPodEmulator]:
    """Generator for a fixture: a started emulator, RUNPOD_API_BASE_URL and RUNPOD_API_KEY set; at
    teardown everything stops, no process may be left and every response must have kept the contract."""
    emulator = RunPodEmulator(root, **options).start()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.url)
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    try:
        yield emulator
    finally:
        emulator.stop()
    # A process killed is gone a moment later (sooner or later on a loaded machine), and one a pod
    # started while it was ending (the switch's curl) is ended again: wait on that, with a deadline.
    deadline = time.monotonic() + 20
    while (left := emulator.leftover_processes()) and time.monotonic() < deadline:
        for pod in emulator.all_pods:
            emulator._halt(pod)
        time.sleep(0.1)
    assert left == [], "pod processes outlived the emulator"
    assert emulator.response_violations == [], "the emulator broke the contract"


@pytest.fixture
def runpod_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    """The emulator with its defaults (see the module docstring)."""
    yield from emulated_runpod(tmp_path / "runpod", monkeypatch)


def emulated_for_ralph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[RunPodEmulator]:
    """``emulated_runpod`` for tests of ralph's pod handlers: ralph's machine-wide state (the pod
    ledger, its measures) under ``tmp_path``; a quota that polling every 0.1 s, the tests' pace, does
    not use up (RunPod's example is 60 a minute, and ralph paces itself by the RateLimit headers);
    terminations honoured again before the teardown; and no request of ralph's off the contract."""
    monkeypatch.setenv("RALPH_STATE_HOME", str(tmp_path / "ralph-state"))
    emulator: RunPodEmulator
    for emulator in emulated_runpod(tmp_path / "runpod", monkeypatch, **{"kill_grace_s": 0.3, **options}):
        emulator.rate_limit_policy = (("minute", 100_000, 60),)
        yield emulator
        emulator.ignore_terminations(0)
        assert emulator.request_violations == [], "ralph sent a request off RunPod's contract"
