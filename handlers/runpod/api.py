"""ralph's one door to RunPod: the REST API v2 (``https://api.runpod.io/v2``) over httpx.

Fixed verbs, as a cloud module should have: the GPU catalog (``gpu_offers``, ``data_centers``),
pods (``create_pod``, ``get_pod``, ``list_pods``, ``terminate_pod``) and network volumes
(``network_volumes``, ``create_network_volume``). Nothing else in ralph speaks HTTP to RunPod.

Every failure becomes one of the exceptions below, chosen once by a table from the HTTP status
(and, for a 400, whether RunPod says it has no capacity). Each message carries RunPod's
``detail``, its ``errors[]`` and the ``x-request-id`` of the answer — never the key. Rate limits
are honoured here: a 429 waits ``Retry-After`` and sends the same request again (a 429 was not
processed), and when the ``RateLimit`` header says a window is used up, the next call waits for
its reset instead of collecting a 429.

``RUNPOD_API_BASE_URL`` (default ``https://api.runpod.io``) is the one knob for the host; the key
comes only from ``RUNPOD_API_KEY``. The contract is RunPod's OpenAPI document, vendored in
``tests/far/runpod-openapi-v2.json``; the tests validate every request sent here against it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # httpx loads with the first call, not with the handlers (`ralph check` speaks no HTTP)
    import httpx

KEY_VARIABLE = "RUNPOD_API_KEY"
BASE_URL_VARIABLE = "RUNPOD_API_BASE_URL"
DEFAULT_BASE_URL = "https://api.runpod.io"
CLOUDS = ("SECURE", "COMMUNITY")
AVAILABILITY = ("NONE", "LOW", "MEDIUM", "HIGH")  # worst to best
VOLUME_TYPES = ("STANDARD", "HIGH_PERFORMANCE")

_CAPACITY_HINTS = ("no longer any instances available", "no instances available", "not enough free gpus",
                   "no gpus available", "capacity")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_RATE_WAIT_S = 120.0  # a longer Retry-After is reported, not slept through


# -- errors ------------------------------------------------------------------------------------


class APIError(Exception):
    """RunPod answered no to a call, in a way sending it again will not change."""

    def __init__(self, message: str, *, status: int | None = None, request_id: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id


class AuthError(APIError):
    """401: the key is missing, wrong or revoked."""


class NoAccess(APIError):
    """403: this key may not use that resource (a GPU pool, another's pod): skip it."""


class BalanceError(APIError):
    """402: the account's balance is too low to rent anything: stop."""


class CapacityError(APIError):
    """400 "no longer any instances available": nothing free for this choice now: try the next one."""


class BadRequest(APIError):
    """400/409/422: the request itself is wrong (a bug or an impossible combination): never retried."""


class NotFound(APIError):
    """404: no such pod or volume (a terminated pod reads so)."""


class TransientAPIError(APIError):
    """5xx, a broken connection, a body that is not the API's JSON: the same call may work later."""


class RateLimited(TransientAPIError):
    """429 for longer than ralph waits in one call."""

    def __init__(self, message: str, *, retry_after_s: float, status: int | None = 429, request_id: str = "") -> None:
        super().__init__(message, status=status, request_id=request_id)
        self.retry_after_s = retry_after_s


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest, 401: AuthError, 402: BalanceError, 403: NoAccess, 404: NotFound,
    409: BadRequest, 410: BadRequest, 422: BadRequest, 429: RateLimited,
}


def error_class(status: int, detail: str) -> type[APIError]:
    """The table: which of ralph's errors an HTTP status (and RunPod's detail) means."""
    if status == 400 and any(hint in detail.lower() for hint in _CAPACITY_HINTS):
        return CapacityError
    if status >= 500:
        return TransientAPIError
    return _BY_STATUS.get(status, APIError)


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuOffer:
    """One GPU type of the catalog, with its prices and what is free now (not a reservation)."""

    id: str  # what a create takes, e.g. "NVIDIA RTX A5000"
    name: str
    memory_gb: int
    prices: dict[str, float]  # per GPU-hour by cloud: {"SECURE": 0.27, "COMMUNITY": 0.16}
    availability: str  # NONE | LOW | MEDIUM | HIGH, over every data centre
    data_centers: dict[str, str]  # data centre id -> availability (only those that offer it)
    cuda_versions: dict[str, bool]  # "12.4" -> machines on that version have room now

    def price_per_hr(self, cloud: str, gpu_count: int = 1) -> float | None:
        price = self.prices.get(cloud)
        return None if price is None else price * gpu_count


@dataclass(frozen=True)
class DataCenter:
    id: str
    name: str
    volume_types: tuple[str, ...]


