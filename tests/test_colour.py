"""Colour statistics, faces and drift on real photographs (scikit-image's sample data) with known changes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from ralph.handlers.images.colour import MAX_HUE_SHIFT, colour_drift, colour_stats, to_lab
from ralph.handlers.images.faces import find_faces
from skimage import data
from skimage.color import rgb2lab


def portrait() -> np.ndarray:
    """A portrait photograph: Eileen Collins in her orange flight suit (the suit is skin-coloured)."""
    return data.astronaut()


def rotate_hue(img: np.ndarray, steps: int) -> np.ndarray:
    """Rotate HSV hue by steps/256 of a turn (positive: red → yellow)."""
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + steps) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def saturate(img: np.ndarray, factor: float) -> np.ndarray:
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).astype(float)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))


def noisy(img: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_lab_matches_skimage() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.float32)
    assert np.abs(to_lab(rgb) - rgb2lab(rgb / 255.0)).max() < 0.05


def test_the_face_is_found_and_skin_coloured_things_are_not_faces() -> None:
    faces = find_faces(portrait())
    assert len(faces) == 1
    box = faces[0]
    assert 150 < box.left < 220 and 40 < box.top < 110 and 70 < box.width < 130, box  # her face, not the suit
    for name in ("coffee", "chelsea", "rocket"):
        assert find_faces(getattr(data, name)()) == [], name
    assert find_faces(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)) == []


def test_an_untouched_portrait_has_natural_skin_read_on_the_face() -> None:
    s = colour_stats(portrait())
    assert s.face is not None and s.natural is True
    assert 50 < s.skin_hue < 75 and 10 < s.skin_chroma < 35, (s.skin_hue, s.skin_chroma)


def test_identical_and_noisy_copies_are_preserved_and_verified() -> None:
    img = portrait()
    for other in (img, noisy(img, 6)):
        d = colour_drift(img, other)
        assert d.verdict == "colours preserved" and d.verified is True, d.explanation
        assert d.same_content and abs(d.skin_hue_shift) < 1.5 and abs(d.chroma_ratio - 1) < 0.05
        assert "face skin natural" in d.explanation


@pytest.mark.parametrize("steps", [-12, 12])
def test_hue_shift_is_detected_with_its_direction(steps: int) -> None:
    img = portrait()
    d = colour_drift(img, rotate_hue(img, steps))
    assert d.verdict == "colours drifted" and d.verified is False, d.explanation
    assert np.sign(d.skin_hue_shift) == np.sign(steps)
    assert abs(d.skin_hue_shift) > MAX_HUE_SHIFT
    assert "face skin hue" in d.explanation


def test_oversaturation_and_washout_are_detected() -> None:
    img = portrait()
    for factor in (1.6, 0.5):
        d = colour_drift(img, saturate(img, factor))
        assert d.verdict == "colours drifted" and d.verified is False, (factor, d.explanation)
        assert "chroma" in d.explanation


def test_orange_skin_is_unnatural() -> None:
    img = portrait().astype(np.float32)
    box = find_faces(portrait())[0]
    mask = box.skin(img.shape)
    img[mask] = img[mask] * 0.3 + np.array([235, 120, 30]) * 0.7
    d = colour_drift(portrait(), np.clip(img, 0, 255).astype(np.uint8))
    assert d.natural is False and d.verified is False, d.explanation
    assert "UNNATURAL" in d.explanation


def test_a_landscape_without_a_face_is_left_for_review_with_its_numbers() -> None:
    land = data.rocket()
    d = colour_drift(noisy(land, 8), noisy(land, 3, seed=2))
    assert d.face is None and d.natural is None and d.verified is None, d.explanation
    assert d.verdict == "colours preserved" and "no face found" in d.explanation
    assert "mean chroma" in d.explanation and "cast" in d.explanation


def test_random_noise_has_no_skin_and_is_never_verified() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    d = colour_drift(a, a)
    assert d.verified is None and "no face found" in d.explanation


def test_different_scenes_are_not_judged_for_drift() -> None:
    d = colour_drift(portrait(), data.coffee())
    assert d.verdict == "different scenes" and not d.same_content and d.verified is None, d.explanation
