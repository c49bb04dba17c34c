"""ralph's one door to RunPod: the pinned runpod SDK (1.12.0) behind a small typed API.

Why an adapter: the SDK reads its key from a module global (never from RUNPOD_API_KEY), pastes values
into GraphQL text without escaping, and fails with five unrelated exception types (AuthenticationError,
QueryError, requests' JSONDecodeError, KeyError, ValueError). Here every call sets the caller's key for
its own duration, every pasted value is escaped as a GraphQL string, and every failure becomes one of
ralph's exceptions below, none of which ever carries the key. The SDK's pod API is due to move to REST
(runpod-python PR #584); only this module has to follow it.

The SDK builds its URL from RUNPOD_API_BASE_URL on every call, which is how tests point it at the
emulator in tests/far/runpod_emulator.py.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

# The SDK (and requests, aiohttp… behind it) is imported on first call, not with this module:
# `ralph check` and `ralph status` load handlers but never talk to RunPod.

SDK_VERSION = "1.12.0"  # the GraphQL text the emulator answers; checked by tests/test_runpod_api.py
VOLUME_MOUNT_PATH = "/workspace"  # the SDK's default is /runpod-volume
CLOUD_TYPES = ("ALL", "SECURE", "COMMUNITY")

# Lower-cased fragments of RunPod's messages. Capacity first: its text also says "try again".
_CAPACITY_HINTS = (
    "no longer any instances available",
    "not enough free gpus",
    "no instances available",
    "no gpus available",
)
_TRANSIENT_HINTS = (
    "too many requests",
    "rate limit",
    "something went wrong",
    "internal server error",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    "timed out",
    "timeout",
)
_POD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORTS = re.compile(r"\d{1,5}/(tcp|http|udp)(,\d{1,5}/(tcp|http|udp))*")

# The SDK's key is one module global; calls from several threads must not see each other's key.
_SDK_LOCK = threading.Lock()

T = TypeVar("T")


class APIError(Exception):
    """A RunPod API call failed in a way retrying will not fix (bad request, unknown GPU, pod not found)."""


class AuthError(APIError):
    """The key is missing, wrong, revoked, or not allowed this call."""


class CapacityError(APIError):
    """RunPod has no machine for this choice now: try the next GPU type / cloud / data centre."""


class TransientAPIError(APIError):
    """5xx, 429, a body that is not the API's JSON, a broken connection: retry the same call later."""


@dataclass(frozen=True)
class GpuType:
    id: str  # what create_pod's gpu_type_id takes, e.g. "NVIDIA GeForce RTX 4090"
    display_name: str
    memory_gb: int
    price_per_hr: float | None = None  # on-demand price for the asked GPU count; only from gpu_type()
    max_gpu_count: int | None = None


@dataclass(frozen=True)
class PortMapping:
    ip: str
    is_public: bool
    private_port: int
    public_port: int
    type: str  # "tcp" or "http"


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str = "root"


@dataclass(frozen=True)
class PodInfo:
    id: str
    name: str
    desired_status: str  # RUNNING, EXITED, ...
    gpu: str | None  # machine.gpuDisplayName
    gpu_count: int
    cost_per_hr: float  # may read 0 (runpod-python#438): do not trust a 0
    uptime_seconds: int
    image: str
    ports: tuple[PortMapping, ...]  # empty while runtime is null (image still pulling)
    ssh: SshEndpoint | None  # public 22/tcp mapping of a RUNNING pod; probe sshd before use

    @property
    def running(self) -> bool:
        return self.desired_status == "RUNNING"


def graphql_string(value: str) -> str:
    """Escape ``value`` for pasting between the double quotes the SDK writes around it."""
    out = []
    for c in str(value):
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


def script_start_command(script: str, shell: str = "bash") -> str:
    """A container start command that runs ``script`` verbatim: base64 keeps quotes, newlines and
    ``$`` away from both the GraphQL text and the container's argument splitting."""
    encoded = base64.b64encode(script.encode()).decode()
    return f"{shell} -c 'echo {encoded} | base64 -d | {shell}'"


def _pod_id(pod_id: str) -> str:
    if not isinstance(pod_id, str) or not _POD_ID.fullmatch(pod_id):
        raise ValueError(f"not a RunPod pod id: {pod_id!r}")
    return pod_id


