"""Time the grain measure beside skimage's estimate_sigma on one 832×1216 RGB image.

Run: .venv/bin/python bench/grain.py   (needs the test extra: scikit-image, PyWavelets)
The measure (given the RGB image) and estimate_sigma on the luma of the same generated
grainy portrait-like image (float32 as the measure computes it, and float64, skimage's own
float type) take turns, run after run, so that a machine loaded by other work slows them
alike; each line is the median of the runs, with the value read. Then the pair comparison, the colour
check, the picture, and the low-pass choice (BLAS tiles vs PIL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import median
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from ralph.handlers.images.colour import colour_drift
from ralph.handlers.images.compare import render_comparison
from ralph.handlers.images.grain import _RADIUS, _lowpass_blocks, compare_grain, luma, measure_grain
from skimage.filters import gaussian
from skimage.restoration import estimate_sigma

RUNS = 15


def timed(fns: dict[str, Callable[[], Any]], runs: int = RUNS) -> dict[str, tuple[float, Any]]:
    """Median ms and last result of each function, the functions taking turns."""
    results = {name: fn() for name, fn in fns.items()}  # warm caches and imports
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t)
    return {name: (median(times[name]) * 1e3, results[name]) for name in fns}


def image(rng: np.random.Generator, grain: float) -> np.ndarray:
    h, w = 1216, 832
    y, x = np.mgrid[0:h, 0:w].astype(float)
    scene = np.stack([150 + 40 * x / w, 140 + 30 * y / h, 130 + 20 * x / w], axis=-1)
    face = ((x - w / 2) / 170) ** 2 + ((y - 480) / 230) ** 2 < 1
    scene[face] = (224, 172, 140)
    band = (y > 800) & (np.abs(x - w / 2) < 300)
    scene[band] += (40 * np.sin(x / 0.9))[band][:, None]
    g = gaussian(rng.normal(0, 1, (h, w)), 1.0)
    return np.clip(np.round(scene + (g * grain / g.std())[..., None]), 0, 255).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    before, after = image(rng, 5.0), image(rng, 3.0)
    lum = luma(before)
    lum64 = lum.astype(np.float64)

    t = timed({
        "measure": lambda: measure_grain(before),
        "luma32": lambda: estimate_sigma(lum),
        "luma64": lambda: estimate_sigma(lum64),
    }, runs=3 * RUNS)
    ms, m = t["measure"]
    print(f"measure_grain (RGB 832x1216)             {ms:7.1f} ms   index {m.index:.2f}, fine {m.fine_sigma:.2f}  "
          "(true grain sigma 5.00)")
    for key, what in (("luma32", "float32"), ("luma64", "float64")):
        ms, s = t[key]
        print(f"skimage estimate_sigma (luma, {what})   {ms:7.1f} ms   sigma {s:.2f}")
    t = timed({
        "rgb": lambda: estimate_sigma(before, channel_axis=-1, average_sigmas=True),
        "compare": lambda: compare_grain(before, after),
        "colour": lambda: colour_drift(before, after),
    })
    ms, s = t["rgb"]
    print(f"skimage estimate_sigma (RGB)             {ms:7.1f} ms   sigma {s:.2f}")
    ms, c = t["compare"]
    print(f"compare_grain (pair)                     {ms:7.1f} ms   {c.verdict}, ratio {c.ratio:.2f} (true 0.60)")
    print(f"colour_drift (pair)                      {t['colour'][0]:7.1f} ms")
    ms, _ = timed({"picture": lambda: render_comparison(before, after)}, runs=3)["picture"]
    print(f"render_comparison (pair, no PNG)         {ms:7.1f} ms")

    # Low-pass choice: float32 matrix products per block (BLAS) vs PIL GaussianBlur (8-bit only,
    # box approximation), both against an exact float64 Gaussian on the blocks' pixels.
    r, ny, nx = _RADIUS, (lum.shape[0] - 2 * _RADIUS) // 32, (lum.shape[1] - 2 * _RADIUS) // 32
    exact = gaussian(lum64, 2.0, truncate=6.0)[r : r + 32 * ny, r : r + 32 * nx]
    l8 = Image.fromarray(np.clip(np.round(lum), 0, 255).astype(np.uint8))
    t = timed({"blas": lambda: _lowpass_blocks(lum, ny, nx),
               "pil": lambda: l8.filter(ImageFilter.GaussianBlur(2))})
    ms, low = t["blas"]
    low_err = float(np.std(low.swapaxes(1, 2).reshape(exact.shape) - exact))
    print(f"low-pass float32 BLAS tiles              {ms:7.1f} ms   error sd {low_err:.4f} grey levels")
    ms, pil = t["pil"]
    pil_err = float(np.std(np.asarray(pil, np.float32)[r : r + 32 * ny, r : r + 32 * nx] - exact))
    print(f"low-pass PIL GaussianBlur (mode L)       {ms:7.1f} ms   error sd {pil_err:.4f} grey levels (vs clean-image "
          "noise ~0.2)")


if __name__ == "__main__":
    main()
