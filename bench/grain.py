"""Time the grain measure beside skimage's estimate_sigma on one 832×1216 RGB image.

Run: .venv/bin/python bench/grain.py   (needs the test extra: scikit-image, PyWavelets)
Prints the median of several runs for each, on the same generated grainy portrait-like
image, with the values they read, and the Gaussian low-pass choice (numpy vs PIL).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from statistics import median
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFilter
from ralph.handlers.images.colour import colour_drift
from ralph.handlers.images.compare import render_comparison
from ralph.handlers.images.grain import _RADIUS, _lowpass_valid, compare_grain, luma, measure_grain
from skimage.filters import gaussian
from skimage.restoration import estimate_sigma

RUNS = 9
T = TypeVar("T")


def timed(fn: Callable[[], T], runs: int = RUNS) -> tuple[float, T]:
    result = fn()  # warm caches and imports
    times: list[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return median(times) * 1e3, result


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

    ms, m = timed(lambda: measure_grain(before))
    print(f"measure_grain (RGB 832x1216)         {ms:7.1f} ms   index {m.index:.2f}, fine {m.fine_sigma:.2f}  (true "
          "grain sigma 5.00)")
    ms, s = timed(lambda: estimate_sigma(before, channel_axis=-1, average_sigmas=True))
    print(f"skimage estimate_sigma (RGB)        {ms:7.1f} ms   sigma {s:.2f}")
    ms, s = timed(lambda: estimate_sigma(lum))
    print(f"skimage estimate_sigma (luma only)  {ms:7.1f} ms   sigma {s:.2f}")
    ms, c = timed(lambda: compare_grain(before, after))
    print(f"compare_grain (pair)                {ms:7.1f} ms   {c.verdict}, ratio {c.ratio:.2f} (true 0.60)")
    ms, _ = timed(lambda: colour_drift(before, after))
    print(f"colour_drift (pair)                 {ms:7.1f} ms")
    ms, _ = timed(lambda: render_comparison(before, after), runs=3)
    print(f"render_comparison (pair, no PNG)    {ms:7.1f} ms")

    # Low-pass choice: numpy separable float vs PIL GaussianBlur (8-bit only, box approximation).
    r = _RADIUS
    exact = gaussian(lum.astype(np.float64), 2.0, truncate=6.0)[r:-r, r:-r]
    ms_np, low = timed(lambda: _lowpass_valid(lum))
    l8 = Image.fromarray(np.clip(np.round(lum), 0, 255).astype(np.uint8))
    ms_pil, pil = timed(lambda: l8.filter(ImageFilter.GaussianBlur(2)))
    pil_err = float(np.std(np.asarray(pil, np.float32)[r:-r, r:-r] - exact))
    print(f"low-pass numpy separable float32    {ms_np:7.1f} ms   error sd {float(np.std(low - exact)):.4f} grey "
          "levels")
    print(f"low-pass PIL GaussianBlur (mode L)  {ms_pil:7.1f} ms   error sd {pil_err:.4f} grey levels (vs clean-image "
          "noise ~0.2)")


if __name__ == "__main__":
    main()
