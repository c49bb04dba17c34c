"""A before/after picture for judging "grain reduced?" in one glance.

Three rows, one column per image: the images side by side with their grain index,
the same flat region of both zoomed ×4 (nearest neighbour, one shared contrast
stretch so that faint grain shows and both crops are treated alike), and a heat-map
of the per-block grain on one shared colour scale. When a face was found, a fourth row
shows the same face box of both at the same zoom, where skin tone was read. The header
states the verdicts in the words the evidence uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colour import ColourDrift, colour_drift
from .faces import FaceBox
from .grain import GrainComparison, GrainMeasure, ImageLike, compare_grain

PANEL = 400  # column width in the picture
ZOOM = 4
CROP = 3 * 32  # image pixels shown in the zoom row: three grain blocks, 384 px once zoomed
GAP = 16
HEADER = 64
LABEL = 30
CAPTION = 28
BAR = 56
BACKGROUND = (24, 24, 24)
GOOD, BAD, OPEN = (120, 220, 120), (240, 120, 100), (240, 200, 90)  # verified, refused, for a person
TEXT = (235, 235, 235)
CROP_OUTLINE = (255, 220, 0)
UNMEASURED = (90, 90, 90)  # blocks too dark or too bright to measure
# The zoom row's contrast stretch brings the before crop's grain to about this σ.
ZOOM_TARGET_SIGMA = 12.0
MAX_STRETCH = 6.0

# Heat-map colours, dark to light (lightness rises monotonically, so the map reads in grey too).
_ANCHORS = np.array([[16, 16, 64], [110, 40, 140], [220, 80, 70], [250, 170, 40], [252, 245, 170]], np.float32)


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom


@dataclass(frozen=True, eq=False)
class ComparisonPicture:
    """The rendered picture and where each part of it is."""

    image: Image.Image
    regions: dict[str, Box]  # title, before, after, zoom_*, heat_*, bar, face_* (when a face was found)
    crop: Box  # the zoomed region in the before image's pixels (the same in after's)
    stretch: float  # contrast factor applied to both zoom crops
    heat_max: float  # grain index at the top of the colour scale
    grain: GrainComparison
    colour: ColourDrift

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path, format="PNG", compress_level=PNG_COMPRESSION)
        return path


# zlib level 1: a third of the default's time for a picture a person opens once, a little larger.
PNG_COMPRESSION = 1


def colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB along the heat-map anchors."""
    v = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(v.astype(np.int64), len(_ANCHORS) - 2)
    t = (v - low)[..., None]
    return np.round(_ANCHORS[low] * (1 - t) + _ANCHORS[low + 1] * t).astype(np.uint8)


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _rgb_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return Image.fromarray(np.clip(np.round(arr[..., :3]), 0, 255).astype(np.uint8), "RGB")


