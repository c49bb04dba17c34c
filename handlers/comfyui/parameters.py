"""Named parameters for a workflow a task wrote as a node list.

A template names its parameters by hand (``workflows/refiner.json``).  A compiled node list
has none, yet a sweep over ``cfg`` or ``denoise2`` must work the same on it: the names are
inferred from the node types, samplers in id order (the first is the main pass, the
second the refiner).  On the example's node list this gives the template's own names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (class type, input) → parameter name, for nodes a workflow has once.
_SINGLE = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoint",
    ("LoraLoader", "lora_name"): "lora",
    ("LoraLoader", "strength_model"): "lora_strength",
    ("LoraLoader", "strength_clip"): "lora_strength",
    ("InstantIDModelLoader", "instantid_file"): "instantid_model",
    ("InstantIDFaceAnalysis", "provider"): "face_provider",
    ("LoadImage", "image"): "face_image",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("ApplyInstantID", "weight"): "instantid_weight",
    ("EmptyLatentImage", "width"): "width",
    ("EmptyLatentImage", "height"): "height",
    ("EmptyLatentImage", "batch_size"): "batch_size",
    ("SaveImage", "filename_prefix"): "filename_prefix",
}
_EVERY_SAMPLER = {"seed": "seed", "cfg": "cfg", "sampler_name": "sampler", "scheduler": "scheduler"}
_PER_PASS = {"steps": "steps", "denoise": "denoise"}


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), node_id) if node_id.isdigit() else (1 << 30, node_id)


def infer_parameters(graph: Mapping[str, Any], prompts: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """``{"cfg": ["11.cfg", "12.cfg"], "denoise2": ["12.denoise"], …}`` for ``graph``.

    ``prompts`` (``positive``/``negative`` text) tells which CLIPTextEncode is which.
    """
    found: dict[str, list[str]] = {}

    def add(name: str, node_id: str, input_name: str) -> None:
        found.setdefault(name, []).append(f"{node_id}.{input_name}")

    samplers = 0
    for node_id in sorted(graph, key=_node_order):
        node = graph[node_id]
        kind, inputs = node.get("class_type"), node.get("inputs", {})
        if kind == "KSampler":
            samplers += 1
            suffix = "" if samplers == 1 else str(samplers)
            for input_name, name in _PER_PASS.items():
                if input_name in inputs:
                    add(name + suffix, node_id, input_name)
            for input_name, name in _EVERY_SAMPLER.items():
                if input_name in inputs:
                    add(name, node_id, input_name)
        elif kind == "CLIPTextEncode" and prompts:
            for which, text in prompts.items():
                if inputs.get("text") == text:
                    add(which, node_id, "text")
        else:
            for input_name in inputs:
                single = _SINGLE.get((kind, input_name))
                if single:
                    add(single, node_id, input_name)
    return found