def _parse_pod(raw: Mapping[str, Any]) -> PodInfo:
    runtime = raw.get("runtime") or {}
    ports = tuple(
        PortMapping(ip=str(p.get("ip") or ""), is_public=bool(p.get("isIpPublic")),
                    private_port=int(p.get("privatePort") or 0), public_port=int(p.get("publicPort") or 0),
                    type=str(p.get("type") or ""))
        for p in runtime.get("ports") or ()
    )
    status = str(raw.get("desiredStatus") or "")
    ssh = None
    if status == "RUNNING":  # stopped pods keep stale ports
        ssh = next((SshEndpoint(p.ip, p.public_port) for p in ports
                    if p.private_port == 22 and p.type == "tcp" and p.is_public and p.ip and p.public_port), None)
    machine = raw.get("machine") or {}
    return PodInfo(
        id=str(raw["id"]), name=str(raw.get("name") or ""), desired_status=status,
        gpu=machine.get("gpuDisplayName"), gpu_count=int(raw.get("gpuCount") or 0),
        cost_per_hr=float(raw.get("costPerHr") or 0.0), uptime_seconds=int(raw.get("uptimeSeconds") or 0),
        image=str(raw.get("imageName") or ""), ports=ports, ssh=ssh,
    )


def _sdk() -> Any:
    import runpod

    return runpod


