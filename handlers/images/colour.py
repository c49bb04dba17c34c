"""Colour statistics of a generated image and their drift between two images.

Everything is measured in CIELAB (D65), where distances are roughly perceptual:
chroma C*ab = √(a² + b²) is colourfulness, the hue angle h = atan2(b, a) separates
pink (≈ 20°) from orange (≈ 70°) skin. Whole-image figures are taken on the image
box-averaged 4× first, so that per-pixel colour noise (which raises chroma by itself)
does not read as saturation.

Skin is read only inside a face that faces.py found (the median colour of the cheeks,
nose and mouth), never from a colour range: an orange suit, a coffee cup or a cat is
skin-coloured too. Without a face there is no skin to judge, and "natural colours" goes
to a person with the drift numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from .faces import FaceBox, largest_face

DOWNSAMPLE = 4
SAME_SCENE_CORRELATION = 0.9
# Face pixels this dark or bright are eyes, brows, nostrils or highlights, not skin tone.
SKIN_LIGHTNESS = (20.0, 97.0)

# Drift thresholds, in units of the CIELAB just-noticeable difference ΔE*ab ≈ 2.3:
# - hue: at skin chroma ≈ 25 a 5° rotation moves every skin pixel by
#   2·C·sin(2.5°) ≈ 2.2 ΔE, one JND; skin is a memory colour judged more strictly than
#   others, so a uniform shift of one JND is where "orange/pink skin" starts.
# - chroma: ±15 % of C ≈ 25 is ±3.8 ΔE (≈ 1.6 JND): visible side by side as "more/less
#   saturated". The relative limit only counts when the absolute change exceeds one
#   JND, so that nearly grey images do not fail on invisible changes.
# - cast: the whole image's mean (a*, b*) moving by two JND is a visible colour cast.
MAX_HUE_SHIFT = 5.0
MAX_CHROMA_CHANGE = 0.15
JND = 2.3
MAX_CAST = 2 * JND
# "Natural" for the new face alone: only gross casts, as generated skin varies widely.
# Light to dark skin swatches, e.g. sRGB (255,219,172), (224,172,140), (141,85,36), read hue
# 52-78°, chroma 24-42; skimage's astronaut portrait reads hue 62°, chroma 19. Below hue 25°
# skin turns pink-magenta, above 80° yellow-green; chroma above 45 is the "orange skin" the
# example's negative prompt names, below 6 a grey face.
NATURAL_HUE = (25.0, 80.0)
NATURAL_CHROMA = (6.0, 45.0)

ImageLike = Image.Image | np.ndarray

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
    """The mean of each f×f block (OpenCV's area resampling is exactly that for a whole factor,
    and ten times faster than numpy's reduction over a strided view)."""
    import cv2

    h, w = (rgb.shape[0] // f) * f, (rgb.shape[1] // f) * f
    if h == 0 or w == 0:
        return rgb
    block = np.ascontiguousarray(rgb[:h, :w, :3], dtype=np.float32)
    return cv2.resize(block, (w // f, h // f), interpolation=cv2.INTER_AREA)


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
    """Colourfulness of an image and the tone of its face's skin (skin_* None without a face)."""

    mean_chroma: float
    mean_a: float
    mean_b: float
    face: FaceBox | None
    skin_hue: float | None  # degrees: angle of the median (a*, b*) of the face's skin
    skin_chroma: float | None
    skin_lightness: float | None

    @property
    def natural(self) -> bool | None:
        """Skin tone within the natural range; None without a face."""
        if self.skin_hue is None or self.skin_chroma is None:
            return None
        return (NATURAL_HUE[0] <= self.skin_hue <= NATURAL_HUE[1]
                and NATURAL_CHROMA[0] <= self.skin_chroma <= NATURAL_CHROMA[1])


def _lab(rgb: np.ndarray) -> np.ndarray:
    return to_lab(_box_downsample(rgb, DOWNSAMPLE))


def _stats(rgb: np.ndarray, lab: np.ndarray, face: FaceBox | None) -> ColourStats:
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    mean_a, mean_b = float(lab[..., 1].mean()), float(lab[..., 2].mean())
    if face is None:
        return ColourStats(float(chroma.mean()), mean_a, mean_b, None, None, None, None)
    crop = face.as_tuple()
    patch = to_lab(rgb[crop[1] : crop[3], crop[0] : crop[2]])
    mask = FaceBox(0, 0, face.width, face.height).skin(patch.shape)
    skin = patch[mask & (patch[..., 0] >= SKIN_LIGHTNESS[0]) & (patch[..., 0] <= SKIN_LIGHTNESS[1])]
    if skin.shape[0] == 0:
        return ColourStats(float(chroma.mean()), mean_a, mean_b, face, None, None, None)
    lightness, a, b = (float(v) for v in np.median(skin, axis=0))
    hue = float(np.degrees(np.arctan2(b, a)) % 360)
    return ColourStats(float(chroma.mean()), mean_a, mean_b, face, hue, float(np.hypot(a, b)), lightness)


def colour_stats(image: ImageLike, face: FaceBox | None | Literal["find"] = "find") -> ColourStats:
    """Mean chroma of the whole image and the skin tone of its largest face (found unless given)."""
    rgb = _rgb(image)
    box = largest_face(rgb.astype(np.uint8)) if face == "find" else face
    return _stats(rgb, _lab(rgb), box)


def _same_scene(a: np.ndarray, b: np.ndarray) -> bool:
    """Same size and the lightness maps correlate (same prompt and seed)."""
    if a.shape != b.shape or a[..., 0].std() < 1e-3 or b[..., 0].std() < 1e-3:
        return a.shape == b.shape and bool(np.allclose(a[..., 0], b[..., 0], atol=1.0))
    return float(np.corrcoef(a[..., 0].ravel(), b[..., 0].ravel())[0, 1]) >= SAME_SCENE_CORRELATION


def _signed_hue_difference(new: float, prev: float) -> float:
    return (new - prev + 180.0) % 360.0 - 180.0


def _chroma_drifted(prev: float, new: float) -> bool:
    return abs(new - prev) > JND and abs(new / max(prev, 1e-6) - 1) > MAX_CHROMA_CHANGE


ColourVerdict = Literal["colours preserved", "colours drifted", "different scenes"]


@dataclass(frozen=True)
class ColourDrift:
    """How the new image's colours moved from the previous one's."""

    verdict: ColourVerdict
    chroma_ratio: float
    cast: float  # ΔE*ab between the two images' mean (a*, b*)
    skin_hue_shift: float | None  # degrees, + towards yellow/orange, − towards pink/red
    skin_chroma_ratio: float | None
    prev: ColourStats
    new: ColourStats  # skin read on the previous image's face box when same_content
    same_content: bool
    explanation: str

    @property
    def natural(self) -> bool | None:
        return self.new.natural

    @property
    def face(self) -> FaceBox | None:
        """The face the skin was read on (the previous image's for the same scene)."""
        return self.new.face

    @property
    def verified(self) -> bool | None:
        """The criterion "couleurs naturelles préservées": False on a measured drift or unnatural
        skin, True only for the same scene with a face whose skin stayed natural, else None."""
        if self.verdict == "colours drifted" or self.natural is False:
            return False
        if self.verdict == "colours preserved" and self.natural is True:
            return True
        return None


def colour_drift(prev: ImageLike, new: ImageLike, same_content: bool | None = None) -> ColourDrift:
    """Compare mean chroma, colour cast and face skin tone of two images.

    For the same scene (None: decided from the lightness correlation) the new image's skin
    is read inside the previous image's face: a shift that makes the detector lose the face
    is then measured instead of silently dropped. Different scenes are not judged for drift.
    """
    rgb_p, rgb_n = _rgb(prev), _rgb(new)
    lab_p, lab_n = _lab(rgb_p), _lab(rgb_n)
    same = _same_scene(lab_p, lab_n) if same_content is None else same_content
    face_p = largest_face(rgb_p.astype(np.uint8))
    face_n = face_p if same and face_p is not None else largest_face(rgb_n.astype(np.uint8))
    if same and face_n is not None and face_p is None:
        face_p = face_n
    p, n = _stats(rgb_p, lab_p, face_p), _stats(rgb_n, lab_n, face_n)
    chroma_ratio = n.mean_chroma / max(p.mean_chroma, 1e-6)
    cast = float(np.hypot(n.mean_a - p.mean_a, n.mean_b - p.mean_b))
    numbers = [f"mean chroma {p.mean_chroma:.1f} -> {n.mean_chroma:.1f} (x{chroma_ratio:.2f})", f"cast {cast:.1f} ΔE"]
    problems: list[str] = []
    if _chroma_drifted(p.mean_chroma, n.mean_chroma):
        problems.append(numbers[0])
    if cast > MAX_CAST:
        problems.append(f"colour cast {cast:.1f} ΔE (limit {MAX_CAST:.1f})")
    hue_shift = skin_ratio = None
    if p.skin_hue is not None and n.skin_hue is not None:
        hue_shift = _signed_hue_difference(n.skin_hue, p.skin_hue)
        skin_ratio = n.skin_chroma / max(p.skin_chroma, 1e-6)  # type: ignore[operator, type-var]
        numbers.insert(0, f"face skin hue {p.skin_hue:.1f}° -> {n.skin_hue:.1f}° ({hue_shift:+.1f}°), "
                          f"chroma {p.skin_chroma:.1f} -> {n.skin_chroma:.1f}")
        if abs(hue_shift) > MAX_HUE_SHIFT:
            problems.append(f"face skin hue {p.skin_hue:.1f}° -> {n.skin_hue:.1f}° ({hue_shift:+.1f}°)")
        if _chroma_drifted(p.skin_chroma, n.skin_chroma):  # type: ignore[arg-type]
            problems.append(f"face skin chroma {p.skin_chroma:.1f} -> {n.skin_chroma:.1f}")
    verdict: ColourVerdict = "different scenes" if not same else "colours drifted" if problems else "colours preserved"
    if verdict == "colours drifted":
        why = "colours drifted: " + "; ".join(problems)
    elif verdict == "different scenes":
        why = "different scenes, drift not judged: " + "; ".join(numbers)
    else:
        why = "colours preserved: " + "; ".join(numbers)
    if n.natural is None:
        why += "; no face found, so no skin tone to judge: a person must look"
    else:
        tone = "natural" if n.natural else "UNNATURAL"
        why += f"; face skin {tone} (hue {n.skin_hue:.0f}°, chroma {n.skin_chroma:.0f})"
    return ColourDrift(verdict, chroma_ratio, cast, hue_shift, skin_ratio, p, n, same, why)
