"""Grain measured without a reference image: a band-pass luma noise index in flat blocks.

Why band-pass and not the usual σ estimators: skimage's Donoho wavelet estimate and
Immerkær's Laplacian mask look at the finest pixel scale, so film-like grain (noise
clumped over 1-2 px) reads 3-10x too low and "grain got coarser" would pass as "less
grain" (see shared/notes/grain.md). Subtracting a σ=2 px Gaussian low-pass keeps
structure up to a few pixels wide, which is where visible grain lives (the spirit of
ISO 15739 "visual noise"). Measuring in the flattest 32 px blocks keeps texture out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

BLOCK = 32
LOWPASS_SIGMA = 2.0
# Blocks this dark or bright are clipped or crushed: their noise is not representative.
DARK, BRIGHT = 16.0, 239.0
INDEX_PERCENTILE = 10.0
# A block counts as flat when its coarse structure (the low-pass image minus a fitted
# plane) stays below FLAT_ABS grey levels or FLAT_REL times its own band-pass σ: the
# relative term keeps strong clumped grain (which leaks into the low-pass) measurable.
FLAT_ABS = 4.0
FLAT_REL = 1.5
MIN_FLAT_BLOCKS = 8
# Sub-quantisation floor (uint8 rounding of R, G and B leaves ~0.2 grey levels of luma
# noise): ratios between two cleaner-than-this images are meaningless.
NOISE_FLOOR = 0.25

# Pair verdict thresholds (shared/notes/grain.md, measured on synthetic pairs: -20 %
# grain reads 0.81, -10 % reads 0.89, a blur reads 0.47 with detail 0.26).
SAME_CONTENT_RATIO = 0.85
DIFFERENT_CONTENT_RATIO = 0.80
MIN_DETAIL_RATIO = 0.85
# Block-mean luma correlation above which two images are taken as the same scene
# (same prompt and seed, e.g. before/after a refiner pass).
SAME_CONTENT_CORRELATION = 0.90
COMPARE_FRACTION = 0.20
DETAIL_PERCENTILE = 90.0

# Grain whose fine part fell but whose coarse part (the low-pass structure of the same
# flat blocks) rose by more than this got coarser, not weaker: band-pass alone reads
# 1 px → 2 px grain of equal strength as a 40 % reduction.
MAX_COARSE_RATIO = 1.15
COARSE_FLOOR = 0.5

# "blur not checked": grain fell but detail could not be compared (too little texture in the
# previous image, or different scenes), so a blur cannot be told from grain removal: never ticked.
Verdict = Literal["less grain", "blur not checked", "not less grain", "grain coarser", "detail lost", "not measurable"]
ImageLike = Image.Image | np.ndarray


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).astype(np.float32)


_KERNEL = _gaussian_kernel(LOWPASS_SIGMA)
_RADIUS = len(_KERNEL) // 2


def _white_noise_gain(k: np.ndarray) -> float:
    """Std of (δ − g⊗g) applied to unit white noise, exact for the discrete kernel.

    Σ(δ − G)² = 1 − 2·G(0) + ΣG², with G = k⊗k separable; it is √(1 − 3/(4πs²))
    in the continuous limit (0.970 for s = 2).
    """
    centre = float(k[len(k) // 2]) ** 2
    energy = float(np.sum(k.astype(np.float64) ** 2)) ** 2
    return float(np.sqrt(1.0 - 2.0 * centre + energy))


_GAIN = _white_noise_gain(_KERNEL)
# The low percentile of per-block estimates sits below the true σ by z_p times the
# spread of one block's MAD estimate (asymptotic sd of MAD/0.6745 is 1.166σ/√n); this
# constant calibrates the index so that white noise reads its true σ.
_PERCENTILE_BIAS = 1.0 + NormalDist().inv_cdf(INDEX_PERCENTILE / 100) * 1.1664 / BLOCK
_MAD_TO_SIGMA = 1.4826
_IMMERKAER = float(np.sqrt(np.pi / 2) / 6)  # Immerkær 1996 mean-abs to σ factor


_BT601 = np.array([0.299, 0.587, 0.114], np.float32)


def luma(image: ImageLike) -> np.ndarray:
    """BT.601 luma as float32 in 0-255 (the weights of PIL's "L" conversion, unrounded).

    Accepts a PIL image, an H×W array or an H×W×3(4) array in 0-255 (uint8 or float).
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr.astype(np.float32, copy=False)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        out = np.empty(arr.shape[:2], np.float32)
        for top in range(0, len(arr), 128):  # in slices that stay in cache: a quarter faster
            np.matmul(arr[top : top + 128, :, :3].astype(np.float32), _BT601, out=out[top : top + 128])
        return out
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {arr.shape}")


def _tile_matrix(kernel: np.ndarray, width: int) -> np.ndarray:
    """(width + 2r) × width: column c holds the symmetric kernel at rows c … c + 2r, so that
    Tᵀ·W·T is the kernel's separable 2-D filter over a width × width tile whose window W
    extends r pixels beyond it on every side ('valid' convolution)."""
    m = np.zeros((width + len(kernel) - 1, width), np.float32)
    for c in range(width):
        m[c : c + len(kernel), c] = kernel
    return m


_LOWPASS = _tile_matrix(_KERNEL, BLOCK)
# Immerkær's mask [[1,-2,1],[-2,4,-2],[1,-2,1]] is outer([1,-2,1], [1,-2,1]). Its tiles are 8 px
# wide: at 32 px, 3 taps would leave the products multiplying mostly zeros.
_LAPLACE = _tile_matrix(np.array([1.0, -2.0, 1.0], np.float32), 8)


def _lowpass_blocks(lum: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """The low-pass of the ny × nx blocks starting _RADIUS px into lum, as (ny, nx, B, B).

    Two small matrix products per block on strided windows of lum: no padding, nothing
    computed outside the blocks, 3x faster than shifted numpy slices. Per block, not per
    strip of blocks: BLAS runs products this small on one thread, and its threads made the
    measure 2-3x slower whenever other work held a core. Not PIL: its
    GaussianBlur refuses float images, and rounding to 8 bits errs (σ ≈ 0.4) more than
    the noise of a clean image.
    """
    span = _LOWPASS.shape[0]
    windows = sliding_window_view(lum, (span, span))[::BLOCK, ::BLOCK][:ny, :nx]
    return _LOWPASS.T @ (windows @ _LOWPASS)  # this order packs the strided windows faster


def _fine_sums(lum: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """Sum of |Immerkær's mask| over each of the ny × nx blocks starting 1 px into lum,
    flat in row-major block order.

    A column pass over strips of 8 rows, then a row pass over strips of 8 columns, each a
    batch of matrix products small enough for BLAS to keep on one thread.
    """
    strip, span = _LAPLACE.shape[1], _LAPLACE.shape[0]
    height, width = ny * BLOCK, nx * BLOCK
    windows = sliding_window_view(lum[: height + span - 1, : width + span - 1], span, axis=0)[::strip]
    columns = np.matmul(_LAPLACE.T, windows.swapaxes(1, 2)).reshape(height, -1)
    windows = sliding_window_view(columns, span, axis=1)[:, ::strip].swapaxes(0, 1)
    mask = np.matmul(windows, _LAPLACE)  # (width / strip, height, strip)
    np.abs(mask, out=mask)
    sums = mask.reshape(nx, BLOCK // strip, ny, BLOCK, strip).sum(axis=(1, 3, 4))
    return sums.T.ravel()


def _block_means(a: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """Mean of each BLOCK × BLOCK block of a (ny·B, nx·B) array, flat in row-major order."""
    rows = a.reshape(ny, BLOCK, nx * BLOCK).sum(axis=1)  # summing whole image rows is the fast way
    return rows.reshape(ny, nx, BLOCK).sum(axis=2).ravel() / (BLOCK * BLOCK)


def _mad(rows: np.ndarray) -> np.ndarray:
    """Median absolute deviation from the median of each row (an even row length: both
    medians are means of two middle order statistics, as np.median's), to within 1/65534
    of the row's range (1e-4 σ for noise). Overwrites rows.

    Each row is scaled onto 16-bit integers: a monotonic rounding keeps the order and moves
    every order statistic by at most half a step, and numpy radix-sorts them twice as fast
    as floats. The k values nearest the median are k consecutive sorted values, so the k-th
    smallest deviation is the least, over runs of k, of the run's farther end; that end
    switches sides once along the runs, and a bisection finds where: no second sort.
    """
    low = rows.min(axis=1, keepdims=True)
    step = np.maximum(rows.max(axis=1, keepdims=True) - low, 1e-6) / 65534
    rows -= low - step / 2  # + half a step: the cast to integers then rounds to nearest
    rows /= step
    ranks = rows.astype(np.uint16)
    ranks.sort(axis=1, kind="stable")
    ranks = ranks.astype(np.int32)
    half = ranks.shape[1] // 2
    twice_median = ranks[:, half - 1] + ranks[:, half]
    twice = _twice_kth_deviation(ranks, twice_median, half) + _twice_kth_deviation(ranks, twice_median, half + 1)
    return (twice * (step[:, 0] / 4)).astype(np.float32)


def _twice_kth_deviation(ranks: np.ndarray, twice_median: np.ndarray, k: int) -> np.ndarray:
    """2 × the k-th smallest |value − median| of each sorted row, k = n/2 or n/2 + 1.

    Along runs i … i+k−1 the near end's distance median − s[i] falls and the far end's
    s[i+k−1] − median rises. The answer is the far end's distance at the first run where
    it is the larger (the last run is one: the median is in the middle), or the near end's
    at the run before, whichever is smaller.
    """
    rows = np.arange(ranks.shape[0])
    first, last = np.zeros(rows.size, np.intp), np.full(rows.size, ranks.shape[1] - k)
    while np.any(first < last):  # bisection; `last` is always a run whose far end is the larger
        mid = (first + last) // 2
        far = ranks[rows, mid] + ranks[rows, mid + k - 1] >= twice_median
        first, last = np.where(far, first, mid + 1), np.where(far, mid, last)
    far_end = 2 * ranks[rows, first + k - 1] - twice_median
    near_end = np.where(first > 0, twice_median - 2 * ranks[rows, first - 1], far_end)
    return np.minimum(far_end, near_end)


def _plane_axis() -> np.ndarray:
    """Centred pixel coordinates along a block, scaled so that x̂ (or ŷ) has unit norm over
    the block's pixels: orthogonal to each other and to the constant, so that a plane fit
    is two dot products."""
    centred = np.arange(BLOCK) - (BLOCK - 1) / 2
    return (centred / np.sqrt(BLOCK * np.sum(centred**2))).astype(np.float32)


_AXIS = _plane_axis()


def _plane_residual_rms(blocks: np.ndarray) -> np.ndarray:
    """RMS of each (B, B) block after removing its best-fitting plane. Overwrites blocks."""
    centred = np.subtract(blocks, blocks.mean(axis=(1, 2), keepdims=True), out=blocks)
    energy = np.einsum("nij,nij->n", centred, centred)
    slope_x = np.einsum("nij,j->n", centred, _AXIS)
    slope_y = np.einsum("nij,i->n", centred, _AXIS)
    return np.sqrt(np.maximum(energy - slope_x**2 - slope_y**2, 0.0) / (BLOCK * BLOCK))


@dataclass(frozen=True, eq=False)
class BlockStats:
    """Per-block measurements on a grid of BLOCK px blocks.

    Block (i, j) covers image rows origin + i·BLOCK … and columns origin + j·BLOCK …;
    arrays are flat in row-major block order, shape (rows·cols,).
    """

    shape: tuple[int, int]
    origin: int
    mean: np.ndarray  # block mean luma
    sigma: np.ndarray  # robust band-pass σ / white-noise gain (grey levels)
    energy: np.ndarray  # RMS of the band-pass (texture + noise), for detail
    coarse: np.ndarray  # low-pass structure after removing a plane
    fine: np.ndarray  # Immerkær fine-scale σ
    valid: np.ndarray  # brightness in range
    flat: np.ndarray  # valid and without coarse structure

    def box(self, block: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a block in image pixels."""
        i, j = divmod(int(block), self.shape[1])
        top, left = self.origin + i * BLOCK, self.origin + j * BLOCK
        return left, top, left + BLOCK, top + BLOCK


def block_stats(image: ImageLike) -> BlockStats:
    """Measure every full 32 px block inside the low-pass filter's valid region."""
    lum = np.ascontiguousarray(luma(image))
    r = _RADIUS
    ny, nx = (max(n - 2 * r, 0) // BLOCK for n in lum.shape)
    if ny == 0 or nx == 0:
        empty = np.zeros(0, np.float32)
        return BlockStats((ny, nx), r, empty, empty, empty, empty, empty, empty.astype(bool), empty.astype(bool))
    inner = lum[r : r + ny * BLOCK, r : r + nx * BLOCK]
    low = _lowpass_blocks(lum, ny, nx)
    in_blocks = inner.reshape(ny, BLOCK, nx, BLOCK).swapaxes(1, 2)
    band = np.subtract(in_blocks, low, out=np.empty_like(low)).reshape(ny * nx, -1)

    energy = np.sqrt(np.einsum("ij,ij->i", band, band) / band.shape[1])
    sigma = _MAD_TO_SIGMA * _mad(band) / _GAIN  # after energy: _mad overwrites band
    coarse = _plane_residual_rms(low.reshape(ny * nx, BLOCK, BLOCK))  # after band: overwrites low
    mean = _block_means(inner, ny, nx)
    fine = _IMMERKAER / (BLOCK * BLOCK) * _fine_sums(lum[r - 1 :, r - 1 :], ny, nx)

    valid = (mean >= DARK) & (mean <= BRIGHT)
    flat = valid & (coarse <= np.maximum(FLAT_ABS, FLAT_REL * sigma))
    return BlockStats((ny, nx), r, mean, sigma, energy, coarse, fine, valid, flat)


@dataclass(frozen=True, eq=False)
class GrainMeasure:
    """Grain of one image; index is None when the image has too few flat blocks."""

    index: float | None  # band-pass luma σ in grey levels (0-255) in the flattest blocks
    fine_sigma: float | None  # Immerkær fine-pixel σ in the same flat blocks, for reference
    flat_blocks: int
    total_blocks: int
    explanation: str
    blocks: BlockStats = field(repr=False)

    @property
    def measurable(self) -> bool:
        return self.index is not None


def _index(stats: BlockStats) -> tuple[float | None, float | None]:
    if int(stats.flat.sum()) < MIN_FLAT_BLOCKS:
        return None, None
    index = float(np.percentile(stats.sigma[stats.flat], INDEX_PERCENTILE)) / _PERCENTILE_BIAS
    fine = float(np.percentile(stats.fine[stats.flat], INDEX_PERCENTILE)) / _PERCENTILE_BIAS
    return index, fine


def measure_grain(image: ImageLike) -> GrainMeasure:
    """Grain index of one image (see the module docstring)."""
    stats = block_stats(image)
    index, fine = _index(stats)
    flat, total = int(stats.flat.sum()), int(stats.flat.size)
    if index is None:
        why = (
            f"not measurable: {flat} flat mid-tone blocks of {total} (need {MIN_FLAT_BLOCKS}); "
            "texture, clipping or a too small image leaves nowhere to see grain"
        )
    else:
        why = (
            f"grain index {index:.2f} grey levels (band-pass luma sigma, {INDEX_PERCENTILE:.0f}th percentile "
            f"of {flat} flat blocks of {total}); fine-scale sigma {fine:.2f}"
        )
    return GrainMeasure(index, fine, flat, total, why, stats)


# Texture energy (band-pass RMS above the grain) below which an image has no detail
# worth protecting: its ratio would be noise over noise.
DETAIL_FLOOR = 1.0


def _detail(measure: GrainMeasure) -> float:
    """Band-pass energy of the textured blocks with the image's own grain removed.

    The 90th percentile of block energy, minus the grain's share (index × gain)², so
    that removing grain does not read as losing detail while a blur, which flattens
    texture too, does.
    """
    stats = measure.blocks
    if not stats.valid.any():
        return 0.0
    energy2 = float(np.percentile(stats.energy[stats.valid] ** 2, DETAIL_PERCENTILE))
    grain2 = ((measure.index or 0.0) * _GAIN) ** 2
    return float(np.sqrt(max(energy2 - grain2, 0.0)))


def content_correlation(a: BlockStats, b: BlockStats) -> float | None:
    """Pearson correlation of the block-mean luma maps; None when the grids differ.

    Two uniform images (no variance to correlate) count as 1.0 when their block means
    agree within 2 grey levels, else 0.0.
    """
    if a.shape != b.shape or a.mean.size == 0:
        return None
    if a.mean.std() < 1e-6 or b.mean.std() < 1e-6:
        return 1.0 if float(np.max(np.abs(a.mean - b.mean))) < 2.0 else 0.0
    return float(np.corrcoef(a.mean, b.mean)[0, 1])


@dataclass(frozen=True, eq=False)
class GrainComparison:
    """Grain of a new image against the previous one."""

    verdict: Verdict
    ratio: float | None  # new/prev grain: median block ratio (same content) or index ratio
    coarse_ratio: float | None  # new/prev low-pass structure on the same blocks (same content)
    detail_ratio: float | None  # new/prev texture energy; None when prev has no texture
    same_content: bool
    correlation: float | None
    blocks_used: int
    prev: GrainMeasure
    new: GrainMeasure
    explanation: str
    block_ids: np.ndarray = field(repr=False)  # blocks compared (prev's flattest), flat indices

    @property
    def reduced(self) -> bool:
        return self.verdict == "less grain"


def _compared_blocks(prev: BlockStats, new: BlockStats) -> np.ndarray:
    """The flattest COMPARE_FRACTION of prev's flat blocks that are mid-tone in both.

    Ranked on both images' σ (their product), not prev's alone: blocks where prev's
    noise happened to read low would otherwise be picked and the ratio of two equally
    grainy images would read ~1.06 (regression to the mean).
    """
    flat = np.flatnonzero(prev.flat & new.valid)
    keep = max(int(np.ceil(COMPARE_FRACTION * flat.size)), min(flat.size, MIN_FLAT_BLOCKS))
    return flat[np.argsort(prev.sigma[flat] * new.sigma[flat], kind="stable")[:keep]]


def _flat_count(measure: GrainMeasure) -> str:
    """The block counts behind "not measurable", for the person who reviews it."""
    return f"{measure.flat_blocks} flat mid-tone blocks of {measure.total_blocks}, need {MIN_FLAT_BLOCKS}"


def compare_grain(prev: ImageLike, new: ImageLike, same_content: bool | None = None) -> GrainComparison:
    """Did grain go down from prev to new, without the image simply being blurred?

    same_content None decides from the block-mean correlation (≥ 0.90: same prompt and
    seed, e.g. a refiner pass). Same content: per-block ratios on the same blocks, the
    detail check guards against blur. Different content: only the plain indices can be
    compared, with a wider margin.
    """
    p, n = measure_grain(prev), measure_grain(new)
    corr = content_correlation(p.blocks, n.blocks)
    same = (corr is not None and corr >= SAME_CONTENT_CORRELATION) if same_content is None else same_content
    if same and p.blocks.shape != n.blocks.shape:
        raise ValueError("same_content=True needs images of the same size")
    none = np.zeros(0, np.int64)
    p_detail, n_detail = _detail(p), _detail(n)
    floor = max(DETAIL_FLOOR, 0.5 * (p.index or 0.0) * _GAIN)
    detail = n_detail / p_detail if p_detail >= floor else None

    def result(
        verdict: Verdict, ratio: float | None, ids: np.ndarray, why: str, coarse: float | None = None
    ) -> GrainComparison:
        return GrainComparison(verdict, ratio, coarse, detail, same, corr, int(ids.size), p, n, why, ids)

    detail_txt = "no texture to check for blur" if detail is None else f"detail {detail:.2f}"
    if not same:
        if not (p.measurable and n.measurable):
            which, m = ("previous", p) if not p.measurable else ("new", n)
            return result("not measurable", None, none, f"not measurable: the {which} image has too few flat areas "
                                                        f"({_flat_count(m)})")
        assert n.index is not None and p.index is not None  # both measurable
        ratio = max(n.index, NOISE_FLOOR) / max(p.index, NOISE_FLOOR)
        verdict: Verdict = "blur not checked" if ratio <= DIFFERENT_CONTENT_RATIO else "not less grain"
        return result(
            verdict,
            ratio,
            none,
            f"{verdict}: different content, grain index {p.index:.2f} -> {n.index:.2f} (ratio {ratio:.2f}, "
            f"needs <= {DIFFERENT_CONTENT_RATIO}); detail cannot be compared across scenes, so a blur "
            "cannot be ruled out: a person must look",
        )
    ids = _compared_blocks(p.blocks, n.blocks) if p.measurable else none
    if ids.size == 0:
        return result("not measurable", None, ids,
                      f"not measurable: the previous image has too few flat mid-tone areas ({_flat_count(p)})")
    ratios = np.maximum(n.blocks.sigma[ids], NOISE_FLOOR) / np.maximum(p.blocks.sigma[ids], NOISE_FLOOR)
    ratio = float(np.median(ratios))
    coarse = float(
        np.median(np.maximum(n.blocks.coarse[ids], COARSE_FLOOR) / np.maximum(p.blocks.coarse[ids], COARSE_FLOOR))
    )
    if ratio > SAME_CONTENT_RATIO:
        verdict = "not less grain"
    elif coarse > MAX_COARSE_RATIO:
        verdict = "grain coarser"
    elif detail is None:
        verdict = "blur not checked"
    elif detail < MIN_DETAIL_RATIO:
        verdict = "detail lost"
    else:
        verdict = "less grain"
    why = (
        f"{verdict}: grain ratio {ratio:.2f} on {ids.size} flat blocks (needs <= {SAME_CONTENT_RATIO}), "
        f"coarse {coarse:.2f} (needs <= {MAX_COARSE_RATIO}), {detail_txt} (needs >= {MIN_DETAIL_RATIO})"
    )
    if verdict == "detail lost":
        why += "; the image was smoothed, texture went down with the grain"
    elif verdict == "grain coarser":
        why += "; the fine grain became larger clumps rather than going away"
    elif verdict == "blur not checked":
        why += "; the previous image has too little texture to tell grain removal from a blur: a person must look"
    return result(verdict, ratio, ids, why, coarse)
