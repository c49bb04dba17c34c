"""Grain index and pair verdicts on generated images with noise of known strength.

The true luma σ of added noise is computed from the noise itself, so every expected
value comes from the construction of the image, not from a previous run.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from PIL import Image
from ralph.handlers.images.grain import _mad, block_stats, compare_grain, luma, measure_grain
from skimage.filters import gaussian
from skimage.restoration import estimate_sigma

H, W = 1216, 832  # the task's SDXL portrait size
LUMA = np.array([0.299, 0.587, 0.114])


def gradient(h: int = H, w: int = W) -> np.ndarray:
    """A smooth coloured ramp: mid-tones everywhere, no texture."""
    y, x = np.mgrid[0:h, 0:w].astype(float)
    return np.stack([60 + 100 * x / w, 50 + 120 * y / h, 90 + 60 * (x + y) / (h + w)], axis=-1)


def portrait(h: int = H, w: int = W) -> np.ndarray:
    """Portrait-like scene: graded background, a shaded skin-tone face, fine-stranded
    hair and a finely woven white dress (texture at 1-2 px, where blur bites)."""
    y, x = np.mgrid[0:h, 0:w].astype(float)
    cx, cy = w / 2, 0.4 * h
    img = np.stack([150 + 40 * x / w, 140 + 30 * y / h, 130 + 20 * x / w], axis=-1)
    face = ((x - cx) / (0.2 * w)) ** 2 + ((y - cy) / (0.19 * h)) ** 2 < 1
    mask = gaussian(face.astype(float), 6)[..., None]
    shade = (1 - 0.3 * ((x - cx) / (0.2 * w)) ** 2)[..., None]
    img = img * (1 - mask) + np.array([224, 172, 140]) * shade * mask
    hair = (((x - cx) / (0.28 * w)) ** 2 + ((y - 0.35 * h) / (0.25 * h)) ** 2 < 1) & ~face & (y < 0.58 * h)
    img[hair] = np.array([90, 60, 40]) + (40 * np.sin(x / 0.9 + 3 * np.sin(y / 17)))[hair][:, None]
    dress = (y > 0.66 * h) & (np.abs(x - cx) < 0.36 * w)
    img[dress] = np.array([215, 212, 205]) + (15 * np.sin(x / 0.8) * np.sin(y / 0.9))[dress][:, None]
    return img


def texture(rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """Strong structure at every place (foliage-like): no flat area anywhere."""
    y, x = np.mgrid[0:h, 0:w].astype(float)
    blobs = gaussian(rng.normal(0, 1, (h, w)), 3)
    t = 128 + 30 * blobs / blobs.std() + 25 * np.sin(x / 3.1 + y / 5.3)
    return np.stack([t, t, t], axis=-1)


def film_grain(rng: np.random.Generator, blur: float, sigma: float, h: int = H, w: int = W) -> np.ndarray:
    """Monochrome grain: white noise clumped by a Gaussian of `blur` px, scaled to σ."""
    g = gaussian(rng.normal(0, 1, (h, w)), blur)
    return (g * sigma / g.std())[..., None]


def q(img: np.ndarray) -> np.ndarray:
    """What a PNG stores: rounded, clipped 8-bit."""
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 5.0, 10.0])
def test_white_noise_index_is_the_true_luma_sigma(sigma: float) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    noise = rng.normal(0, sigma, (H, W, 3))  # independent per channel: luma σ ≈ 0.668 σ
    true = float((noise @ LUMA).std())
    m = measure_grain(gradient() + noise)
    assert m.index is not None and abs(m.index / true - 1) < 0.10, (m.index, true)
    assert m.flat_blocks == m.total_blocks  # a clean ramp is flat everywhere


@pytest.mark.parametrize("sigma", [2.0, 5.0])
def test_index_sees_noise_through_texture(sigma: float) -> None:
    """The portrait's hair and dress would inflate a global estimate; flat blocks don't."""
    rng = np.random.default_rng(7)
    noise = rng.normal(0, sigma, (H, W, 3))
    true = float((noise @ LUMA).std())
    m = measure_grain(portrait() + noise)
    assert m.index is not None and abs(m.index / true - 1) < 0.10, (m.index, true)
    assert m.flat_blocks < m.total_blocks  # the textured parts were left out


@pytest.mark.parametrize("sigma", [2.0, 5.0, 10.0])
def test_agrees_with_skimage_estimate_sigma_on_white_noise(sigma: float) -> None:
    rng = np.random.default_rng(3)
    img = q(gradient() + rng.normal(0, sigma, (H, W, 3)))
    reference = float(estimate_sigma(luma(img)))
    m = measure_grain(img)
    assert abs(m.index / reference - 1) < 0.10, (m.index, reference)
    assert abs(m.fine_sigma / reference - 1) < 0.10, (m.fine_sigma, reference)


@pytest.mark.parametrize("blur", [0.6, 1.0, 1.6])
def test_clumped_grain_ranks_above_weaker_pixel_noise(blur: float) -> None:
    """σ5 film grain is far grainier than σ2 pixel noise; fine-scale estimators invert that."""
    rng = np.random.default_rng(11)
    pixel = q(gradient() + rng.normal(0, 2.0, (H, W, 3)))  # luma σ ≈ 1.34
    grainy = q(gradient() + film_grain(rng, blur, 5.0))  # luma σ 5
    p, g = measure_grain(pixel), measure_grain(grainy)
    assert g.index > 1.5 * p.index, (g.index, p.index)
    assert g.index > 0.45 * 5.0  # sees at least ~half of the grain even at 1.6 px
    if blur >= 1.0:  # the premise: the fine-scale references miss it
        assert g.fine_sigma < p.fine_sigma
        assert estimate_sigma(luma(grainy)) < estimate_sigma(luma(pixel))


def test_pil_image_and_array_give_the_same_measure() -> None:
    rng = np.random.default_rng(5)
    img = q(portrait(608, 416) + rng.normal(0, 3, (608, 416, 3)))
    assert measure_grain(Image.fromarray(img)).index == pytest.approx(measure_grain(img).index, rel=1e-6)


def test_no_flat_area_is_not_measurable() -> None:
    rng = np.random.default_rng(2)
    for img in (texture(rng), np.full((H, W, 3), 250.0), np.full((H, W, 3), 5.0), np.full((40, 40, 3), 128.0)):
        m = measure_grain(img)
        assert m.index is None and not m.measurable
        assert m.explanation.startswith("not measurable")


@pytest.fixture(scope="module")
def grainy_prev() -> np.ndarray:
    return q(portrait() + film_grain(np.random.default_rng(100), 1.0, 5.0))


@pytest.mark.parametrize(
    ("strength", "verdict", "low", "high"),
    [
        (1.0, "not less grain", 0.95, 1.05),  # a fresh grain pattern of the same strength
        (0.9, "not less grain", 0.85, 0.95),
        (0.8, "less grain", 0.75, 0.85),
        (0.5, "less grain", 0.45, 0.55),
        (1.2, "not less grain", 1.14, 1.26),
        (0.0, "less grain", 0.0, 0.15),
    ],
)
def test_pair_ratio_follows_grain_strength(grainy_prev: np.ndarray, strength: float, verdict: str, low: float,
                                           high: float) -> None:
    new = q(portrait() + film_grain(np.random.default_rng(200), 1.0, 5.0 * strength))
    c = compare_grain(grainy_prev, new)
    assert c.same_content and c.correlation > 0.99
    assert c.verdict == verdict, c.explanation
    assert low <= c.ratio <= high, c.explanation
    assert c.reduced == (verdict == "less grain")
    assert c.detail_ratio is not None and c.detail_ratio > 0.9  # texture untouched


@pytest.mark.parametrize("blur", [0.7, 1.0])
def test_blur_is_refused_as_less_grain(grainy_prev: np.ndarray, blur: float) -> None:
    blurred = q(gaussian(grainy_prev.astype(float), (blur, blur, 0), preserve_range=True))
    c = compare_grain(grainy_prev, blurred)
    assert c.ratio < 0.85  # grain alone did go down...
    assert c.detail_ratio < 0.85  # ...but so did the hair and the weave
    assert c.verdict == "detail lost" and not c.reduced, c.explanation


def test_coarser_grain_is_refused_as_less_grain(grainy_prev: np.ndarray) -> None:
    """1 px grain → 2 px grain of the same σ: the band-pass part falls, the clumps grow."""
    coarser = q(portrait() + film_grain(np.random.default_rng(300), 2.0, 5.0))
    c = compare_grain(grainy_prev, coarser)
    assert c.ratio < 0.85 and c.coarse_ratio > 1.15
    assert c.verdict == "grain coarser" and not c.reduced, c.explanation


def test_different_content_uses_plain_indices_and_is_never_called_less_grain() -> None:
    """Across scenes detail cannot be compared, so even a clear fall leaves blur open: review."""
    rng = np.random.default_rng(9)
    prev = q(portrait() + rng.normal(0, 6, (H, W, 3)))
    scene = gradient()[::-1, ::-1]
    slightly = q(scene + rng.normal(0, 6 * 0.82, (H, W, 3)))  # -18 %: enough for same scene only
    clearly = q(scene + rng.normal(0, 6 * 0.6, (H, W, 3)))
    a, b = compare_grain(prev, slightly), compare_grain(prev, clearly)
    assert not a.same_content and a.correlation < 0.9
    assert a.ratio == pytest.approx(a.new.index / a.prev.index)
    assert 0.78 < a.ratio < 0.86 and a.verdict == "not less grain", a.explanation
    assert b.ratio < 0.65 and b.verdict == "blur not checked" and not b.reduced, b.explanation
    assert "cannot be ruled out" in b.explanation


def test_pair_without_flat_areas_is_not_measurable(grainy_prev: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    tex = q(texture(rng))
    for prev, new, same in ((tex, tex, None), (tex, grainy_prev, False), (grainy_prev, tex, False)):
        c = compare_grain(prev, new, same_content=same)
        assert c.verdict == "not measurable" and c.ratio is None, c.explanation


def test_not_measurable_says_how_many_flat_blocks_there_were(grainy_prev: np.ndarray) -> None:
    """A person reviewing "not measurable" sees why: the flat block count against the minimum."""
    tex = q(texture(np.random.default_rng(4)))
    for prev, new, same, which in ((tex, grainy_prev, False, "previous"), (grainy_prev, tex, False, "new"),
                                   (tex, tex, True, "previous")):
        c = compare_grain(prev, new, same_content=same)
        m = c.prev if which == "previous" else c.new
        assert c.verdict == "not measurable"
        assert f"the {which} image has too few flat" in c.explanation, c.explanation
        assert f"({m.flat_blocks} flat mid-tone blocks of {m.total_blocks}, need 8)" in c.explanation, c.explanation
    small = compare_grain(grainy_prev[:64, :64], grainy_prev[:64, :64])
    assert small.explanation.endswith("(1 flat mid-tone blocks of 1, need 8)"), small.explanation


def test_a_blurred_copy_without_texture_is_not_less_grain() -> None:
    """The issue's case: a smooth image blurred 2.5 px reads a grain ratio near 0.1 and has no
    texture to check for blur: never "less grain", always review with the numbers."""
    prev = q(gradient() + film_grain(np.random.default_rng(7), 1.0, 5.0))
    blurred = q(gaussian(prev.astype(float), (2.5, 2.5, 0), preserve_range=True))
    c = compare_grain(prev, blurred)
    assert c.ratio < 0.3 and c.detail_ratio is None
    assert c.verdict == "blur not checked" and not c.reduced, c.explanation
    assert "a person must look" in c.explanation


def photo_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real portrait photograph (skimage's astronaut) with film grain σ 8, the same with σ 3
    (grain really reduced) and the grainy one blurred by 2.5 px."""
    from skimage import data

    img = data.astronaut().astype(float)
    h, w = img.shape[:2]
    before = q(img + film_grain(np.random.default_rng(11), 0.8, 8.0, h, w))
    after = q(img + film_grain(np.random.default_rng(12), 0.8, 3.0, h, w))
    blurred = q(gaussian(before.astype(float), (2.5, 2.5, 0), preserve_range=True))
    return before, after, blurred


