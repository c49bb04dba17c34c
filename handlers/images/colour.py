"""Colour statistics of a generated image and their drift between two images.

Everything is measured in CIELAB (D65), where distances are roughly perceptual:
chroma C*ab = √(a² + b²) is colourfulness, the hue angle h = atan2(b, a) separates
pink (≈ 20°) from orange (≈ 70°) skin. The images are box-averaged 4× first so that
per-pixel colour noise (which raises chroma by itself) does not read as saturation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

DOWNSAMPLE = 4

# Plausible skin in CIELAB. Common skin-tone swatches from very light to dark, e.g.
# sRGB (255,219,172), (240,190,160), (224,172,140), (141,85,36), (110,70,50), read
# hue 52-78°, chroma 24-42, L* 34-89 through to_lab. The mask is wider, so that shading
# and strong casts (orange skin reads C ≈ 60) are still found, and excludes greys
# (C < 10). It cannot tell skin from beige walls or wood: those count as skin tone.
SKIN_HUE = (20.0, 85.0)
SKIN_CHROMA = (10.0, 65.0)
SKIN_LIGHTNESS = (25.0, 95.0)
MIN_SKIN_FRACTION = 0.005  # below 0.5 % of the image there is no face/body to judge
SAME_SCENE_CORRELATION = 0.9

# Drift thresholds, in units of the CIELAB just-noticeable difference ΔE*ab ≈ 2.3:
# - hue: at skin chroma ≈ 25 a 5° rotation moves every skin pixel by
#   2·C·sin(2.5°) ≈ 2.2 ΔE, one JND; skin is a memory colour judged more strictly than
#   others, so a uniform shift of one JND is where "orange/pink skin" starts.
# - chroma: ±15 % of C ≈ 25 is ±3.8 ΔE (≈ 1.6 JND): visible side by side as "more/less
#   saturated". The relative limit only counts when the absolute change exceeds one
#   JND, so that nearly grey images do not fail on invisible changes.
# - skin coverage halving means skin left the plausible range (e.g. went orange).
MAX_HUE_SHIFT = 5.0
MAX_CHROMA_CHANGE = 0.15
JND = 2.3
MIN_SKIN_KEPT = 0.5
# "Natural" for the new image alone: only gross casts, as generated skin varies widely.
# Below hue 25° skin turns pink-magenta, above 80° yellow-green; chroma above 45 is past
# the most saturated swatch above (42): the "orange skin" the task's negative prompt names.
NATURAL_HUE = (25.0, 80.0)
NATURAL_MAX_CHROMA = 45.0

ImageLike = Image.Image | np.ndarray
ColourVerdict = Literal["colours preserved", "colours drifted"]

_SRGB_TO_XYZ = np.array(
    [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]], dtype=np.float32
)
_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def _rgb(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"expected an HxWx3 colour image, got shape {arr.shape}")
    return arr[..., :3]


def _box_downsample(rgb: np.ndarray, f: int) -> np.ndarray:
    h, w = (rgb.shape[0] // f) * f, (rgb.shape[1] // f) * f
    if h == 0 or w == 0:
        return rgb
    return rgb[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in 0-255 → CIELAB (D65), float32 H×W×3."""
    c = np.clip(rgb / 255.0, 0.0, 1.0)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (linear @ _SRGB_TO_XYZ.T) / _D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)
    return lab.astype(np.float32)


@dataclass(frozen=True)
class ColourStats:
    """Colourfulness and skin tone of one image (skin_* None when no skin was found)."""

    mean_chroma: float
    skin_fraction: float
    skin_hue: float | None  # degrees, circular (chroma-weighted) mean over skin pixels
    skin_chroma: float | None
    skin_lightness: float | None


def _lab(image: ImageLike) -> np.ndarray:
    return to_lab(_box_downsample(_rgb(image), DOWNSAMPLE))


def _skin_mask(lab: np.ndarray) -> np.ndarray:
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a)) % 360
    return (
        (hue >= SKIN_HUE[0]) & (hue <= SKIN_HUE[1])
        & (chroma >= SKIN_CHROMA[0]) & (chroma <= SKIN_CHROMA[1])
        & (lightness >= SKIN_LIGHTNESS[0]) & (lightness <= SKIN_LIGHTNESS[1])
    )  # fmt: skip


def _stats(lab: np.ndarray, skin: np.ndarray) -> ColourStats:
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, b)
    fraction = float(skin.mean())
    if fraction < MIN_SKIN_FRACTION:
        return ColourStats(float(chroma.mean()), fraction, None, None, None)
    # Mean of (a, b) then its angle: a circular mean, immune to the 0/360° wrap.
    skin_hue = float(np.degrees(np.arctan2(b[skin].mean(), a[skin].mean())) % 360)
    return ColourStats(
        float(chroma.mean()), fraction, skin_hue, float(chroma[skin].mean()), float(lightness[skin].mean())
    )


