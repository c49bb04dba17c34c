"""Where a pod may go: (GPU type, cloud, data centre) candidates read from RunPod's catalog.

A create places one GPU type in the given data centres and never falls back, so ralph loops over
candidates itself — in the user's order of preference (``gpu_types`` × ``cloud_types`` ×
``data_centers``), keeping only those the catalog says have room now and whose machines run a
recent enough CUDA. The catalog is not a reservation: a create may still find no capacity, and the
caller moves to the next candidate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ralph.handlers.runpod.api import CLOUDS, GpuOffer

ANY_CLOUD = "ALL"
CLOUDS_AND_ALL = (*CLOUDS, ANY_CLOUD)
_CUDA = re.compile(r"\d+\.\d+")


@dataclass(frozen=True)
class Candidate:
    gpu_id: str
    cloud: str
    data_center: str | None  # None: RunPod's scheduler chooses among all
    price_per_hr: float | None  # for the whole pod (gpu_count GPUs); None: not sold on this cloud
    availability: str  # the catalog's, in this data centre when one is named
    offer: GpuOffer
    cuda_ok: bool = True  # a host with CUDA >= min_cuda has room

    @property
    def available(self) -> bool:
        return self.price_per_hr is not None and self.availability != "NONE" and self.cuda_ok

    @property
    def label(self) -> str:
        return f"{self.gpu_id} / {self.cloud}" + (f" / {self.data_center}" if self.data_center else "")


@dataclass(frozen=True)
class Placement:
    candidates: list[Candidate]  # every (GPU, cloud, data centre) asked for that the catalog knows, in order
    unknown_gpus: list[str]  # not in the catalog at all: a typo or a retired type

    @property
    def available(self) -> list[Candidate]:
        """To try, in order."""
        return [c for c in self.candidates if c.available]

    @property
    def full(self) -> list[Candidate]:
        """Sold, but the catalog says NONE (or no CUDA recent enough) now."""
        return [c for c in self.candidates if c.price_per_hr is not None and not c.available]


def clouds(cloud_types: Sequence[str]) -> list[str]:
    """``ALL`` stands for both clouds, secure first; duplicates dropped, order kept."""
    out: list[str] = []
    for cloud in cloud_types:
        for one in (CLOUDS if cloud == ANY_CLOUD else (cloud,)):
            if one not in out:
                out.append(one)
    return out


def is_cuda_version(text: str) -> bool:
    return bool(_CUDA.fullmatch(text))


def cuda_at_least(version: str, floor: str) -> bool:
    """``12.11`` is above ``12.2``: versions compare as numbers, part by part."""
    return tuple(int(p) for p in version.split(".")) >= tuple(int(p) for p in floor.split("."))


def place(offers: Sequence[GpuOffer], *, gpu_types: Sequence[str], cloud_types: Sequence[str],
          data_centers: Sequence[str], gpu_count: int = 1, min_cuda: str | None = None) -> Placement:
    by_id = {o.id: o for o in offers}
    found: list[Candidate] = []
    for gpu in gpu_types:
        offer = by_id.get(gpu)
        if offer is None:
            continue
        cuda_ok = min_cuda is None or any(ok and cuda_at_least(v, min_cuda) for v, ok in offer.cuda_versions.items())
        for cloud in clouds(cloud_types):
            places: list[tuple[str | None, str]] = [(dc, offer.data_centers.get(dc, "NONE")) for dc in data_centers]
            places = places or [(None, offer.availability)]
            found += [Candidate(gpu, cloud, dc, offer.price_per_hr(cloud, gpu_count), level, offer, cuda_ok)
                      for dc, level in places]
    return Placement(found, [g for g in gpu_types if g not in by_id])
