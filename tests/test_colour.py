"""Colour statistics and drift on generated scenes with a known colour change."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from ralph.handlers.images.colour import MAX_HUE_SHIFT, colour_drift, colour_stats, to_lab
from skimage.color import rgb2lab

H, W = 608, 416


def scene(skin: tuple[int, int, int] = (224, 172, 140)) -> np.ndarray:
    """A grey room (chroma < 5, not skin-toned), a shaded face and arm in `skin`, a blue dress."""
    y, x = np.mgrid[0:H, 0:W].astype(float)
    img = np.stack([150 + 30 * x / W, 148 + 28 * x / W, 152 + 20 * y / H], axis=-1)
    face = ((x - W / 2) / 80) ** 2 + ((y - 200) / 110) ** 2 < 1
    arm = (np.abs(x - 0.75 * W) < 25) & (y > 300)
    shade = (1 - 0.25 * ((x - W / 2) / 90) ** 2)[..., None]
    img = np.where((face | arm)[..., None], np.array(skin) * shade, img)
    dress = (y > 340) & (np.abs(x - W / 2) < 110)
    img[dress] = (60, 80, 150)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def rotate_hue(img: np.ndarray, steps: int) -> np.ndarray:
    """Rotate HSV hue by steps/256 of a turn (positive: red → yellow)."""
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + steps) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def saturate(img: np.ndarray, factor: float) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).astype(float)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))


def test_lab_matches_skimage() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.float32)
    assert np.abs(to_lab(rgb) - rgb2lab(rgb / 255.0)).max() < 0.05


def test_skin_is_found_with_its_own_hue() -> None:
    img = scene()
    s = colour_stats(img)
    expected = to_lab(np.array([[[224.0, 172.0, 140.0]]], np.float32))[0, 0]
    assert s.skin_hue == pytest.approx(np.degrees(np.arctan2(expected[2], expected[1])), abs=1.5)
    face_and_arm = 0.06 < s.skin_fraction < 0.16  # ≈ 11 % of the frame by construction
    assert face_and_arm, s.skin_fraction


def test_identical_and_noisy_copies_are_preserved() -> None:
    img = scene()
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    for other in (img, noisy):
        d = colour_drift(img, other)
        assert d.verdict == "colours preserved" and d.ok, d.explanation
        assert d.same_content and abs(d.skin_hue_shift) < 1.0 and abs(d.chroma_ratio - 1) < 0.05
    assert colour_drift(img, img).natural is True


@pytest.mark.parametrize("steps", [-6, -4, 4, 6, 10])
def test_hue_shift_is_detected_with_its_direction(steps: int) -> None:
    img = scene()
    d = colour_drift(img, rotate_hue(img, steps))
    assert d.verdict == "colours drifted" and not d.ok, d.explanation
    assert np.sign(d.skin_hue_shift) == np.sign(steps)
    assert abs(d.skin_hue_shift) > MAX_HUE_SHIFT
    assert "skin hue" in d.explanation


def test_small_hue_change_below_one_jnd_is_preserved() -> None:
    img = scene()
    d = colour_drift(img, rotate_hue(img, 1))
    assert 0 < d.skin_hue_shift < MAX_HUE_SHIFT, d.explanation
    assert d.verdict == "colours preserved"


def test_oversaturation_and_washout_are_detected() -> None:
    img = scene()
    for factor in (1.35, 0.6):
        d = colour_drift(img, saturate(img, factor))
        assert d.verdict == "colours drifted", d.explanation
        assert (d.chroma_ratio > 1.15) if factor > 1 else (d.chroma_ratio < 0.85)


def test_orange_skin_is_unnatural() -> None:
    d = colour_drift(scene(), scene(skin=(235, 150, 70)))
    assert d.natural is False and not d.ok, d.explanation
    assert d.skin_hue_shift > MAX_HUE_SHIFT


def test_grey_scene_without_skin() -> None:
    grey = np.full((H, W, 3), 128, np.uint8)
    d = colour_drift(grey, grey)
    assert d.prev.skin_hue is None and d.natural is None
    assert d.verdict == "colours preserved" and d.ok and "no skin" in d.explanation


def test_different_scenes_use_their_own_skin() -> None:
    a = scene()
    b = np.ascontiguousarray(scene()[::-1, ::-1])  # same colours, elsewhere in the frame
    d = colour_drift(a, b)
    assert not d.same_content
    assert d.verdict == "colours preserved" and abs(d.skin_hue_shift) < 1.0, d.explanation
    # Forcing "same scene" reads b on a's skin pixels, which hold b's wall: a real drift.
    assert colour_drift(a, b, same_content=True).verdict == "colours drifted"
