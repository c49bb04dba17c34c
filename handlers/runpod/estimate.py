"""What a RunPod task will cost, told before paying: the candidates ``runpod.create`` will try, each
with its price and availability from RunPod's catalog, the rate the estimate uses, and the worst
case (the pod's whole ``max_lifetime_s`` at the dearest candidate's rate).

The catalog (``GET /v2/catalog/gpus?include=AVAILABILITY&product=POD``) is the one network call an
estimate makes; when it cannot be read the plan says so in a line and prices nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ralph import units
from ralph.context import EstimateContext
from ralph.handler import Estimate, Figure, Rental
from ralph.measures import POD_READY_SECONDS
from ralph.secrets import redact

if TYPE_CHECKING:
    from ralph.handlers.runpod.api import GpuOffer

DEFAULT_READY_S = 300.0  # create → `ssh true`, the image pull included
CLOUDS = ("SECURE", "COMMUNITY")  # what "ALL" stands for, in the order they are tried


@dataclass(frozen=True)
class Candidate:
    """One (GPU type, cloud) the create may land on, in the order it tries them."""

    gpu: str
    cloud: str
    offer: GpuOffer | None  # None: the catalog does not know this GPU type
    per_hour: float | None  # for the whole pod (gpu_count GPUs); None: not offered on this cloud
    availability: str  # NONE | LOW | MEDIUM | HIGH, in the asked data centres when there are some

    @property
    def available(self) -> bool:
        return self.per_hour is not None and self.availability not in ("NONE", "")


def candidates(params: Mapping[str, Any], offers: list[GpuOffer]) -> list[Candidate]:
    by_id = {offer.id: offer for offer in offers}
    clouds = [c for cloud in params.get("cloud_types") or ["ALL"]
              for c in (CLOUDS if str(cloud).upper() == "ALL" else (str(cloud).upper(),))]
    count = int(params.get("gpu_count") or 1)
    found = []
    for gpu in params.get("gpu_types") or []:
        offer = by_id.get(gpu)
        if offer is None:
            found.append(Candidate(gpu, "", None, None, "NONE"))
            continue
        for cloud in dict.fromkeys(clouds):
            price = offer.prices.get(cloud)
            found.append(Candidate(gpu, cloud, offer, price * count if price else None,
                                   _availability(offer, params.get("data_centers") or [])))
    return found


def _availability(offer: GpuOffer, data_centers: list[str]) -> str:
    """The catalog's availability, or the best of the asked data centres' (a create goes there only)."""
    if not data_centers:
        return offer.availability
    order = ["NONE", "LOW", "MEDIUM", "HIGH"]
    levels = [offer.data_centers.get(dc, "NONE") for dc in data_centers]
    return max(levels, key=lambda level: order.index(level) if level in order else 0)


def candidate_line(candidate: Candidate, data_centers: list[str]) -> str:
    if candidate.offer is None:
        return f"{candidate.gpu}: not in RunPod's catalog; the create will not find it"
    name = f"{candidate.offer.name} ({candidate.offer.memory_gb} GB), {candidate.cloud}"
    if candidate.per_hour is None:
        return f"{name}: not offered"
    if data_centers:
        where = ", ".join(f"{dc} {candidate.offer.data_centers.get(dc, 'NONE')}" for dc in data_centers)
        return f"{name}: ${candidate.per_hour:.3f}/h, availability {where}"
    return f"{name}: ${candidate.per_hour:.3f}/h, availability {candidate.availability}"


def rental(params: Mapping[str, Any], found: list[Candidate]) -> Rental:
    """The rate of the candidate the create will most likely get (the first with capacity now),
    and the dearest one's, which bounds the worst case."""
    prices = [(c, c.per_hour) for c in found if c.per_hour is not None]
    max_hours = float(params.get("max_lifetime_s") or 0) / 3600
    if not prices:
        return Rental(None, max_hours, None)
    likely = next(((c, p) for c, p in prices if c.available), None)
    why = "the first candidate with capacity now"
    if likely is None:
        likely, why = prices[0], "no candidate has capacity now: priced as the first"
    candidate, per_hour = likely
    basis = f"{candidate.offer.name if candidate.offer else candidate.gpu} on {candidate.cloud}, {why}"
    return Rental(Figure(per_hour, basis), max_hours, max(p for _, p in prices))


def _catalog(gpu_count: int) -> list[GpuOffer]:
    from ralph.handlers.runpod.api import RunPodAPI

    return RunPodAPI.from_env().gpu_offers(gpu_count=gpu_count)


def create_estimate(params: Mapping[str, Any], context: EstimateContext,
                    gpu_offers: Callable[[int], list[GpuOffer]] = _catalog) -> Estimate:
    """``runpod.create``'s estimate: ``CreatePod.estimate`` returns this."""
    count = int(params.get("gpu_count") or 1)
    gpus = params.get("gpu_types") or []
    clouds = ", ".join(params.get("cloud_types") or ["ALL"])
    disk = f"{params.get('container_disk_gb', 0)} GB disk"
    if params.get("network_volume_id"):
        disk += f", network volume {params['network_volume_id']}"
    elif params.get("volume_gb"):
        disk += f" + {params['volume_gb']} GB volume"
    lines = [f"creates a pod of {count} GPU(s): the first of {len(gpus)} GPU type(s) × {clouds} with capacity; "
             f"{params.get('image', '')}, {disk}",
             f"deletes itself after {units.duration(float(params.get('max_lifetime_s') or 0))} whatever happens "
             f"(max_lifetime_s), or {units.duration(float(params.get('heartbeat_timeout_s') or 0))} after ralph "
             "goes silent"]
    ready = _ready_time(context)
    try:
        offers = gpu_offers(count)
    except Exception as error:  # noqa: BLE001 (a preview must not fail: it says why it cannot price)
        lines.append(redact(f"prices could not be read from RunPod ({type(error).__name__}: {error}): cost unknown"))
        return Estimate(tuple(lines), machine_seconds=ready,
                        rental=Rental(None, float(params.get("max_lifetime_s") or 0) / 3600, None))
    found = candidates(params, offers)
    data_centers = list(params.get("data_centers") or [])
    lines += [candidate_line(c, data_centers) for c in found]
    return Estimate(tuple(lines), machine_seconds=ready, rental=rental(params, found))


def _ready_time(context: EstimateContext) -> Figure:
    measured = context.measures.get(POD_READY_SECONDS)
    if measured is not None:
        return Figure(measured.value, f"create to SSH, measured on {measured.at}: {measured.detail}")
    return Figure(DEFAULT_READY_S, "create to SSH, image pull included (default)")


def terminate_estimate() -> Estimate:
    """``runpod.terminate``'s estimate: ``TerminatePod.estimate`` returns this."""
    return Estimate(("deletes this file's pods and confirms through the API that none is left",))