def colour_stats(image: ImageLike) -> ColourStats:
    """Mean chroma of the whole image and the tone of its skin-coloured pixels."""
    lab = _lab(image)
    return _stats(lab, _skin_mask(lab))


def _same_scene(a: np.ndarray, b: np.ndarray) -> bool:
    """Same size and the lightness maps correlate (same prompt and seed)."""
    if a.shape != b.shape or a[..., 0].std() < 1e-3 or b[..., 0].std() < 1e-3:
        return a.shape == b.shape and bool(np.allclose(a[..., 0], b[..., 0], atol=1.0))
    return float(np.corrcoef(a[..., 0].ravel(), b[..., 0].ravel())[0, 1]) >= SAME_SCENE_CORRELATION


def _signed_hue_difference(new: float, prev: float) -> float:
    return (new - prev + 180.0) % 360.0 - 180.0


def _chroma_drifted(prev: float, new: float) -> bool:
    return abs(new - prev) > JND and abs(new / max(prev, 1e-6) - 1) > MAX_CHROMA_CHANGE


@dataclass(frozen=True)
class ColourDrift:
    """How the new image's colours moved from the previous one's."""

    verdict: ColourVerdict
    natural: bool | None  # skin of the new image in the natural range; None without skin
    chroma_ratio: float
    skin_hue_shift: float | None  # degrees, + towards yellow/orange, − towards pink/red
    skin_chroma_ratio: float | None
    prev: ColourStats
    new: ColourStats  # on the previous image's skin pixels when same_content
    same_content: bool
    explanation: str

    @property
    def ok(self) -> bool:
        """Colours preserved and not unnatural: the criterion "couleurs naturelles préservées"."""
        return self.verdict == "colours preserved" and self.natural is not False


def _natural(s: ColourStats) -> bool | None:
    if s.skin_hue is None or s.skin_chroma is None:
        return None
    return NATURAL_HUE[0] <= s.skin_hue <= NATURAL_HUE[1] and s.skin_chroma <= NATURAL_MAX_CHROMA


def colour_drift(prev: ImageLike, new: ImageLike, same_content: bool | None = None) -> ColourDrift:
    """Compare mean chroma and skin tone of two images.

    For the same scene (None: decided from the lightness correlation) the new image's
    skin is read on the previous image's skin pixels: a shift that pushes skin out of
    the mask (e.g. towards orange) is then measured instead of silently dropped.
    """
    lab_p, lab_n = _lab(prev), _lab(new)
    same = _same_scene(lab_p, lab_n) if same_content is None else same_content
    skin_p = _skin_mask(lab_p)
    p = _stats(lab_p, skin_p)
    n = _stats(lab_n, skin_p if same else _skin_mask(lab_n))
    n_own = _stats(lab_n, _skin_mask(lab_n)) if same else n
    problems: list[str] = []
    chroma_ratio = n.mean_chroma / max(p.mean_chroma, 1e-6)
    if _chroma_drifted(p.mean_chroma, n.mean_chroma):
        problems.append(f"mean chroma {p.mean_chroma:.1f} -> {n.mean_chroma:.1f}")
    hue_shift = skin_ratio = None
    if p.skin_hue is not None and n.skin_hue is not None:
        hue_shift = _signed_hue_difference(n.skin_hue, p.skin_hue)
        skin_ratio = n.skin_chroma / p.skin_chroma  # type: ignore[operator]
        if abs(hue_shift) > MAX_HUE_SHIFT:
            problems.append(f"skin hue {p.skin_hue:.1f}° -> {n.skin_hue:.1f}° ({hue_shift:+.1f}°)")
        if _chroma_drifted(p.skin_chroma, n.skin_chroma):  # type: ignore[arg-type]
            problems.append(f"skin chroma {p.skin_chroma:.1f} -> {n.skin_chroma:.1f}")
    if p.skin_fraction >= MIN_SKIN_FRACTION and n_own.skin_fraction < MIN_SKIN_KEPT * p.skin_fraction:
        problems.append(f"skin-toned area {p.skin_fraction:.1%} -> {n_own.skin_fraction:.1%}")
    natural = _natural(n)
    verdict: ColourVerdict = "colours drifted" if problems else "colours preserved"
    if problems:
        why = "colours drifted: " + "; ".join(problems)
    elif hue_shift is not None:
        why = (
            f"colours preserved: skin hue {hue_shift:+.1f}° (limit ±{MAX_HUE_SHIFT:.0f}°), "
            f"skin chroma x{skin_ratio:.2f}, mean chroma x{chroma_ratio:.2f}"
        )
    else:
        why = f"colours preserved: mean chroma x{chroma_ratio:.2f}; no skin tones to compare"
    if natural is False:
        why += f"; new skin looks unnatural (hue {n.skin_hue:.0f}°, chroma {n.skin_chroma:.0f})"
    return ColourDrift(verdict, natural, chroma_ratio, hue_shift, skin_ratio, p, n, same, why)
