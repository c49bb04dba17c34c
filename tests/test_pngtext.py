"""Setting a PNG text chunk without decoding the image: ComfyUI's chunks kept, pixels untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from ralph.handlers.images import pngtext


def comfyui_png(path: Path) -> np.ndarray:
    """A PNG as ComfyUI saves one: its prompt and workflow as text chunks before the pixels."""
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    info = PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler"}}))
    info.add_text("workflow", json.dumps({"nodes": []}))
    Image.fromarray(pixels).save(path, pnginfo=info, compress_level=4)
    return pixels


def chunk_types(path: Path) -> list[bytes]:
    return [chunk[4:8] for chunk in pngtext._chunks(path.read_bytes(), path)]


def test_the_chunk_is_added_before_the_pixels_and_everything_else_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    pixels = comfyui_png(path)
    before = path.read_bytes()
    pngtext.set_text(path, "ralph", json.dumps({"cfg": 7.0}))
    with Image.open(path) as image:
        assert image.info["ralph"] == '{"cfg": 7.0}', "found without decoding: the chunk precedes IDAT"
        assert image.info["prompt"] and image.info["workflow"]
        assert np.array_equal(np.asarray(image), pixels)
    after = path.read_bytes()
    idat = before.index(b"IDAT") - 4
    assert after.endswith(before[idat:]), "the image data and IEND are copied byte for byte"
    types = chunk_types(path)
    assert types.index(b"tEXt") < types.index(b"IDAT") and types.count(b"tEXt") == 3


def test_setting_it_again_replaces_it_and_non_latin_text_goes_to_itxt(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    comfyui_png(path)
    pngtext.set_text(path, "ralph", "first")
    pngtext.set_text(path, "ralph", "visage: élargi ✓")
    with Image.open(path) as image:
        assert image.text["ralph"] == "visage: élargi ✓" and image.text["prompt"]  # type: ignore[attr-defined]  # a PNG
    assert chunk_types(path).count(b"tEXt") == 2 and chunk_types(path).count(b"iTXt") == 1


@pytest.mark.parametrize("damage", ["not a png", "truncated", "bad crc"])
def test_a_damaged_file_is_refused_and_left_as_it_was(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "a.png"
    comfyui_png(path)
    data = path.read_bytes()
    if damage == "not a png":
        data = b"GIF89a" + data[6:]
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:
        at = data.index(b"IDAT") + 10
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    path.write_bytes(data)
    with pytest.raises(pngtext.NotPNG):
        pngtext.set_text(path, "ralph", "x")
    assert path.read_bytes() == data
