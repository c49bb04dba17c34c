"""The before/after picture: each region holds what it claims, checked on its pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ralph.handlers.images.compare import (
    GAP,
    PANEL,
    UNMEASURED,
    ZOOM,
    colour_map,
    render_comparison,
    save_comparison,
)
from skimage.filters import gaussian

from tests.test_grain import film_grain, portrait, q

H, W = 608, 416
GREEN, RED = (120, 220, 120), (240, 120, 100)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scene = portrait(H, W)
    return q(scene + film_grain(rng, 1.0, 6.0, H, W)), q(scene + film_grain(rng, 1.0, 2.0, H, W))


@pytest.fixture(scope="module")
def picture(pair: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    before, after = pair
    path = tmp_path_factory.mktemp("cmp") / "sub" / "before_after.png"
    pic = save_comparison(before, after, path)
    return pic, np.asarray(Image.open(path).convert("RGB"))


def region(pixels: np.ndarray, box) -> np.ndarray:
    return pixels[box.top : box.bottom, box.left : box.right]


def test_png_has_the_layout_it_reports(picture) -> None:
    pic, pixels = picture
    panel_h = round(PANEL * H / W)
    assert pixels.shape[1] == 2 * PANEL + 3 * GAP
    assert pixels.shape[:2] == (pic.image.height, pic.image.width)
    for name in ("before", "after", "heat_before", "heat_after"):
        assert pic.regions[name].size == (PANEL, panel_h)
    for name in ("zoom_before", "zoom_after"):
        assert pic.regions[name].size == (pic.crop.size[0] * ZOOM, pic.crop.size[1] * ZOOM)
        assert PANEL - 32 < pic.regions[name].size[0] <= PANEL
    assert pic.regions["before"].right < pic.regions["after"].left  # side by side, before on the left
    assert pic.regions["before"].bottom < pic.regions["zoom_before"].top < pic.regions["heat_before"].top
    assert all(0 <= b.left < b.right <= pixels.shape[1] and 0 <= b.top < b.bottom <= pixels.shape[0]
               for b in pic.regions.values())


def test_panels_show_the_right_images(picture, pair) -> None:
    pic, pixels = picture
    panel_h = round(PANEL * H / W)
    for name, img, other in (("before", pair[0], pair[1]), ("after", pair[1], pair[0])):
        shown = region(pixels, pic.regions[name]).astype(int)
        expected = np.asarray(Image.fromarray(img).resize((PANEL, panel_h), Image.Resampling.LANCZOS)).astype(int)
        wrong = np.asarray(Image.fromarray(other).resize((PANEL, panel_h), Image.Resampling.LANCZOS)).astype(int)
        same = np.all(shown == expected, axis=2).mean()
        assert same > 0.97  # all but the crop outline
        assert np.all(shown == wrong, axis=2).mean() < 0.5


def test_zoom_is_the_same_flat_crop_of_both_nearest_neighbour(picture, pair) -> None:
    pic, pixels = picture
    c = pic.crop
    assert c.size[0] == c.size[1] and PANEL - 32 < c.size[0] * ZOOM <= PANEL
    stats = pic.grain.prev.blocks
    under = [b for b in range(stats.flat.size) if _overlaps(stats.box(b), c)]
    assert under and stats.flat[under].all()  # grain, not an edge, is what gets zoomed
    stds = []
    for name, img in (("zoom_before", pair[0]), ("zoom_after", pair[1])):
        zoom = region(pixels, pic.regions[name]).astype(int)
        cells = zoom.reshape(c.size[1], ZOOM, c.size[0], ZOOM, 3)
        assert (cells == cells[:, :1, :, :1]).all()  # every 4×4 cell is one source pixel
        crop = img[c.top : c.bottom, c.left : c.right].astype(np.float32)
        mean = crop.mean(axis=(0, 1))
        expected = np.clip(np.round(mean + pic.stretch * (crop - mean)), 0, 255)
        assert np.abs(cells[:, 0, :, 0] - expected).max() <= 1
        stds.append(np.diff(cells[:, 0, :, 0], axis=1).std())  # pixel-to-pixel: grain, not shading
    assert pic.stretch > 1.0 and stds[0] > 2 * stds[1]  # the grain visibly went down


def _overlaps(a: tuple[int, int, int, int], b) -> bool:
    return a[0] < b.right and b.left < a[2] and a[1] < b.bottom and b.top < a[3]


def test_heat_maps_colour_each_block_by_its_grain(picture) -> None:
    pic, pixels = picture
    for name, m in (("heat_before", pic.grain.prev), ("heat_after", pic.grain.new)):
        heat = region(pixels, pic.regions[name])
        s = m.blocks
        sx, sy = PANEL / W, heat.shape[0] / H
        checked = 0
        for b in np.flatnonzero(s.flat & (s.sigma < 1.5 * pic.heat_max))[::7]:
            left, top, right, bottom = s.box(b)
            y, x = int((top + bottom) / 2 * sy), int((left + right) / 2 * sx)
            assert tuple(heat[y, x]) == tuple(colour_map(np.array([s.sigma[b] / pic.heat_max]))[0])
            checked += 1
        assert checked > 10
        assert tuple(heat[1, 1]) == UNMEASURED  # the border the 32 px grid does not cover
    flat = pic.grain.block_ids
    before_mean = np.mean([pic.grain.prev.blocks.sigma[flat]])
    after_mean = np.mean([pic.grain.new.blocks.sigma[flat]])
    assert before_mean > 2 * after_mean


def test_colour_bar_and_map_run_dark_to_light(picture) -> None:
    pic, pixels = picture
    bar = region(pixels, pic.regions["bar"])
    assert tuple(bar[5, 0]) == tuple(colour_map(np.array([0.0]))[0])
    assert tuple(bar[5, -1]) == tuple(colour_map(np.array([1.0]))[0])
    lightness = colour_map(np.linspace(0, 1, 50)).astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lightness) > 0)


def _has(pixels: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool(np.all(pixels == colour, axis=2).any())


def test_headline_colour_follows_the_verdict(picture, pair) -> None:
    pic, pixels = picture
    first_line = pixels[:32]
    assert pic.grain.reduced and _has(first_line, GREEN) and not _has(first_line, RED)
    blurred = q(gaussian(pair[0].astype(float), (1.2, 1.2, 0), preserve_range=True))
    refused = render_comparison(pair[0], blurred)
    assert refused.grain.verdict == "detail lost"
    line = np.asarray(refused.image)[:32]
    assert _has(line, RED) and not _has(line, GREEN)


def test_unmeasurable_pair_still_renders(pair, tmp_path: Path) -> None:
    white = np.full((H, W, 3), 250, np.uint8)
    pic = save_comparison(white, pair[1], tmp_path / "x.png")
    assert pic.grain.verdict == "not measurable" and pic.stretch > 1.0  # stretched on after's grain
    heat = region(np.asarray(pic.image), pic.regions["heat_before"])
    assert np.all(heat == UNMEASURED)  # every block too bright to measure
    assert Image.open(tmp_path / "x.png").size == pic.image.size


def test_a_face_crop_of_both_is_drawn_when_a_face_is_found(tmp_path: Path) -> None:
    """A real portrait (skimage's astronaut) with grain, then with less: the face row shows the
    same box of both at the same size, and the colour headline agrees with the evidence."""
    from skimage import data

    img = data.astronaut().astype(float)
    h, w = img.shape[:2]
    before = q(img + film_grain(np.random.default_rng(1), 0.8, 8.0, h, w))
    after = q(img + film_grain(np.random.default_rng(2), 0.8, 3.0, h, w))
    pic = save_comparison(before, after, tmp_path / "face.png")
    face = pic.colour.face
    assert face is not None and pic.colour.verified is True, pic.colour.explanation
    a, b = pic.regions["face_before"], pic.regions["face_after"]
    assert a.size == b.size and a.size[0] == PANEL and a.top > pic.regions["bar"].bottom
    pixels = np.asarray(pic.image)
    shown = region(pixels, a).astype(float)
    expected = np.asarray(Image.fromarray(before).crop(
        (face.left - face.width // 4, face.top - face.height // 4, face.right + face.width // 4,
         face.bottom + face.height // 4)).resize(a.size, Image.Resampling.LANCZOS)).astype(float)
    assert np.abs(shown - expected).mean() < 1.0
    assert _has(pixels[32:60], GREEN), "colours verified: the colour line is green"


def test_without_a_face_there_is_no_face_row_and_the_colour_line_says_so(picture) -> None:
    pic, _ = picture
    assert pic.colour.face is None and pic.colour.verified is None
    assert not any(name.startswith("face_") for name in pic.regions)
    assert "no face found" in pic.colour.explanation