@dataclass(frozen=True)
class SshEndpoint:
    host: str
    port: int
    user: str = "root"


@dataclass(frozen=True)
class Pod:
    id: str
    name: str
    status: str  # PROVISIONING, STARTING, RUNNING, EXITED, ERROR, TERMINATED
    gpu_id: str | None
    gpu_count: int
    cost_per_hr: float  # what RunPod bills now; 0 when EXITED or TERMINATED
    cloud: str
    data_center: str | None
    image: str
    ssh: SshEndpoint | None  # direct SSH: only once RUNNING with a public 22/tcp port

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"


@dataclass(frozen=True)
class NetworkVolume:
    id: str
    name: str
    size_gb: int
    data_center: str
    type: str


@dataclass(frozen=True)
class PodSpec:
    """What ralph asks RunPod for: one GPU type, in the given data centres, never a fallback."""

    name: str
    image: str
    gpu_id: str
    gpu_count: int = 1
    cloud: str = "SECURE"
    data_centers: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    args: str = ""  # the container's start command
    container_disk_gb: int = 20
    ports: tuple[str, ...] = ("22/tcp",)  # v2 has no default: without 22/tcp there is no direct SSH
    volume_id: str | None = None  # a network volume, mounted at mount_path
    persistent_gb: int = 0  # else host-local storage at mount_path (0: none)
    mount_path: str = "/workspace"
    min_cuda: str | None = None

    def body(self) -> dict[str, Any]:
        if self.cloud not in CLOUDS:
            raise ValueError(f"cloud must be one of {', '.join(CLOUDS)}, not {self.cloud!r}")
        for name in self.env:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"not an environment variable name: {name!r}")
        gpu: dict[str, Any] = {"id": self.gpu_id, "count": int(self.gpu_count)}
        if self.min_cuda:
            gpu["minCudaVersion"] = self.min_cuda
        body: dict[str, Any] = {
            "name": self.name, "image": self.image, "gpu": gpu, "cloud": self.cloud,
            "ports": list(self.ports), "env": {k: str(v) for k, v in self.env.items()},
            "disk": int(self.container_disk_gb),
        }
        if self.args:
            body["args"] = self.args
        if self.data_centers:
            body["dataCenterIds"] = list(self.data_centers)
        if self.volume_id:
            body["mounts"] = {"network": [{"volumeId": self.volume_id, "path": self.mount_path}]}
        elif self.persistent_gb > 0:
            body["mounts"] = {"persistent": {"size": int(self.persistent_gb), "path": self.mount_path}}
        return body


# -- the client --------------------------------------------------------------------------------


