"""The measures of images.evaluate: each image's grain and colours against its reference, and
the ranking of a sweep — numpy's side of the handler, imported when it runs."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .colour import ColourDrift, ColourStats, colour_drift, colour_stats
from .grain import GrainComparison, GrainMeasure, compare_grain, measure_grain

# Verdicts from worst to best, for ranking (index = group; lower is better).
_GROUPS = {"less grain": 0, "blur not checked": 1, "not less grain": 2, "grain coarser": 3, "detail lost": 3,
           "not measurable": 4}


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@dataclass
class Assessed:
    """One image with its measures against the reference it was compared with."""

    record: dict[str, Any]  # the image's entry (path relative to the task folder, variant, params…)
    pixels: np.ndarray
    measure: GrainMeasure
    grain: GrainComparison | None  # against the previous image, else the sweep's first variant
    colour: ColourDrift | None
    stats: ColourStats
    against: str | None

    def key(self) -> tuple[int, int, float]:
        """Ranking: grain verdict first, then colours kept, then how far grain fell."""
        if self.grain is None:
            return (_GROUPS["not measurable"], 0, float(self.measure.index or np.inf))
        colour_bad = 1 if self.colour is not None and self.colour.verified is False else 0
        ratio = self.grain.ratio if self.grain.ratio is not None else np.inf
        return (_GROUPS[self.grain.verdict], colour_bad, float(ratio))

    def as_data(self) -> dict[str, Any]:
        g, c = self.grain, self.colour
        return {
            **{k: self.record.get(k) for k in ("path", "variant", "params", "seed")},
            "grain_index": rounded(self.measure.index),
            "fine_sigma": rounded(self.measure.fine_sigma),
            "flat_blocks": self.measure.flat_blocks,
            "against": self.against,
            "verdict": g.verdict if g else "no reference",
            "ratio": rounded(g.ratio) if g else None,
            "detail_ratio": rounded(g.detail_ratio) if g else None,
            "coarse_ratio": rounded(g.coarse_ratio) if g else None,
            "explanation": g.explanation if g else self.measure.explanation,
            "colour": colour_data(c, self.stats),
        }


def colour_data(drift: ColourDrift | None, stats: ColourStats) -> dict[str, Any]:
    data: dict[str, Any] = {
        "mean_chroma": rounded(stats.mean_chroma, 2),
        "face": stats.face.as_data() if stats.face else None,
        "skin_hue": rounded(stats.skin_hue, 2),
        "skin_chroma": rounded(stats.skin_chroma, 2),
        "natural": stats.natural,
    }
    if drift is not None:
        data.update(
            verdict=drift.verdict,
            verified=drift.verified,
            face=drift.face.as_data() if drift.face else None,
            natural=drift.natural,
            hue_shift=rounded(drift.skin_hue_shift, 2),
            chroma_ratio=rounded(drift.chroma_ratio),
            cast=rounded(drift.cast, 2),
            skin_chroma_ratio=rounded(drift.skin_chroma_ratio),
            explanation=drift.explanation,
        )
    return data


def assess(paths: list[Path], records: list[dict[str, Any]], prev: np.ndarray | None,
           previous: dict[str, Any] | None) -> list[Assessed]:
    """Each image (``paths``, in ``records``' order) measured against the previous image, else
    against the sweep's first variant. The images are read and measured side by side: decoding,
    numpy's array work and OpenCV's face search let other threads run."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        pixels = list(pool.map(rgb, paths))
        reference, against = prev, (previous["path"] if previous else None)
        if reference is None and len(records) > 1:  # no previous image: rank the sweep against its first variant
            reference, against = pixels[0], f"variant {records[0].get('variant')}"
        if reference is None:
            return [Assessed(record, image, measure_grain(image), None, None, colour_stats(image), None)
                    for record, image in zip(records, pixels, strict=True)]

        def against_reference(record: dict[str, Any], image: np.ndarray) -> Assessed:
            grain = compare_grain(reference, image)
            drift = colour_drift(reference, image)
            return Assessed(record, image, grain.new, grain, drift, colour_stats(image), against)

        return list(pool.map(against_reference, records, pixels))


def grain_data(best: Assessed, previous: dict[str, Any] | None, note: str, count: int, ranked: bool) -> dict[str, Any]:
    which = "best" if ranked else "none ranked on measures, first"
    sweep = f"{which} of {count} variants ({best.record.get('variant')}): " if count > 1 else ""
    if previous is None or best.grain is None:
        index = best.measure.index
        reading = f"grain index {index:.2f}" if index is not None else best.measure.explanation
        return {
            "verdict": "no previous image",
            "reduced": None,
            "new_index": rounded(index),
            "explanation": f"{sweep}{reading}; {note}; no calibrated absolute grain limit, so a person must judge",
        }
    g = best.grain
    return {
        "verdict": g.verdict,
        "reduced": g.reduced,
        "ratio": rounded(g.ratio),
        "detail_ratio": rounded(g.detail_ratio),
        "coarse_ratio": rounded(g.coarse_ratio),
        "previous_index": rounded(g.prev.index),
        "new_index": rounded(g.new.index),
        "same_content": g.same_content,
        "explanation": f"{sweep}{g.explanation} (previous: {previous['path']})",
    }
