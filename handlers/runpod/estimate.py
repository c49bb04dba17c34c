"""What a RunPod task will cost, told before paying: the candidates ``runpod.create`` will try, each
with its price and availability from RunPod's catalog, the rate the estimate uses, and the worst
case (the pod's whole ``max_lifetime_s`` at the dearest candidate's rate).

The catalog (``GET /v2/catalog/gpus?include=AVAILABILITY&product=POD``) is the one network call an
estimate makes; when it cannot be read the plan says so in a line and prices nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ralph.handlers.runpod import placement
from ralph.handlers.runpod.api import GpuOffer, catalog
from ralph.handlers.runpod.placement import Candidate, Placement

from ralph import units
from ralph.context import EstimateContext
from ralph.handler import Estimate, Figure, Rental
from ralph.measures import POD_READY_SECONDS
from ralph.secrets import redact

DEFAULT_READY_S = 300.0  # create → `ssh true`, the image pull included
VOLUME_USD_PER_GB_MONTH = 0.07  # RunPod's list price for network volumes (first TB); the API gives none


def volume_line(volume: Any) -> str:
    """What the model cache costs: by the month, until its owner deletes it (ralph never does)."""
    if isinstance(volume, dict) and volume.get("size_gb"):
        size = int(volume["size_gb"])
        return (f"network volume {volume.get('name')}: {size} GB ≈ ${size * VOLUME_USD_PER_GB_MONTH:.2f} a month if "
                f"ralph creates it (about ${VOLUME_USD_PER_GB_MONTH}/GB-month, RunPod's list price), billed until "
                "you delete it")
    return (f"network volume {volume}: billed by the month at its size (about ${VOLUME_USD_PER_GB_MONTH}/GB-month) "
            "until you delete it")


def candidate_line(candidate: Candidate) -> str:
    name = f"{candidate.offer.name} ({candidate.offer.memory_gb} GB), {candidate.cloud}"
    if candidate.data_center:
        name += f" in {candidate.data_center}"
    if candidate.price_per_hr is None:
        return f"{name}: not offered"
    cuda = "" if candidate.cuda_ok else " (no host with CUDA >= min_cuda has room)"
    return f"{name}: ${candidate.price_per_hr:.3f}/h, availability {candidate.availability}{cuda}"


def rental(params: Mapping[str, Any], found: Placement) -> Rental:
    """The rate of the candidate the create will most likely get (the first with capacity now),
    and the dearest one's, which bounds the worst case."""
    priced = [c for c in found.candidates if c.price_per_hr is not None]
    max_hours = float(params.get("max_lifetime_s") or 0) / 3600
    if not priced:
        return Rental(None, max_hours, None)
    likely, why = next(((c, "the first candidate with capacity now") for c in priced if c.available),
                       (priced[0], "no candidate has capacity now: priced as the first"))
    assert likely.price_per_hr is not None
    return Rental(Figure(likely.price_per_hr, f"{likely.offer.name} on {likely.cloud}, {why}"), max_hours,
                  max(c.price_per_hr for c in priced if c.price_per_hr is not None))


def create_estimate(params: Mapping[str, Any], context: EstimateContext,
                    gpu_offers: Callable[[int], Sequence[GpuOffer]] = catalog) -> Estimate:
    """``runpod.create``'s estimate: ``CreatePod.estimate`` returns this."""
    count = int(params.get("gpu_count") or 1)
    gpus = params.get("gpu_types") or []
    clouds = ", ".join(params.get("cloud_types") or ["ALL"])
    disk = f"{params.get('container_disk_gb', 0)} GB disk"
    volume = params.get("volume")
    if volume:
        disk += f", network volume {volume['name'] if isinstance(volume, dict) else volume} at the workspace"
    elif params.get("volume_gb"):
        disk += f" + {params['volume_gb']} GB volume"
    lines = [f"creates a pod of {count} GPU(s): the first of {len(gpus)} GPU type(s) × {clouds} with capacity; "
             f"{params.get('image', '')}, {disk}",
             f"deletes itself after {units.duration(float(params.get('max_lifetime_s') or 0))} whatever happens "
             f"(max_lifetime_s), or {units.duration(float(params.get('heartbeat_timeout_s') or 0))} after ralph "
             "goes silent"]
    if volume:
        lines.append(volume_line(volume))
    ready = _ready_time(context)
    try:
        offers = gpu_offers(count)
    except Exception as error:  # noqa: BLE001 (a preview must not fail: it says why it cannot price)
        lines.append(redact(f"prices could not be read from RunPod ({type(error).__name__}: {error}): cost unknown"))
        return Estimate(tuple(lines), machine_seconds=ready,
                        rental=Rental(None, float(params.get("max_lifetime_s") or 0) / 3600, None))
    found = placement.place(offers, gpu_types=params.get("gpu_types") or [],
                            cloud_types=params.get("cloud_types") or [],
                            data_centers=params.get("data_centers") or [], gpu_count=count,
                            min_cuda=params.get("min_cuda") or None)
    lines += [candidate_line(c) for c in found.candidates]
    lines += [f"{gpu}: not in RunPod's catalog; the create will not find it" for gpu in found.unknown_gpus]
    return Estimate(tuple(lines), machine_seconds=ready, rental=rental(params, found))


def _ready_time(context: EstimateContext) -> Figure:
    measured = context.measures.get(POD_READY_SECONDS)
    if measured is not None:
        return Figure(measured.value, f"create to SSH, measured on {measured.at}: {measured.detail}")
    return Figure(DEFAULT_READY_S, "create to SSH, image pull included (default)")


def terminate_estimate() -> Estimate:
    """``runpod.terminate``'s estimate: ``TerminatePod.estimate`` returns this."""
    return Estimate(("deletes this file's pods and confirms through the API that none is left",))