class RunPodAPI:
    """RunPod's REST API v2 for one key. ``RunPodAPI.from_env()`` reads RUNPOD_API_KEY."""

    def __init__(self, api_key: str, base_url: str | None = None, *, timeout_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise AuthError(f"no RunPod API key given (set {KEY_VARIABLE})")
        self._key = api_key.strip()
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/") + "/v2"
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._not_before = 0.0  # time.monotonic() before which no request goes out (rate limit)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RunPodAPI:
        return cls(environ.get(KEY_VARIABLE, ""), environ.get(BASE_URL_VARIABLE) or None)

    def __repr__(self) -> str:
        return f"RunPodAPI({self.base_url}, api_key=<hidden>)"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> RunPodAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- catalog -----------------------------------------------------------------------------

    def gpu_offers(self, *, gpu_count: int = 1) -> list[GpuOffer]:
        """Every GPU type with its prices and availability for pods of ``gpu_count`` GPUs."""
        answer = self._json("GET", "/catalog/gpus", "gpu_offers",
                            params={"include": "AVAILABILITY", "product": "POD", "count": int(gpu_count)})
        try:
            return [_offer(g) for g in answer["gpus"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise TransientAPIError("gpu_offers: RunPod's catalog answer has an unexpected shape") from None

    def data_centers(self) -> list[DataCenter]:
        answer = self._json("GET", "/catalog/datacenters", "data_centers")
        try:
            return [DataCenter(str(d["id"]), str(d.get("name") or d["id"]), tuple(d.get("networkVolumeTypes") or ()))
                    for d in answer["dataCenters"]]
        except (KeyError, TypeError):
            raise TransientAPIError("data_centers: unexpected answer shape") from None

    # ---- pods --------------------------------------------------------------------------------

    def create_pod(self, spec: PodSpec) -> Pod:
        """Create the pod; billing starts now. A TransientAPIError may hide a pod that was made
        (a lost answer): look for it by its unique name before creating another."""
        return self._pod("create_pod", self._json("POST", "/pods", "create_pod", json=spec.body()))

    def get_pod(self, pod_id: str) -> Pod | None:
        """The pod, or None when it no longer exists (terminated pods read so)."""
        try:
            pod = self._pod("get_pod", self._json("GET", f"/pods/{_checked_id(pod_id)}", "get_pod"))
        except NotFound:
            return None
        return None if pod.status == "TERMINATED" else pod

    def list_pods(self) -> list[Pod]:
        """Every pod of the account (running or stopped: both bill), every page."""
        return [pod for pod in self._pages("/pods", "pods", "list_pods") if pod.status != "TERMINATED"]

    def terminate_pod(self, pod_id: str) -> None:
        """Ask RunPod to delete the pod (204). Acknowledged is not done: confirm with get_pod()."""
        self._json("DELETE", f"/pods/{_checked_id(pod_id)}", "terminate_pod")

    # ---- network volumes ---------------------------------------------------------------------

    def network_volumes(self) -> list[NetworkVolume]:
        answer = self._json("GET", "/network-volumes", "network_volumes")
        try:
            return [_volume(v) for v in answer["networkVolumes"]]
        except (KeyError, TypeError, ValueError):
            raise TransientAPIError("network_volumes: unexpected answer shape") from None

    def create_network_volume(self, *, name: str, size_gb: int, data_center: str,
                              type: str | None = None) -> NetworkVolume:
        body: dict[str, Any] = {"name": name, "size": int(size_gb), "dataCenter": data_center}
        if type:
            body["type"] = type
        try:
            return _volume(self._json("POST", "/network-volumes", "create_network_volume", json=body))
        except (KeyError, TypeError, ValueError):
            raise TransientAPIError("create_network_volume: unexpected answer shape") from None

    # ---- serverless endpoints ----------------------------------------------------------------

    def create_endpoint(self, body: Mapping[str, Any]) -> str:
        """Create a serverless endpoint (``CreateEndpointRequest``); its id. Workers bill only while they run."""
        answer = self._json("POST", "/serverless", "create_endpoint", json=dict(body))
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise TransientAPIError("create_endpoint: the answer has no endpoint id")
        return answer["id"]

    def endpoint_exists(self, endpoint_id: str) -> bool:
        try:
            self._json("GET", f"/serverless/{_checked_id(endpoint_id)}", "get_endpoint")
        except NotFound:
            return False
        return True

    def delete_endpoint(self, endpoint_id: str) -> None:
        """Delete the endpoint (204); one already gone is fine."""
        try:
            self._json("DELETE", f"/serverless/{_checked_id(endpoint_id)}", "delete_endpoint")
        except NotFound:
            pass

    # ---- plumbing ----------------------------------------------------------------------------

    def _pages(self, path: str, key: str, what: str) -> Iterator[Pod]:
        params: dict[str, Any] = {}
        for _ in range(1000):  # a server that never ends its pages must not hang ralph
            answer = self._json("GET", path, what, params=params)
            items = answer.get(key) if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise TransientAPIError(f"{what}: the answer has no {key!r} list")
            for raw in items:
                yield self._pod(what, raw)
            page = answer.get("pagination") or {}
            cursor = page.get("nextCursor") if isinstance(page, dict) else None
            if not (isinstance(page, dict) and page.get("hasNextPage") and cursor):
                return
            params = {"cursor": cursor}
        raise TransientAPIError(f"{what}: more than 1000 pages")

    def _pod(self, what: str, raw: Any) -> Pod:
        try:
            return _parse_pod(raw)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise TransientAPIError(f"{what}: RunPod's pod record has an unexpected shape") from None

    def _json(self, method: str, path: str, what: str, *, params: Mapping[str, Any] | None = None,
              json: Any = None) -> Any:
        """Send one request (again after a 429), return the decoded body (None for 204)."""
        import httpx

        deadline = time.monotonic() + MAX_RATE_WAIT_S
        while True:
            self._wait_for_quota()
            try:
                response = self._http().request(method, self.base_url + path, params=params, json=json)
            except httpx.HTTPError as exc:
                raise TransientAPIError(f"{what}: {type(exc).__name__} talking to RunPod ({self.base_url})") from None
            request_id = response.headers.get("x-request-id", "")
            self._note_quota(response.headers.get("RateLimit", ""))
            if response.status_code == 429:
                wait = _seconds(response.headers.get("Retry-After"), default=5.0)
                if time.monotonic() + wait <= deadline:
                    self._hold_off(wait)
                    continue
                raise RateLimited(self._message(what, response, request_id), retry_after_s=wait, request_id=request_id)
            if response.status_code >= 400:
                message = self._message(what, response, request_id)
                cls = error_class(response.status_code, message)
                raise cls(message, status=response.status_code, request_id=request_id)
            if response.status_code == 204 or not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise TransientAPIError(f"{what}: RunPod answered {response.status_code} with a body that is not "
                                        f"JSON (a gateway or maintenance page){_rid(request_id)}",
                                        status=response.status_code, request_id=request_id) from None

    def _http(self) -> httpx.Client:
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self._timeout_s, follow_redirects=False,
                    headers={"Authorization": f"Bearer {self._key}", "Accept": "application/json",
                             "User-Agent": "ralph"})
            return self._client

    def _message(self, what: str, response: httpx.Response, request_id: str) -> str:
        """``what: HTTP 400 Bad Request: <detail> (<errors>) [request <id>]`` — never the key."""
        detail, errors = "", []
        try:
            problem = response.json()
            if isinstance(problem, dict):
                detail = str(problem.get("detail") or problem.get("title") or "")
                errors = [str(e) for e in problem.get("errors") or () if e]
        except ValueError:
            detail = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        text = f"{what}: HTTP {response.status_code} {response.reason_phrase}"
        if detail:
            text += f": {detail}"
        if errors:
            text += f" ({'; '.join(errors)})"
        return (text + _rid(request_id)).replace(self._key, "<hidden>")

    # -- rate limits: RateLimit: "minute";r=0;t=12, "hour";r=2800;t=1812

    def _note_quota(self, header: str) -> None:
        for member in header.split(","):
            fields = dict(part.strip().split("=", 1) for part in member.split(";")[1:] if "=" in part)
            if fields.get("r", "").strip() == "0":
                self._hold_off(_seconds(fields.get("t"), default=1.0))

    def _hold_off(self, seconds: float) -> None:
        with self._lock:
            self._not_before = max(self._not_before, time.monotonic() + min(seconds, MAX_RATE_WAIT_S))

    def _wait_for_quota(self) -> None:
        with self._lock:
            wait = self._not_before - time.monotonic()
        if wait > 0:
            self._sleep(wait)


_catalogs: dict[tuple[str, int], list[GpuOffer]] = {}


def catalog(gpu_count: int = 1) -> list[GpuOffer]:
    """The catalog for the environment's key, read once per process and API host: ``ralph check``,
    the plan and its estimate share one read (a create reads it afresh). AuthError without a key."""
    with RunPodAPI.from_env() as api:
        key = (api.base_url, gpu_count)
        if key not in _catalogs:
            _catalogs[key] = api.gpu_offers(gpu_count=gpu_count)
        return _catalogs[key]


def _rid(request_id: str) -> str:
    return f" [request {request_id}]" if request_id else ""


def _seconds(value: str | None, *, default: float) -> float:
    try:
        return max(0.0, float(str(value).strip()))
    except (TypeError, ValueError):
        return default


def _checked_id(value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"not a RunPod id: {value!r}")
    return value


def _offer(raw: Mapping[str, Any]) -> GpuOffer:
    price = raw.get("price") or {}
    prices = {cloud: float(price[key]) for cloud, key in (("SECURE", "secure"), ("COMMUNITY", "community"))
              if price.get(key) is not None and raw.get(key, True)}
    return GpuOffer(
        id=str(raw["id"]), name=str(raw.get("name") or raw["id"]), memory_gb=int(raw.get("memory") or 0),
        prices=prices, availability=str(raw.get("availability") or "NONE"),
        data_centers={str(d["id"]): str(d.get("availability") or "NONE") for d in raw.get("dataCenters") or ()},
        cuda_versions={str(c["version"]): bool(c.get("available")) for c in raw.get("cudaVersions") or ()},
    )


def _volume(raw: Mapping[str, Any]) -> NetworkVolume:
    return NetworkVolume(id=str(raw["id"]), name=str(raw.get("name") or ""), size_gb=int(raw["size"]),
                         data_center=str(raw["dataCenter"]), type=str(raw.get("type") or ""))


def _parse_pod(raw: Mapping[str, Any]) -> Pod:
    status = str(raw["status"])
    direct = ((raw.get("ssh") or {}).get("direct")) if status == "RUNNING" else None
    ssh = None
    if isinstance(direct, dict) and direct.get("host") and direct.get("port"):
        ssh = SshEndpoint(str(direct["host"]), int(direct["port"]), str(direct.get("username") or "root"))
    gpu = raw.get("gpu") or {}
    return Pod(
        id=str(raw["id"]), name=str(raw.get("name") or ""), status=status,
        gpu_id=gpu.get("id"), gpu_count=int(gpu.get("count") or 0), cost_per_hr=float(raw.get("cost") or 0.0),
        cloud=str(raw.get("cloud") or ""), data_center=raw.get("dataCenterId"), image=str(raw.get("image") or ""),
        ssh=ssh,
    )
