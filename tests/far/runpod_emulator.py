"""RunPod's far side for tests: the GraphQL API the pinned runpod SDK (1.12.0) talks to, served over real
HTTP on 127.0.0.1, with every pod a local sandbox (a workspace directory, its start command as a real
process, a real OpenSSH server on a loopback port).

Point the SDK at it with ``RUNPOD_API_BASE_URL=emulator.url``. The SDK pastes values into the query text
(no GraphQL variables), so the emulator parses that text with a small GraphQL parser, the way the real
server does: an unescaped ``"`` in a value is a syntax error here as there, and an escaped one round-trips.
Responses carry exactly the fields the query selects; asking for a field the emulator does not model is a
GraphQL error, so a new SDK query shape fails loudly instead of being answered wrongly.

Pod life follows /work/shared/notes/runpod.md: ``desiredStatus`` is RUNNING at once, ``runtime`` stays
null for ``runtime_after_polls`` reads and ``runtime_after_s`` seconds (or forever), then lists the ports
with a public tcp entry for port 22; stopped pods read EXITED with stale ports; terminated pods read null
and leave ``myself.pods``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------
# GraphQL: just the executable-document subset the SDK writes (one operation, fields, arguments,
# literal values). Variables, fragments, aliases and directives are not used by runpod 1.12.0.
# --------------------------------------------------------------------------------------------------


class GraphQLError(Exception):
    """A request the real server would reject with HTTP 400 and a message in ``errors``."""


class EnumValue(str):
    """A bare enum literal such as ``ALL`` (kept apart from the string ``"ALL"``)."""


@dataclass(frozen=True)
class Field:
    name: str
    args: dict[str, Any]
    selections: tuple[Field, ...]


@dataclass(frozen=True)
class Operation:
    kind: str  # "query" or "mutation"
    name: str | None
    fields: tuple[Field, ...]


_TOKEN = re.compile(
    r"""(?P<ws>[\s,\ufeff]+|\#[^\n]*)
      | (?P<punct>[{}()\[\]:!$=@]|\.\.\.)
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
      | (?P<string>")""",
    re.VERBOSE,
)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a string literal whose opening quote is at ``start - 1``; return (value, next index)."""
    if text.startswith('""', start):
        raise GraphQLError("Syntax Error: block strings are not used by the SDK.")
    out: list[str] = []
    i = start
    while i < len(text):
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c in "\n\r":
            raise GraphQLError("Syntax Error: Unterminated string.")
        if c == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            raise GraphQLError(f"Syntax Error: Invalid character escape sequence: \\{nxt}.")
        out.append(c)
        i += 1
    raise GraphQLError("Syntax Error: Unterminated string.")


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if not m:
            raise GraphQLError(f"Syntax Error: Unexpected character: {text[i]!r}.")
        kind = m.lastgroup
        i = m.end()
        if kind == "ws":
            continue
        if kind == "string":
            value, i = _read_string(text, i)
            tokens.append(("string", value))
        elif kind == "number":
            raw = m.group()
            tokens.append(("number", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        else:
            tokens.append((kind, m.group()))
    tokens.append(("eof", None))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self, kind: str, value: Any = None) -> Any:
        tok_kind, tok_value = self.tokens[self.pos]
        if tok_kind != kind or (value is not None and tok_value != value):
            shown = "<EOF>" if tok_kind == "eof" else repr(tok_value)
            raise GraphQLError(f"Syntax Error: Expected {value or kind}, found {shown}.")
        self.pos += 1
        return tok_value

    def at(self, kind: str, value: Any = None) -> bool:
        tok_kind, tok_value = self.peek()
        return tok_kind == kind and (value is None or tok_value == value)

    def document(self) -> Operation:
        kind, name = "query", None
        if self.at("name", "query") or self.at("name", "mutation"):
            kind = self.take("name")
            if self.at("name"):
                name = self.take("name")
        fields = self.selection_set()
        self.take("eof")
        return Operation(kind, name, fields)

    def selection_set(self) -> tuple[Field, ...]:
        self.take("punct", "{")
        fields = []
        while not self.at("punct", "}"):
            fields.append(self.field())
        self.take("punct", "}")
        if not fields:
            raise GraphQLError("Syntax Error: Expected Name, found '}'.")
        return tuple(fields)

    def field(self) -> Field:
        name = self.take("name")
        args: dict[str, Any] = {}
        if self.at("punct", "("):
            self.take("punct", "(")
            while not self.at("punct", ")"):
                key = self.take("name")
                self.take("punct", ":")
                args[key] = self.value()
            self.take("punct", ")")
        selections = self.selection_set() if self.at("punct", "{") else ()
        return Field(name, args, selections)

    def value(self) -> Any:
        kind, value = self.peek()
        if kind in ("string", "number"):
            self.pos += 1
            return value
        if kind == "name":
            self.pos += 1
            return {"true": True, "false": False, "null": None}.get(value, EnumValue(value))
        if self.at("punct", "["):
            self.take("punct", "[")
            items = []
            while not self.at("punct", "]"):
                items.append(self.value())
            self.take("punct", "]")
            return items
        if self.at("punct", "{"):
            self.take("punct", "{")
            obj = {}
            while not self.at("punct", "}"):
                key = self.take("name")
                self.take("punct", ":")
                obj[key] = self.value()
            self.take("punct", "}")
            return obj
        shown = "<EOF>" if kind == "eof" else repr(value)
        raise GraphQLError(f"Syntax Error: Unexpected {shown}.")


def parse_operation(text: str) -> Operation:
    """Parse one GraphQL operation as the SDK writes it; GraphQLError on malformed text."""
    return _Parser(text).document()


def _project(value: Any, selections: tuple[Field, ...], type_name: str) -> Any:
    """Keep only the selected fields, resolving callables (fields that take arguments) on the way."""
    if value is None or not selections:
        return value
    if isinstance(value, list):
        return [_project(v, selections, type_name) for v in value]
    out = {}
    for f in selections:
        if f.name not in value:
            raise GraphQLError(f'Cannot query field "{f.name}" on type "{type_name}".')
        v = value[f.name]
        if callable(v):
            v = v(f.args)
        out[f.name] = _project(v, f.selections, f"{type_name}.{f.name}")
    return out


# --------------------------------------------------------------------------------------------------
# The account, its GPU catalogue and its pods
# --------------------------------------------------------------------------------------------------

CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
RESUME_CAPACITY_MESSAGE = "There are not enough free GPUs on the host machine to start this pod."


@dataclass(frozen=True)
class GpuType:
    id: str
    display_name: str
    memory_gb: int
    price_per_hr: float  # on-demand price of one GPU; a pod's costPerHr is this times gpuCount
    max_gpu_count: int = 8


DEFAULT_GPU_TYPES: tuple[GpuType, ...] = (
    GpuType("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69),
    GpuType("NVIDIA RTX A5000", "RTX A5000", 24, 0.27),
    GpuType("NVIDIA L40S", "L40S", 48, 0.86),
    GpuType("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64),
    GpuType("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99),
)


class Fault(str, Enum):
    """What a faulty response looks like; the SDK turns each into a different exception."""

    UNAUTHORIZED = "unauthorized"  # HTTP 401 -> runpod.error.AuthenticationError
    SERVER_ERROR = "server_error"  # HTTP 502, an HTML gateway page -> requests.JSONDecodeError
    SERVER_ERROR_JSON = "server_error_json"  # HTTP 500, JSON errors "Something went wrong" -> QueryError
    RATE_LIMITED = "rate_limited"  # HTTP 429, plain text -> requests.JSONDecodeError
    RATE_LIMITED_JSON = "rate_limited_json"  # HTTP 429, JSON errors -> QueryError
    GARBAGE = "garbage"  # HTTP 200, not JSON -> requests.JSONDecodeError
    NO_DATA = "no_data"  # HTTP 200, JSON without "data" -> KeyError
    NULL_DATA = "null_data"  # HTTP 200, {"data": null} -> TypeError


_FAULT_RESPONSES: dict[Fault, tuple[int, str, bytes]] = {
    Fault.UNAUTHORIZED: (401, "text/plain", b"Unauthorized"),
    Fault.SERVER_ERROR: (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    Fault.SERVER_ERROR_JSON: (
        500,
        "application/json",
        json.dumps({"errors": [{"message": "Something went wrong. Please try again later."}]}).encode(),
    ),
    Fault.RATE_LIMITED: (429, "text/plain", b"Too Many Requests"),
    Fault.RATE_LIMITED_JSON: (
        429,
        "application/json",
        json.dumps({"errors": [{"message": "Too many requests, please slow down."}]}).encode(),
    ),
    Fault.GARBAGE: (200, "text/html", b"<!doctype html><title>maintenance</title>"),
    Fault.NO_DATA: (200, "application/json", b'{"extensions": {}}'),
    Fault.NULL_DATA: (200, "application/json", b'{"data": null}'),
}


@dataclass
class _FaultRule:
    fault: Fault
    remaining: int | None  # None: for ever
    operation: str | None  # a root field name such as "podFindAndDeployOnDemand"; None: any request
    after: bool  # True: the request takes effect, then its response is replaced


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the emulator saw it (the key itself is never kept)."""

    at: float  # time.monotonic()
    method: str
    path: str
    principal: str | None  # "account", "pod:<id>", or None for a missing or unknown key
    query: str | None
    kind: str | None  # "query" / "mutation" when the text parsed
    fields: tuple[str, ...]  # root field names, e.g. ("podFindAndDeployOnDemand",)
    args: dict[str, Any]  # arguments of the first root field
    status: int
    fault: Fault | None


# (pod_id, workspace, env) -> (host, port, stop) or an object with .host, .port and .stop()
StartSsh = Callable[[str, Path, dict[str, str]], Any]


@dataclass
class EmulatedPod:
    """One pod: its API-visible record and the local sandbox standing in for the container."""

    id: str
    name: str
    image: str
    gpu: GpuType
    gpu_count: int
    cloud_type: str
    docker_args: str
    ports: str
    env: dict[str, str]
    volume_mount_path: str
    container_disk_gb: int
    volume_gb: int
    data_center_id: str | None
    network_volume_id: str | None
    directory: Path  # everything of this pod lives under it
    workspace: Path  # the pod's /workspace stand-in
    pod_key: str = field(repr=False)  # pod-scoped RUNPOD_API_KEY
    machine_id: str = ""
    pod_host_id: str = ""
    created_at: float = 0.0
    desired_status: str = "RUNNING"
    runtime_after_polls: int = 0
    runtime_after_s: float = 0.0
    runtime_never: bool = False
    polls: int = 0  # reads of this pod (get or list) since it last started
    started_at: float = 0.0
    runtime_since: float | None = None
    stale_ports: list[dict[str, Any]] | None = None  # what an EXITED pod still shows
    terminated: bool = False
    terminate_requests: int = 0
    ssh: Any = None  # what start_ssh returned (the tests' SshServer: client_key, known_hosts_line())
    ssh_host: str | None = None
    ssh_port: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    _ssh_stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """Where the start command's stdout and stderr go."""
        return self.directory / "container.log"

    def pod_env(self, api_url: str, public_ip: str) -> dict[str, str]:
        """The variables RunPod puts into every container, over the user's env."""
        return {
            **self.env,
            "RUNPOD_POD_ID": self.id,
            "RUNPOD_API_KEY": self.pod_key,
            "RUNPOD_API_BASE_URL": api_url,
            "RUNPOD_PUBLIC_IP": public_ip,
            "RUNPOD_GPU_COUNT": str(self.gpu_count),
            "RUNPOD_POD_HOSTNAME": self.pod_host_id,
        }


def _default_start_ssh() -> StartSsh | None:
    """The real OpenSSH helper when tests/far/sshd.py is there (it is written alongside this file)."""
    if not Path(__file__).with_name("sshd.py").exists():
        return None
    from .sshd import start_sshd

    def start(pod_id: str, workspace: Path, env: dict[str, str]) -> Any:
        # sshd's SetEnv cannot carry quotes, backslashes or newlines; real pods often lack
        # these variables in SSH sessions anyway (notes/runpod.md), so such values are left out.
        safe = {k: v for k, v in env.items() if not any(c in v for c in '"\\\n')}
        return start_sshd(workspace.parent / "sshd", env=safe, start_dir=workspace)

    return start


_USE_DEFAULT: Any = object()
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _new_id(n: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def _refused_port() -> int:
    """A loopback port nothing listens on: what a pod's exposed SSH port looks like without sshd."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RUNPODCTL = '''#!{python}
"""Emulated runpodctl (the subset a dead-man's switch uses): remove pod ID / pod delete ID / stop pod ID."""
import json, os, sys, urllib.request
args = sys.argv[1:]
if args[:2] in (["remove", "pod"], ["pod", "delete"], ["pod", "remove"]) and len(args) == 3:
    query = 'mutation {{ podTerminate(input: {{ podId: "%s" }}) }}' % args[2]
elif args[:2] == ["stop", "pod"] and len(args) == 3:
    query = 'mutation {{ podStop(input: {{ podId: "%s" }}) {{ id desiredStatus }} }}' % args[2]
else:
    sys.exit("usage: runpodctl remove pod POD_ID")
req = urllib.request.Request(os.environ["RUNPOD_API_BASE_URL"] + "/graphql",
    data=json.dumps({{"query": query}}).encode(),
    headers={{"Content-Type": "application/json",
             "Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"]}})
with urllib.request.urlopen(req, timeout=30) as resp:
    body = json.load(resp)
if body.get("errors"):
    sys.exit(body["errors"][0]["message"])
print('pod "%s" removed' % args[2])
'''


class RunPodEmulator:
    """RunPod's GraphQL API on 127.0.0.1 with local pods. Use as a context manager or start()/stop().

    Knobs (all thread-safe, effective for requests that arrive afterwards):
    ``no_capacity(*gpu_ids)`` / ``restore_capacity(*gpu_ids)``, ``fail(fault, times=, operation=, after=)``,
    ``clear_faults()``, ``ignore_terminations(times=)``, and the attributes ``runtime_after_polls``,
    ``runtime_after_s``, ``runtime_never`` (for pods created or resumed later; each EmulatedPod has its
    own copies), ``zero_cost`` (costPerHr reads 0, runpod-python#438).
    """

    def __init__(
        self,
        root: Path,
        *,
        api_key: str | None = None,
        gpu_types: Sequence[GpuType] = DEFAULT_GPU_TYPES,
        network_volumes: Sequence[dict[str, Any]] = (),
        runtime_after_polls: int = 0,
        runtime_after_s: float = 0.0,
        runtime_never: bool = False,
        start_ssh: StartSsh | None = _USE_DEFAULT,
        run_start_command: bool = True,
        public_ip: str = "127.0.0.1",
        kill_grace_s: float = 1.0,
    ) -> None:
        self.root = Path(root)
        self.api_key = api_key or "rp_emulated_" + secrets.token_hex(16)
        self.gpu_types = {g.id: g for g in gpu_types}
        self.network_volumes = [dict(v) for v in network_volumes]
        self.runtime_after_polls = runtime_after_polls
        self.runtime_after_s = runtime_after_s
        self.runtime_never = runtime_never
        self.start_ssh: StartSsh | None = _default_start_ssh() if start_ssh is _USE_DEFAULT else start_ssh
        self.run_start_command = run_start_command
        self.public_ip = public_ip
        self.kill_grace_s = kill_grace_s
        self.zero_cost = False
        self.user_id = "user_" + _new_id(10)
        self.pub_key = ""
        self._lock = threading.RLock()
        self._pods: dict[str, EmulatedPod] = {}  # every pod ever created, terminated ones included
        self._requests: list[RecordedRequest] = []
        self._faults: list[_FaultRule] = []
        self._no_capacity: set[str] = set()
        self._ignored_terminations: int | None = 0  # None: every termination is ignored
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- serving ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The value for RUNPOD_API_BASE_URL (the SDK appends /graphql)."""
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

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
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            self._halt(pod)

    def __enter__(self) -> RunPodEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- knobs -----------------------------------------------------------------------------------

    def no_capacity(self, *gpu_type_ids: str) -> None:
        """Creating (or resuming) a pod of these GPU types fails with RunPod's capacity message."""
        with self._lock:
            self._no_capacity.update(gpu_type_ids)

    def restore_capacity(self, *gpu_type_ids: str) -> None:
        """Undo no_capacity for these GPU types, or for all when none are named."""
        with self._lock:
            if gpu_type_ids:
                self._no_capacity.difference_update(gpu_type_ids)
            else:
                self._no_capacity.clear()

    def fail(self, fault: Fault | str, *, times: int | None = 1, operation: str | None = None,
             after: bool = False) -> None:
        """Answer the next ``times`` requests (None: all) whose root field is ``operation`` (None: any)
        with ``fault``. With ``after=True`` the request takes effect first (a pod really is created or
        terminated) and only its response is lost, the case that leaks pods."""
        with self._lock:
            self._faults.append(_FaultRule(Fault(fault), times, operation, after))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def ignore_terminations(self, times: int | None = None) -> None:
        """Acknowledge the next ``times`` podTerminate calls (None: all, until reset with 0) without
        terminating anything, as a flaky API would."""
        with self._lock:
            self._ignored_terminations = times

    # ---- inspection ------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def calls(self, operation: str) -> list[RecordedRequest]:
        """Recorded requests whose root fields include ``operation`` (e.g. "podTerminate")."""
        return [r for r in self.requests if operation in r.fields]

    @property
    def pods_created(self) -> int:
        """How many pods were ever created (successful podFindAndDeployOnDemand)."""
        with self._lock:
            return len(self._pods)

    @property
    def all_pods(self) -> list[EmulatedPod]:
        """Every pod ever created, in creation order, terminated ones included."""
        with self._lock:
            return list(self._pods.values())

    def live_pods(self) -> list[EmulatedPod]:
        """Pods that exist (running or stopped): the ones that still bill."""
        return [p for p in self.all_pods if not p.terminated]

    def pod(self, pod_id: str) -> EmulatedPod:
        with self._lock:
            return self._pods[pod_id]

    # ---- HTTP entry ------------------------------------------------------------------------------

    def handle(self, method: str, path: str, authorization: str | None, body: bytes) -> tuple[int, str, bytes]:
        """Answer one HTTP request: (status, content type, body). Records it."""
        principal = self._principal(authorization)
        query: str | None = None
        op: Operation | None = None
        status, ctype, payload, fault = 400, "application/json", b"", None
        try:
            if method != "POST" or path != "/graphql":
                status, ctype, payload = 404, "text/plain", b"Not Found"
                return status, ctype, payload
            try:
                query = json.loads(body)["query"]
                if not isinstance(query, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                payload = _errors("Must provide query string.")
                return status, ctype, payload
            try:
                op = parse_operation(query)
            except GraphQLError as exc:
                op = None
                payload = _errors(str(exc))
                return status, ctype, payload
            rule = self._take_fault(op)
            if rule is not None and not rule.after:
                fault = rule.fault
                status, ctype, payload = _FAULT_RESPONSES[fault]
                return status, ctype, payload
            if principal is None or not self._allowed(principal, op):
                status, ctype, payload = 401, "text/plain", b"Unauthorized"
                return status, ctype, payload
            try:
                status, payload = self._execute(op)
            except Exception as exc:  # noqa: BLE001 (an emulator fault, e.g. sshd would not start: a 500)
                status, payload = 500, _errors(f"Internal server error: {type(exc).__name__}: {exc}")
            if rule is not None:
                fault = rule.fault
                status, ctype, payload = _FAULT_RESPONSES[fault]
            return status, ctype, payload
        finally:
            record = RecordedRequest(
                at=time.monotonic(), method=method, path=path, principal=principal, query=query,
                kind=op.kind if op else None, fields=tuple(f.name for f in op.fields) if op else (),
                args=dict(op.fields[0].args) if op else {}, status=status, fault=fault,
            )
            with self._lock:
                self._requests.append(record)

    def _principal(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        key = authorization[len("Bearer "):]
        if secrets.compare_digest(key, self.api_key):
            return "account"
        with self._lock:
            for pod in self._pods.values():
                if not pod.terminated and secrets.compare_digest(key, pod.pod_key):
                    return f"pod:{pod.id}"
        return None

    def _allowed(self, principal: str, op: Operation) -> bool:
        """The account key may do anything; a pod's key only reads or terminates that pod."""
        if principal == "account":
            return True
        own = principal.removeprefix("pod:")
        return all(
            f.name in ("pod", "podTerminate") and (f.args.get("input") or {}).get("podId") == own
            for f in op.fields
        )

    def _take_fault(self, op: Operation) -> _FaultRule | None:
        names = {f.name for f in op.fields}
        with self._lock:
            for rule in self._faults:
                if rule.operation is None or rule.operation in names:
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining <= 0:
                            self._faults.remove(rule)
                    return rule
        return None

    def _execute(self, op: Operation) -> tuple[int, bytes]:
        roots = self._mutation_root() if op.kind == "mutation" else self._query_root()
        type_name = "Mutation" if op.kind == "mutation" else "Query"
        try:
            data = _project(roots, op.fields, type_name)
        except GraphQLError as exc:
            return 400, _errors(str(exc))
        except _APIFailure as exc:
            return 200, json.dumps({"errors": [{"message": str(exc), "path": [exc.path]}], "data": None}).encode()
        except (ValueError, TypeError, KeyError) as exc:  # a literal of the wrong type, e.g. gpuCount: "two"
            return 400, _errors(f"Invalid value: {exc}")
        return 200, json.dumps({"data": data}).encode()

    # ---- resolvers -------------------------------------------------------------------------------

    def _query_root(self) -> dict[str, Any]:
        return {
            "gpuTypes": self._resolve_gpu_types,
            "myself": lambda args: self._myself(),
            "pod": self._resolve_pod,
        }

    def _mutation_root(self) -> dict[str, Any]:
        return {
            "podFindAndDeployOnDemand": self._create,
            "podStop": self._stop_pod,
            "podResume": self._resume_pod,
            "podTerminate": self._terminate,
        }

    def _resolve_gpu_types(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        wanted = (args.get("input") or {}).get("id")
        return [self._gpu_record(g) for g in self.gpu_types.values() if wanted is None or g.id == wanted]

    @staticmethod
    def _gpu_record(g: GpuType) -> dict[str, Any]:
        def lowest_price(args: dict[str, Any]) -> dict[str, Any]:
            count = int((args.get("input") or {}).get("gpuCount", 1))
            return {"minimumBidPrice": round(g.price_per_hr * 0.5 * count, 3),
                    "uninterruptablePrice": round(g.price_per_hr * count, 3)}

        return {
            "id": g.id, "displayName": g.display_name, "manufacturer": "Nvidia", "memoryInGb": g.memory_gb,
            "maxGpuCount": g.max_gpu_count, "cudaCores": 0, "secureCloud": True, "communityCloud": True,
            "securePrice": g.price_per_hr, "communityPrice": round(g.price_per_hr * 0.8, 3),
            "oneMonthPrice": None, "threeMonthPrice": None, "oneWeekPrice": None,
            "communitySpotPrice": round(g.price_per_hr * 0.4, 3), "secureSpotPrice": round(g.price_per_hr * 0.5, 3),
            "lowestPrice": lowest_price,
        }

    def _myself(self) -> dict[str, Any]:
        def pods(args: dict[str, Any]) -> list[dict[str, Any]]:
            return [self._read_pod(p) for p in self.live_pods()]

        return {"id": self.user_id, "pubKey": self.pub_key, "networkVolumes": self.network_volumes,
                "pods": pods}

    def _resolve_pod(self, args: dict[str, Any]) -> dict[str, Any] | None:
        pod_id = _required(args.get("input") or {}, "podId", "pod")
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None or pod.terminated:
            return None
        return self._read_pod(pod)

    def _read_pod(self, pod: EmulatedPod) -> dict[str, Any]:
        """The pod as a read shows it; every read counts as one poll towards its runtime appearing."""
        with self._lock:
            now = time.monotonic()
            if pod.desired_status == "RUNNING":
                pod.polls += 1
                if (pod.runtime_since is None and not pod.runtime_never
                        and pod.polls > pod.runtime_after_polls
                        and now - pod.started_at >= pod.runtime_after_s):
                    pod.runtime_since = now
                runtime = {"ports": self._ports(pod), "uptimeInSeconds": int(now - pod.runtime_since)} \
                    if pod.runtime_since is not None else None
            else:
                runtime = {"ports": pod.stale_ports, "uptimeInSeconds": 0} if pod.stale_ports else None
            return {
                "id": pod.id, "name": pod.name, "imageName": pod.image, "desiredStatus": pod.desired_status,
                "containerDiskInGb": pod.container_disk_gb, "volumeInGb": pod.volume_gb,
                "volumeMountPath": pod.volume_mount_path, "dockerArgs": pod.docker_args, "dockerId": None,
                "env": [f"{k}={v}" for k, v in pod.env.items()], "gpuCount": pod.gpu_count,
                "costPerHr": 0 if self.zero_cost else round(pod.gpu.price_per_hr * pod.gpu_count, 3),
                "lastStatusChange": "Rented by User" if pod.desired_status == "RUNNING" else "Exited by User",
                "machineId": pod.machine_id, "memoryInGb": 62, "vcpuCount": 16, "podType": "RESERVED",
                "port": None, "ports": pod.ports,
                "uptimeSeconds": int(now - pod.runtime_since) if runtime and pod.runtime_since else 0,
                "runtime": runtime,
                "machine": {"gpuDisplayName": pod.gpu.display_name, "podHostId": pod.pod_host_id},
            }

    def _ports(self, pod: EmulatedPod) -> list[dict[str, Any]]:
        """runtime.ports as RunPod lists them: http ports behind the proxy (private entries), and for
        22/tcp both the container-side private entry and the public mapping."""
        entries: list[dict[str, Any]] = []
        for spec in filter(None, pod.ports.split(",")):
            number, _, proto = spec.partition("/")
            private = int(number)
            if proto == "tcp" and private == 22:
                entries.append({"ip": "100.65.0.2", "isIpPublic": False, "privatePort": 22,
                                "publicPort": 22, "type": "tcp"})
                if pod.ssh_port is not None:
                    entries.append({"ip": pod.ssh_host or self.public_ip, "isIpPublic": True,
                                    "privatePort": 22, "publicPort": pod.ssh_port, "type": "tcp"})
            else:
                entries.append({"ip": "100.65.0.2", "isIpPublic": False, "privatePort": private,
                                "publicPort": 60000 + private % 5000, "type": proto or "tcp"})
        return entries

    def _create(self, args: dict[str, Any]) -> dict[str, Any]:
        spec = args.get("input") or {}
        name = _required(spec, "name", "podFindAndDeployOnDemand")
        image = _required(spec, "imageName", "podFindAndDeployOnDemand")
        gpu_id = _required(spec, "gpuTypeId", "podFindAndDeployOnDemand")
        gpu = self.gpu_types.get(gpu_id)
        count = int(spec.get("gpuCount", 1))
        volume_id = spec.get("networkVolumeId")
        data_center = spec.get("dataCenterId")
        if volume_id is not None:
            volume = next((v for v in self.network_volumes if v["id"] == volume_id), None)
            if volume is None:
                raise _APIFailure("Network volume not found.", "podFindAndDeployOnDemand")
            if data_center is not None and data_center != volume["dataCenterId"]:
                raise _APIFailure(CAPACITY_MESSAGE, "podFindAndDeployOnDemand")
            data_center = volume["dataCenterId"]
        with self._lock:
            if gpu is None or gpu_id in self._no_capacity or count > gpu.max_gpu_count:
                raise _APIFailure(CAPACITY_MESSAGE, "podFindAndDeployOnDemand")
            pod_id = _new_id(14)
            while pod_id in self._pods:
                pod_id = _new_id(14)
            directory = self.root / pod_id
            env = {str(e["key"]): str(e["value"]) for e in spec.get("env") or []}
            pod = EmulatedPod(
                id=pod_id, name=name, image=image, gpu=gpu, gpu_count=count,
                cloud_type=str(spec.get("cloudType", "ALL")), docker_args=str(spec.get("dockerArgs") or ""),
                ports=str(spec.get("ports") or ""), env=env,
                volume_mount_path=str(spec.get("volumeMountPath") or "/runpod-volume"),
                container_disk_gb=int(spec.get("containerDiskInGb") or 0), volume_gb=int(spec.get("volumeInGb") or 0),
                data_center_id=data_center, network_volume_id=volume_id,
                directory=directory, workspace=directory / "workspace",
                pod_key="rpa_pod_" + secrets.token_hex(16), machine_id=_new_id(12),
                pod_host_id=f"{pod_id}-{secrets.token_hex(4)}", created_at=time.monotonic(),
            )
            self._pods[pod_id] = pod
        pod.workspace.mkdir(parents=True, exist_ok=True)
        self._launch(pod)
        return {"id": pod.id, "imageName": pod.image, "env": [f"{k}={v}" for k, v in pod.env.items()],
                "machineId": pod.machine_id, "machine": {"podHostId": pod.pod_host_id}, "desiredStatus": "RUNNING"}

    def _stop_pod(self, args: dict[str, Any]) -> dict[str, Any]:
        pod = self._existing(_required(args.get("input") or {}, "podId", "podStop"), "podStop")
        with self._lock:
            pod.stale_ports = self._ports(pod) if pod.runtime_since is not None else None
            pod.desired_status = "EXITED"
            pod.runtime_since = None
        self._halt(pod)
        return {"id": pod.id, "desiredStatus": pod.desired_status}

    def _resume_pod(self, args: dict[str, Any]) -> dict[str, Any]:
        pod = self._existing(_required(args.get("input") or {}, "podId", "podResume"), "podResume")
        with self._lock:
            if pod.gpu.id in self._no_capacity:
                raise _APIFailure(RESUME_CAPACITY_MESSAGE, "podResume")
            if pod.desired_status == "RUNNING":
                raise _APIFailure("Pod is already running.", "podResume")
            pod.desired_status = "RUNNING"
            pod.stale_ports = None
        self._launch(pod)
        return {"id": pod.id, "desiredStatus": pod.desired_status, "imageName": pod.image,
                "env": [f"{k}={v}" for k, v in pod.env.items()], "machineId": pod.machine_id,
                "machine": {"podHostId": pod.pod_host_id}}

    def _terminate(self, args: dict[str, Any]) -> None:
        pod = self._existing(_required(args.get("input") or {}, "podId", "podTerminate"), "podTerminate")
        with self._lock:
            pod.terminate_requests += 1
            if self._ignored_terminations is None:
                return None
            if self._ignored_terminations > 0:
                self._ignored_terminations -= 1
                return None
            pod.terminated = True
            pod.desired_status = "TERMINATED"
        self._halt(pod)
        return None

    def _existing(self, pod_id: str, path: str) -> EmulatedPod:
        with self._lock:
            pod = self._pods.get(pod_id)
        if pod is None or pod.terminated:
            raise _APIFailure("Pod not found.", path)
        return pod

    # ---- the sandbox -----------------------------------------------------------------------------

    def _launch(self, pod: EmulatedPod) -> None:
        """Start the container stand-in: sshd on a loopback port, then the start command."""
        with self._lock:
            pod.started_at = time.monotonic()
            pod.polls = 0
            pod.runtime_since = None
            pod.runtime_after_polls = self.runtime_after_polls
            pod.runtime_after_s = self.runtime_after_s
            pod.runtime_never = self.runtime_never
        env = pod.pod_env(self.url, self.public_ip)
        if self.start_ssh is not None and "22/tcp" in pod.ports.split(","):
            handle = self.start_ssh(pod.id, pod.workspace, dict(env))
            host, port, stop = handle if isinstance(handle, tuple) else (handle.host, handle.port, handle.stop)
            pod.ssh, pod.ssh_host, pod.ssh_port, pod._ssh_stop = handle, host, int(port), stop
        elif "22/tcp" in pod.ports.split(","):
            pod.ssh_host, pod.ssh_port = "127.0.0.1", _refused_port()
        if pod.ssh_port is not None:
            env["RUNPOD_TCP_PORT_22"] = str(pod.ssh_port)
        if self.run_start_command and pod.docker_args.strip():
            bin_dir = pod.directory / "bin"
            bin_dir.mkdir(exist_ok=True)
            ctl = bin_dir / "runpodctl"
            ctl.write_text(_RUNPODCTL.format(python=sys.executable))
            ctl.chmod(0o755)
            env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
            env.setdefault("HOME", os.environ.get("HOME", "/root"))
            with pod.log_path.open("ab") as log:
                try:
                    pod.process = subprocess.Popen(
                        shlex.split(pod.docker_args), cwd=pod.workspace, env=env, stdout=log,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    )
                except OSError as exc:  # a bad start command: the container just dies
                    log.write(f"start command failed: {exc}\n".encode())

    def _halt(self, pod: EmulatedPod) -> None:
        """Kill the start command's process group (SIGTERM, then SIGKILL after the grace) and sshd."""
        process, stop = pod.process, pod._ssh_stop
        pod.process, pod._ssh_stop = None, None
        if process is not None:
            _kill_group(process, self.kill_grace_s)
        if stop is not None:
            stop()
        if pod.terminated:
            pod.ssh_port = None


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
        # the leader is gone; make sure nothing else of its group lingers
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    if process.poll() is None:
        process.wait()


class _APIFailure(Exception):
    """A resolver error RunPod reports with HTTP 200 and ``errors`` (capacity, unknown pod)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def _required(args: dict[str, Any], key: str, path: str) -> Any:
    if args.get(key) is None:
        raise GraphQLError(f'Field "{key}" of required type was not provided ({path}).')
    return args[key]


def _errors(message: str) -> bytes:
    return json.dumps({"errors": [{"message": message}]}).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._answer("GET")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emulator: RunPodEmulator = self.server.emulator  # type: ignore[attr-defined]
        status, ctype, payload = emulator.handle(method, self.path, self.headers.get("Authorization"), body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller died, e.g. a pod's switch killed by its own termination

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature from http.server)
        pass


def emulated_runpod(root: Path, monkeypatch: Any, **kwargs: Any) -> Iterator[RunPodEmulator]:
    """Generator for a pytest fixture: a started emulator with RUNPOD_API_BASE_URL pointing at it.

    In a conftest or test module::

        @pytest.fixture
        def runpod_emu(tmp_path, monkeypatch):
            yield from emulated_runpod(tmp_path / "runpod", monkeypatch, runtime_after_polls=1)
    """
    emulator = RunPodEmulator(root, **kwargs).start()
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.url)
    try:
        yield emulator
    finally:
        emulator.stop()
