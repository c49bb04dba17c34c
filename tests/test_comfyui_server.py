"""The test ComfyUI server itself: real ComfyUI on CPU runs RALPH-001's 14-node graph.

Talks plain HTTP (no ralph code), so a failure here is the far side's, not the client's.
"""
from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from PIL import Image, ImageStat

from tests.far.comfyui_server import ComfyServer, comfyui_server, refiner_graph  # noqa: F401  (fixture)
from tests.repo_files import OBJECT_INFO

pytestmark = pytest.mark.slow


def _run(server: ComfyServer, graph: dict, timeout: float = 120) -> dict:
    prompt_id = str(uuid.uuid4())
    r = httpx.post(f"{server.url}/prompt", json={"prompt": graph, "client_id": "t", "prompt_id": prompt_id})
    assert r.status_code == 200, r.text
    assert r.json()["node_errors"] == {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = httpx.get(f"{server.url}/history/{prompt_id}").json().get(prompt_id)
        if entry and entry["status"].get("completed") is not None and entry["status"]["status_str"] != "":
            return entry
        time.sleep(0.2)
    raise AssertionError(f"prompt did not finish:\n{server.log_tail()}")


def test_instantid_standins_have_the_recorded_schema(comfyui_server: ComfyServer) -> None:
    recorded = json.loads(OBJECT_INFO.read_text())
    for name in ("InstantIDModelLoader", "InstantIDFaceAnalysis", "ApplyInstantID"):
        live = httpx.get(f"{comfyui_server.url}/object_info/{name}").json()[name]
        want = recorded[name]
        for key in ("input_order", "output", "output_name", "output_is_list", "python_module", "category"):
            assert live[key] == want[key], (name, key)
        # Same inputs and options; the loader's file list is whatever lies in models/instantid.
        assert live["input"]["required"].keys() == want["input"]["required"].keys()
        assert live["input"].get("optional") == want["input"].get("optional")
        if name != "InstantIDModelLoader":
            assert live["input"] == want["input"]


def test_refiner_graph_runs_and_saves_a_png(comfyui_server: ComfyServer) -> None:
    assert httpx.get(f"{comfyui_server.url}/system_stats").json()["system"]["comfyui_version"] == "0.3.75"
    entry = _run(comfyui_server, refiner_graph())
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"]["14"]["images"]
    assert [i["subfolder"] for i in images] == ["quality_tests"]
    path = comfyui_server.output_dir / "quality_tests" / images[0]["filename"]
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (64, 64)
        # Random weights give noise, not a flat (black/NaN) frame: CLIP, UNet and TAESD all ran.
        assert max(ImageStat.Stat(img.convert("RGB")).stddev) > 1.0