def _square(cx: int, cy: int, size: tuple[int, int]) -> Box:
    w, h = size
    side = min(CROP, w, h)
    left = int(np.clip(cx - side // 2, 0, w - side))
    top = int(np.clip(cy - side // 2, 0, h - side))
    return Box(left, top, left + side, top + side)


def _crop_box(result: GrainComparison, size: tuple[int, int]) -> Box:
    """A CROP×CROP square over flat ground, so that the zoom shows grain and not an edge.

    Among the 3×3 windows of blocks that are all flat in prev, mid-tone in new and no
    grainier than twice prev's index, take the one whose median grain is nearest the
    compared blocks' median (a representative place); the crop is exactly that window.
    Else centre on the most representative compared block; else the image centre.
    """
    prev, new = result.prev.blocks, result.new.blocks
    ny, nx = prev.shape
    ids = result.block_ids if result.block_ids.size else np.flatnonzero(prev.flat)
    if ids.size == 0:
        return _square(size[0] // 2, size[1] // 2, size)
    target = float(np.median(prev.sigma[ids]))
    limit = 2.0 * (result.prev.index if result.prev.index is not None else target)
    n = CROP // 32
    usable = (prev.flat & (prev.sigma <= limit) & (new.valid if new.shape == prev.shape else True)).reshape(ny, nx)
    sigma = prev.sigma.reshape(ny, nx)
    best, best_score = None, np.inf
    for i in range(ny - n + 1):
        for j in range(nx - n + 1):
            if usable[i : i + n, j : j + n].all():
                score = abs(float(np.median(sigma[i : i + n, j : j + n])) - target)
                if score < best_score:
                    best, best_score = (i, j), score
    if best is None:
        left, top, right, bottom = prev.box(int(ids[np.argmin(np.abs(prev.sigma[ids] - target))]))
        return _square((left + right) // 2, (top + bottom) // 2, size)
    i, j = best
    left, top = prev.origin + j * 32, prev.origin + i * 32
    return Box(left, top, left + CROP, top + CROP)


def _stretch(before: np.ndarray, after: np.ndarray, grain: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Stretch both crops about their own mean by one factor, chosen so that the given
    grain index becomes ZOOM_TARGET_SIGMA grey levels (no stretch without an index)."""
    k = 1.0 if grain is None else float(np.clip(ZOOM_TARGET_SIGMA / max(grain, 1e-6), 1.0, MAX_STRETCH))

    def apply(a: np.ndarray) -> np.ndarray:
        f = a.astype(np.float32)
        mean = f.mean(axis=(0, 1))
        return np.clip(np.round(mean + k * (f - mean)), 0, 255).astype(np.uint8)

    return apply(before), apply(after), k


def _heat_map(m: GrainMeasure, image_size: tuple[int, int], vmax: float) -> Image.Image:
    """Block grain as colours at image resolution; unmeasurable blocks grey. Blocks with
    coarse structure (not flat) or above 1.5·vmax (3× the larger grain index, the same
    bar for both images) are dimmed: their value is texture or edges more than grain."""
    stats = m.blocks
    w, h = image_size
    out = np.zeros((h, w, 3), np.uint8)
    out[:] = UNMEASURED
    ny, nx = stats.shape
    if ny and nx:
        colours = colour_map(stats.sigma / vmax).astype(np.float32)
        texture = ~stats.flat | (stats.sigma > 1.5 * vmax)
        colours[texture] *= 0.45
        colours[~stats.valid] = UNMEASURED
        grid = colours.reshape(ny, nx, 3).astype(np.uint8)
        tiles = np.repeat(np.repeat(grid, 32, axis=0), 32, axis=1)
        o = stats.origin
        out[o : o + tiles.shape[0], o : o + tiles.shape[1]] = tiles
    return Image.fromarray(out, "RGB")


def _fit(image: Image.Image, height: int) -> Image.Image:
    return image.resize((PANEL, height), Image.Resampling.LANCZOS)


def _index_text(m: GrainMeasure) -> str:
    if m.index is None:
        return "grain index: not measurable"
    return f"grain index {m.index:.2f}   (fine-scale {m.fine_sigma:.2f})"


def _grain_headline(g: GrainComparison) -> str:
    if g.ratio is None:
        return f"grain: {g.verdict}"
    parts = [f"ratio {g.ratio:.2f}"]
    if g.coarse_ratio is not None:
        parts.append(f"coarse {g.coarse_ratio:.2f}")
    if g.detail_ratio is not None and g.same_content:
        parts.append(f"detail {g.detail_ratio:.2f}")
    scene = "" if g.same_content else ", different scenes"
    return f"grain: {g.verdict.upper()}  ({', '.join(parts)}{scene})"


def _colour_headline(c: ColourDrift) -> str:
    """The colour evidence in short: the same verdict and skin reading as its explanation."""
    parts = [f"mean chroma x{c.chroma_ratio:.2f}", f"cast {c.cast:.1f} dE"]
    if c.skin_hue_shift is not None:
        parts.insert(0, f"skin hue {c.skin_hue_shift:+.1f}°, skin chroma x{c.skin_chroma_ratio:.2f}")
    skin = {True: "face skin natural", False: "face skin UNNATURAL", None: "no face found: skin not judged"}[c.natural]
    return f"colours: {c.verdict}, {skin}  ({', '.join(parts)})"


def _face_crop(image: Image.Image, face: FaceBox) -> Image.Image:
    """The face box with a quarter of its size around it, clamped to the image."""
    margin_x, margin_y = face.width // 4, face.height // 4
    box = (max(0, face.left - margin_x), max(0, face.top - margin_y),
           min(image.width, face.right + margin_x), min(image.height, face.bottom + margin_y))
    return image.crop(box)


def render_comparison(
    before: ImageLike,
    after: ImageLike,
    grain: GrainComparison | None = None,
    colour: ColourDrift | None = None,
) -> ComparisonPicture:
    """Draw the before/after picture; grain and colour are computed when not given."""
    b_img, a_img = _rgb_image(before), _rgb_image(after)
    grain = grain or compare_grain(np.asarray(b_img), np.asarray(a_img))
    colour = colour or colour_drift(np.asarray(b_img), np.asarray(a_img))

    # Both columns share the before image's aspect ratio; after is fitted into it.
    panel_h = max(1, round(PANEL * b_img.height / b_img.width))
    width = 2 * PANEL + 3 * GAP
    col = [GAP, 2 * GAP + PANEL]
    y_label = HEADER
    y_image = y_label + LABEL
    y_caption = y_image + panel_h
    y_zoom_label = y_caption + CAPTION + GAP // 2
    y_zoom = y_zoom_label + LABEL
    y_heat_label = y_zoom + PANEL + GAP // 2
    y_heat = y_heat_label + LABEL
    y_bar = y_heat + panel_h + GAP // 2
    y_face_label = y_bar + BAR + GAP // 2
    y_face = y_face_label + LABEL
    face = colour.face
    a_fit = a_img if a_img.size == b_img.size else a_img.resize(b_img.size, Image.Resampling.LANCZOS)
    faces = [_face_crop(im, face) for im in (b_img, a_fit)] if face is not None else []
    face_h = max(1, round(PANEL * faces[0].height / faces[0].width)) if faces else 0
    height = (y_face + face_h + GAP) if faces else y_bar + BAR + GAP // 2

    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    big, small = font(22), font(16)

    draw.text((GAP, 6), _grain_headline(grain), fill=GOOD if grain.reduced else BAD, font=big)
    tone = {True: GOOD, False: BAD, None: OPEN}[colour.verified]
    draw.text((GAP, 36), _colour_headline(colour), fill=tone, font=small)
    regions = {"title": Box(0, 0, width, HEADER)}

    crop = _crop_box(grain, b_img.size)
    crops = [np.asarray(im.crop(crop.as_tuple())) for im in (b_img, a_fit)]
    zb, za, k = _stretch(crops[0], crops[1], grain.prev.index if grain.prev.measurable else grain.new.index)

    measures = (grain.prev, grain.new)
    # Twice the larger index: grain sits mid-scale, texture saturates to the top colour.
    vmax = max(1.0, 2.0 * max(m.index or 0.0 for m in measures))

    for name, x, img, zoom, m in (("before", col[0], b_img, zb, measures[0]),
                                  ("after", col[1], a_img, za, measures[1])):
        draw.text((x, y_label + 2), name, fill=TEXT, font=big)
        canvas.paste(_fit(img, panel_h), (x, y_image))
        regions[name] = Box(x, y_image, x + PANEL, y_image + panel_h)
        s = PANEL / img.width, panel_h / img.height
        outline = (x + crop.left * s[0], y_image + crop.top * s[1], x + crop.right * s[0], y_image + crop.bottom * s[1])
        draw.rectangle(outline, outline=CROP_OUTLINE, width=2)
        draw.text((x, y_caption + 4), _index_text(m), fill=TEXT, font=small)

        draw.text((x, y_zoom_label + 4), f"{name}: zoom x{ZOOM}, contrast x{k:.1f} (both)", fill=TEXT, font=small)
        z = Image.fromarray(zoom).resize((zoom.shape[1] * ZOOM, zoom.shape[0] * ZOOM), Image.Resampling.NEAREST)
        canvas.paste(z, (x, y_zoom))
        regions[f"zoom_{name}"] = Box(x, y_zoom, x + z.width, y_zoom + z.height)

        draw.text((x, y_heat_label + 4), f"{name}: grain per block", fill=TEXT, font=small)
        heat = _heat_map(m, img.size, vmax).resize((PANEL, panel_h), Image.Resampling.NEAREST)
        canvas.paste(heat, (x, y_heat))
        regions[f"heat_{name}"] = Box(x, y_heat, x + PANEL, y_heat + panel_h)

    bar_box = Box(col[0], y_bar, col[1] + PANEL, y_bar + 14)
    ramp = colour_map(np.linspace(0, 1, bar_box.size[0])[None, :].repeat(bar_box.size[1], axis=0))
    canvas.paste(Image.fromarray(ramp, "RGB"), (bar_box.left, bar_box.top))
    regions["bar"] = bar_box
    for frac, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
        tx = bar_box.left + frac * bar_box.size[0]
        draw.text((tx, bar_box.bottom + 3), f"{frac * vmax:.1f}", fill=TEXT, font=small, anchor=anchor)
    legend = "grain per 32 px block (grey levels)   grey: too dark/bright   dimmed: texture/edges"
    draw.text((bar_box.left, bar_box.bottom + 22), legend, fill=TEXT, font=small)
    for name, x, crop_img in zip(("before", "after"), col, faces, strict=False):
        draw.text((x, y_face_label + 4), f"{name}: face, same box and zoom (skin read here)",
                  fill=TEXT, font=small)
        shown = crop_img.resize((PANEL, face_h), Image.Resampling.LANCZOS)
        canvas.paste(shown, (x, y_face))
        regions[f"face_{name}"] = Box(x, y_face, x + shown.width, y_face + shown.height)
    return ComparisonPicture(canvas, regions, crop, k, vmax, grain, colour)


def save_comparison(before: ImageLike, after: ImageLike, path: str | Path) -> ComparisonPicture:
    """Render and write the PNG; returns the picture with its measurements."""
    picture = render_comparison(before, after)
    picture.save(path)
    return picture