def test_on_a_real_photo_reduction_is_less_grain_and_blur_is_detail_lost() -> None:
    before, after, blurred = photo_pair()
    reduced = compare_grain(before, after)
    assert reduced.verdict == "less grain" and reduced.ratio < 0.6 and reduced.detail_ratio > 0.9, reduced.explanation
    smoothed = compare_grain(before, blurred)
    assert smoothed.verdict == "detail lost" and smoothed.detail_ratio < 0.5, smoothed.explanation


def reference_block_stats(image: np.ndarray) -> dict[str, np.ndarray]:
    """The per-block measurements by their definition, plainly, in float64: full-image
    Gaussian and Laplacian (scipy), np.median for the MAD, a least-squares plane. Until
    issue 13 ralph computed exactly this (in float32, with numpy slices); its fast path
    must not change what it measures."""
    from scipy.ndimage import correlate1d

    lum = luma(image).astype(np.float64)
    x = np.arange(-6, 7, dtype=np.float64)  # σ = 2 px, radius 3σ
    k = np.exp(-(x**2) / 8) / np.exp(-(x**2) / 8).sum()
    gain = np.sqrt(1 - 2 * k[6] ** 2 + np.sum(k**2) ** 2)
    low = correlate1d(correlate1d(lum, k, axis=0), k, axis=1)
    lap = correlate1d(correlate1d(lum, [1.0, -2.0, 1.0], axis=0), [1.0, -2.0, 1.0], axis=1)
    ny, nx = (lum.shape[0] - 12) // 32, (lum.shape[1] - 12) // 32

    def blocks(a: np.ndarray) -> np.ndarray:  # the blocks start 6 px in: where the low-pass is exact
        return a[6 : 6 + 32 * ny, 6 : 6 + 32 * nx].reshape(ny, 32, nx, 32).swapaxes(1, 2).reshape(ny * nx, -1)

    band, low_b = blocks(lum - low), blocks(low)
    mad = np.median(np.abs(band - np.median(band, axis=1, keepdims=True)), axis=1)
    y, x = np.mgrid[0:32, 0:32]
    design = np.stack([np.ones(1024), x.ravel(), y.ravel()], axis=1)
    plane = design @ np.linalg.lstsq(design, low_b.T, rcond=None)[0]
    mean = blocks(lum).mean(axis=1)
    sigma = 1.4826 * mad / gain
    coarse = np.sqrt(np.mean((low_b - plane.T) ** 2, axis=1))
    valid = (mean >= 16) & (mean <= 239)
    return {
        "mean": mean, "sigma": sigma, "energy": np.sqrt(np.mean(band**2, axis=1)), "coarse": coarse,
        "fine": np.sqrt(np.pi / 2) / 6 * blocks(np.abs(lap)).mean(axis=1),
        "valid": valid, "flat": valid & (coarse <= np.maximum(4.0, 1.5 * sigma)), "band_range": np.ptp(band, axis=1),
    }