class RunPodAPI:
    """RunPod's pod API for one key. ``RunPodAPI.from_env()`` reads RUNPOD_API_KEY."""

    def __init__(self, api_key: str) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise AuthError("no RunPod API key given (set RUNPOD_API_KEY)")
        self._key = api_key.strip()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RunPodAPI:
        return cls(environ.get("RUNPOD_API_KEY", ""))

    def __repr__(self) -> str:
        return "RunPodAPI(api_key=<hidden>)"

    # ---- calls ---------------------------------------------------------------------------------

    def gpu_types(self) -> list[GpuType]:
        raw = self._call("gpu_types", _sdk().get_gpus)
        return [GpuType(id=g["id"], display_name=g.get("displayName") or g["id"],
                        memory_gb=int(g.get("memoryInGb") or 0)) for g in raw]

    def gpu_type(self, gpu_type_id: str, gpu_count: int = 1) -> GpuType:
        """One GPU type with its on-demand price for ``gpu_count`` GPUs; APIError if unknown."""
        raw = self._call("gpu_type", _sdk().get_gpu, graphql_string(gpu_type_id), int(gpu_count))
        price = (raw.get("lowestPrice") or {}).get("uninterruptablePrice")
        return GpuType(id=raw["id"], display_name=raw.get("displayName") or raw["id"],
                       memory_gb=int(raw.get("memoryInGb") or 0),
                       price_per_hr=float(price) if price is not None else None,
                       max_gpu_count=raw.get("maxGpuCount"))

    def create_pod(
        self,
        *,
        name: str,
        image: str,
        gpu_type_id: str,
        gpu_count: int = 1,
        cloud_type: str = "ALL",
        data_center_id: str | None = None,
        network_volume_id: str | None = None,
        container_disk_gb: int = 20,
        volume_gb: int = 0,
        ports: str = "22/tcp",
        env: Mapping[str, str] | None = None,
        start_command: str = "",
        support_public_ip: bool = True,
    ) -> str:
        """Create an on-demand pod and return its id. Billing starts now: record the id at once.

        CapacityError: nothing free for this choice. An exception after the server created the pod
        (a lost response) leaves a pod without an id here: find it by name in list_pods().
        """
        if cloud_type not in CLOUD_TYPES:
            raise ValueError(f"cloud_type must be one of {CLOUD_TYPES}")
        if not _PORTS.fullmatch(ports):
            raise ValueError(f"ports must look like '22/tcp,8188/http', got {ports!r}")
        env = dict(env or {})
        for key in env:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"not an environment variable name: {key!r}")
        q = graphql_string
        raw = self._call(
            "create_pod", _sdk().create_pod,
            name=q(name), image_name=q(image), gpu_type_id=q(gpu_type_id), cloud_type=cloud_type,
            support_public_ip=bool(support_public_ip), start_ssh=True,
            data_center_id=q(data_center_id) if data_center_id is not None else None,
            gpu_count=int(gpu_count), volume_in_gb=int(volume_gb), container_disk_in_gb=int(container_disk_gb),
            docker_args=q(start_command), ports=ports, volume_mount_path=VOLUME_MOUNT_PATH,
            env={k: q(str(v)) for k, v in env.items()},
            network_volume_id=q(network_volume_id) if network_volume_id is not None else None,
        )
        try:
            return str(raw["id"])
        except (KeyError, TypeError):
            raise TransientAPIError("create_pod: the response carried no pod id") from None

    def get_pod(self, pod_id: str) -> PodInfo | None:
        """The pod, or None when RunPod says it does not exist (terminated)."""
        raw = self._call("get_pod", _sdk().get_pod, _pod_id(pod_id))
        return None if raw is None else self._parse("get_pod", raw)

    def list_pods(self) -> list[PodInfo]:
        """Every pod of the account, running or stopped (both bill)."""
        raw = self._call("list_pods", _sdk().get_pods)
        return [self._parse("list_pods", p) for p in raw or ()]

    def terminate_pod(self, pod_id: str) -> None:
        """Ask RunPod to delete the pod. Acknowledged is not done: confirm with get_pod() is None."""
        # Not runpod.terminate_pod: it discards the answer, so a garbled "success" would pass unseen.
        from runpod.api.graphql import run_graphql_query
        from runpod.api.mutations import pods as pod_mutations

        query = pod_mutations.generate_pod_terminate_mutation(_pod_id(pod_id))
        answer = self._call("terminate_pod", run_graphql_query, query)
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), dict):
            raise TransientAPIError("terminate_pod: RunPod's answer had no data")

    def stop_pod(self, pod_id: str) -> str:
        """Stop (not delete) the pod; its disk still bills. Returns the new desired status."""
        raw = self._call("stop_pod", _sdk().stop_pod, _pod_id(pod_id))
        return str((raw or {}).get("desiredStatus") or "")

    def resume_pod(self, pod_id: str, gpu_count: int = 1) -> str:
        """Start a stopped pod again; CapacityError when its host has no free GPU."""
        raw = self._call("resume_pod", _sdk().resume_pod, _pod_id(pod_id), int(gpu_count))
        return str((raw or {}).get("desiredStatus") or "")

    # ---- plumbing ------------------------------------------------------------------------------

    def _parse(self, what: str, raw: Any) -> PodInfo:
        try:
            return _parse_pod(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TransientAPIError(f"{what}: unexpected pod record ({type(exc).__name__})") from None

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call with this key and translate whatever it raises."""
        import requests
        from runpod import error as sdk_error

        runpod = _sdk()
        with _SDK_LOCK:
            previous = runpod.api_key
            runpod.api_key = self._key
            try:
                return fn(*args, **kwargs)
            except sdk_error.AuthenticationError as exc:
                failure: APIError = AuthError(f"{what}: RunPod rejected the API key ({exc.message})")
            except sdk_error.QueryError as exc:
                failure = self._classify(what, str(exc.message or ""))
            except requests.exceptions.JSONDecodeError:
                failure = TransientAPIError(f"{what}: RunPod answered with a body that is not JSON "
                                            "(gateway error, rate limit or maintenance page)")
            except requests.exceptions.RequestException as exc:
                failure = TransientAPIError(f"{what}: {type(exc).__name__} talking to RunPod")
            except (KeyError, TypeError):
                failure = TransientAPIError(f"{what}: RunPod's answer had no data")
            except ValueError as exc:  # the SDK's own checks, e.g. an unknown GPU type
                failure = APIError(f"{what}: {exc}")
            finally:
                runpod.api_key = previous
        # Raised outside the except blocks, so the SDK exception (whose query text may hold env
        # values) is neither the cause nor the context of ralph's exception.
        raise self._scrub(failure)

    @staticmethod
    def _classify(what: str, message: str) -> APIError:
        lowered = message.lower()
        if any(h in lowered for h in _CAPACITY_HINTS):
            return CapacityError(f"{what}: {message}")
        if any(h in lowered for h in _TRANSIENT_HINTS):
            return TransientAPIError(f"{what}: {message}")
        return APIError(f"{what}: {message}")

    def _scrub(self, failure: APIError) -> APIError:
        """Belt and braces: a server echoing the key must not put it into ralph's messages."""
        text = str(failure)
        if self._key in text:
            return type(failure)(text.replace(self._key, "<hidden>"))
        return failure