def test_block_measurements_match_their_definition() -> None:
    """Every block's numbers, on clean, noisy, grainy, textured, partly dark and odd-sized
    images, within 2e-3 grey levels of the plain float64 definition; σ within 2e-3 or one
    step of the 16-bit sort that finds it, whichever is larger (1/65534 of the block's
    band-pass range, times the MAD factor 1.4826/0.970: 1e-4 σ for noise, up to 6e-3 for a
    block holding a sharp edge).
    Order statistics move at most as far as the values they order, so float32 rounding
    (~1e-5 grey levels at 255) moves them by less; the float32 implementation before issue
    13's speed-up read σ within 5e-5 and coarse within 6e-4 (a variance minus the slopes'
    share). 2e-3 is far below any grain that matters (the noise floor is 0.25)."""
    rng = np.random.default_rng(21)
    dark = portrait()
    dark[: H // 3] *= 0.05  # near-black blocks: not valid
    images = [
        q(gradient()), q(gradient() + rng.normal(0, 2.0, (H, W, 3))), q(portrait() + film_grain(rng, 1.0, 5.0)),
        q(texture(rng)), q(dark + rng.normal(0, 3.0, (H, W, 3))),
        q(portrait(301, 517) + rng.normal(0, 4, (301, 517, 3))),
    ]
    for image in images:
        stats = block_stats(image)
        ref = reference_block_stats(image)
        assert stats.shape[0] * stats.shape[1] == ref["mean"].size
        for name in ("mean", "energy", "coarse", "fine"):
            np.testing.assert_allclose(getattr(stats, name), ref[name], rtol=0, atol=2e-3, err_msg=name)
        step = 1.4826 / 0.970 * ref["band_range"] / 65534
        assert np.all(np.abs(stats.sigma - ref["sigma"]) <= np.maximum(2e-3, step)), "sigma"
        for name in ("valid", "flat"):
            np.testing.assert_array_equal(getattr(stats, name), ref[name], err_msg=name)
        m = measure_grain(image)
        if m.index is not None:
            flat = ref["flat"]
            bias = 1 + NormalDist().inv_cdf(0.10) * 1.1664 / 32
            assert m.index == pytest.approx(np.percentile(ref["sigma"][flat], 10) / bias, abs=2e-3)
            assert m.fine_sigma == pytest.approx(np.percentile(ref["fine"][flat], 10) / bias, abs=2e-3)


def test_mad_is_numpys_within_one_16_bit_step_on_skewed_tied_and_constant_rows() -> None:
    """The 16-bit sort and the bisection behind each block's σ, on rows unlike grain: skewed
    either way, heavy ties (few distinct values), constant, an outlier-dominated range, and
    a short row. Within one step (range/65534) of np.median's MAD, exact when values tie."""
    rng = np.random.default_rng(8)
    rows = [
        rng.normal(0, 3, (200, 1024)), rng.exponential(2, (200, 1024)), -rng.exponential(2, (200, 1024)),
        np.round(rng.normal(0, 1, (200, 1024))), rng.integers(0, 3, (200, 1024)).astype(float),
        np.full((3, 1024), 5.0), np.concatenate([np.zeros((20, 1000)), rng.normal(0, 100, (20, 24))], axis=1),
        rng.normal(0, 3, (50, 16)),
    ]
    for r in rows:
        r = r.astype(np.float32)
        expected = np.median(np.abs(r - np.median(r, axis=1, keepdims=True)), axis=1)
        step = np.maximum(np.ptp(r, axis=1), 1e-6) / 65534
        assert np.all(np.abs(_mad(r.copy()) - expected) <= step * 1.001), r.shape
