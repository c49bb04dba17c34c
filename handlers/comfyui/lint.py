"""Domain warnings: graphs ComfyUI runs happily but that defeat the experiment. Each says why.

Rules (Finding.code):
- ``denoise-on-empty-latent``: a sampler with denoise < 1 on an empty latent (text-to-image).
- ``refiner-via-pixels``: a sampler whose latent comes from re-encoding a decoded image.
- ``sdxl-resolution``: an SDXL model asked for a size outside its training buckets.
- ``lora-strength``: a LoRA strength outside the usual range.
- ``file-not-provided``: a model/image file the setup task does not provide.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from ralph.handlers.comfyui.finding import Finding, LineOf, no_lines
from ralph.handlers.comfyui.schema import NodeSchema
from ralph.handlers.comfyui.validate import is_link

# The resolutions SDXL was fine-tuned on around one megapixel (Stability's recommended list).
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
)
# Most LoRAs are trained to be used at 0.5–1.0; past 1.5 they burn in artefacts, below 0 they invert.
LORA_STRENGTH_RANGE = (0.0, 1.5)


def lint(api_graph: Any, schemas: Mapping[str, NodeSchema], line_of: LineOf | None = None, *,
         provided_files: Collection[str] | None = None, family: str | None = None) -> list[Finding]:
    """Warnings for ``api_graph``. ``provided_files``: file names the setup task provides (only
    their base names count; None skips that rule). ``family``: "sdxl", "sd15"… as the task's
    Context states it; None guesses from the checkpoint names. Never raises on a broken graph."""
    graph = {str(k): v for k, v in api_graph.items()} if isinstance(api_graph, Mapping) else {}
    ctx = _Graph(graph, schemas, line_of or no_lines)
    problems: list[Finding] = []
    problems += ctx.denoise_on_empty_latent()
    problems += ctx.refiner_via_pixels()
    if (family or guess_family(graph) or "").lower() == "sdxl":
        problems += ctx.sdxl_resolution()
    problems += ctx.lora_strength()
    if provided_files is not None:
        problems += ctx.files_not_provided(provided_files)
    return problems


def guess_family(api_graph: Mapping[str, Any]) -> str | None:
    """"sdxl" when a checkpoint's name says XL (``bigLove_xl1``, ``juggernautXL``, ``sd_xl_base``)."""
    for entry in api_graph.values():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("inputs"), Mapping):
            continue
        name = entry["inputs"].get("ckpt_name")
        if isinstance(name, str) and (re.search(r"XL|sdxl", name) or re.search(r"(?<![a-z])xl", name.lower())):
            return "sdxl"
    return None


def nearest_bucket(width: int, height: int) -> tuple[int, int]:
    """The SDXL bucket with the closest aspect ratio."""
    ratio = width / height if height else 1.0
    return min(SDXL_BUCKETS, key=lambda b: abs(b[0] / b[1] - ratio))


class _Graph:
    def __init__(self, graph: Mapping[str, Any], schemas: Mapping[str, NodeSchema], line_of: LineOf) -> None:
        self.graph, self.schemas, self.line_of = graph, schemas, line_of

    def nodes(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for node_id, entry in self.graph.items():
            if isinstance(entry, Mapping) and isinstance(entry.get("class_type"), str) \
                    and isinstance(entry.get("inputs", {}), Mapping):
                yield str(node_id), entry["class_type"], entry.get("inputs", {})

    def warn(self, node_id: str, class_type: str, input_name: str | None, message: str, code: str) -> Finding:
        return Finding(self.line_of(node_id, input_name), node_id, class_type, input_name, message, "warning", code)

    def source(self, value: Any) -> tuple[str, str, Mapping[str, Any]] | None:
        """The node a link points at, if it exists and is well formed."""
        if not is_link(value):
            return None
        entry = self.graph.get(str(value[0]))
        if isinstance(entry, Mapping) and isinstance(entry.get("class_type"), str) \
                and isinstance(entry.get("inputs", {}), Mapping):
            return str(value[0]), entry["class_type"], entry.get("inputs", {})
        return None

    def outputs(self, class_type: str) -> tuple[str, ...]:
        schema = self.schemas.get(class_type)
        return schema.outputs if schema else ()

    def input_types(self, class_type: str) -> set[str]:
        schema = self.schemas.get(class_type)
        return {t for s in schema.inputs.values() for t in s.types} if schema else set()

    def is_empty_latent(self, class_type: str, inputs: Mapping[str, Any]) -> bool:
        """A latent made from nothing: LATENT out, no links in (EmptyLatentImage and its kin)."""
        return ("LATENT" in self.outputs(class_type) or class_type.startswith("Empty")) \
            and not any(is_link(v) for v in inputs.values())

    def is_encoder(self, class_type: str) -> bool:
        return "VAEEncode" in class_type or ("LATENT" in self.outputs(class_type)
                                             and "IMAGE" in self.input_types(class_type))

    def is_decoder(self, class_type: str) -> bool:
        return "VAEDecode" in class_type or ("IMAGE" in self.outputs(class_type)
                                             and "LATENT" in self.input_types(class_type))

    def upstream(self, start: Any) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        """Every node reachable backwards from a link, nearest first, each once."""
        seen: set[str] = set()
        todo = [start]
        while todo:
            found = self.source(todo.pop(0))
            if found is None or found[0] in seen:
                continue
            seen.add(found[0])
            yield found
            todo.extend(v for v in found[2].values() if is_link(v))

    def samplers(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for node_id, class_type, inputs in self.nodes():
            if "latent_image" in inputs:
                yield node_id, class_type, inputs

    # --- rules ----------------------------------------------------------------------------------

    def denoise_on_empty_latent(self) -> list[Finding]:
        found = []
        for node_id, class_type, inputs in self.samplers():
            denoise = inputs.get("denoise")
            source = self.source(inputs.get("latent_image"))
            if not isinstance(denoise, (int, float)) or isinstance(denoise, bool) or denoise >= 1.0 or source is None:
                continue
            if self.is_empty_latent(source[1], source[2]):
                found.append(self.warn(
                    node_id, class_type, "denoise",
                    f"denoise {denoise} on an empty latent from node {source[0]} ({source[1]}): a text-to-image "
                    f"pass must remove all the noise; with denoise < 1 it starts part-way down the noise schedule "
                    f"over a blank latent and leaves residual noise (grain) and washed-out colour. Use 1.0 here "
                    f"and keep low denoise for the refiner pass", "denoise-on-empty-latent"))
        return found

    def refiner_via_pixels(self) -> list[Finding]:
        found = []
        for node_id, class_type, inputs in self.samplers():
            for enc_id, enc_type, enc_inputs in self.upstream(inputs.get("latent_image")):
                if not self.is_encoder(enc_type):
                    continue
                decoder = next((d for d in self.upstream_of_inputs(enc_inputs) if self.is_decoder(d[1])), None)
                if decoder:
                    found.append(self.warn(
                        node_id, class_type, "latent_image",
                        f"works on node {enc_id} ({enc_type}) re-encoding the image decoded by node {decoder[0]} "
                        f"({decoder[1]}): the VAE decode→encode round trip is lossy and adds artefacts. Link the "
                        f"first sampler's LATENT straight to latent_image", "refiner-via-pixels"))
                break  # only the nearest encoder matters
        return found

    def upstream_of_inputs(self, inputs: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for value in inputs.values():
            yield from self.upstream(value)

    def sdxl_resolution(self) -> list[Finding]:
        found = []
        for node_id, class_type, inputs in self.nodes():
            width, height = inputs.get("width"), inputs.get("height")
            if not (isinstance(width, int) and isinstance(height, int)) or not self.is_empty_latent(class_type, inputs):
                continue
            if (width, height) not in SDXL_BUCKETS and height > 0:
                near = nearest_bucket(width, height)
                buckets = ", ".join(f"{w}x{h}" for w, h in SDXL_BUCKETS)
                found.append(self.warn(
                    node_id, class_type, "width",
                    f"{width}x{height} is not a native SDXL resolution; SDXL was trained on ~1 megapixel buckets "
                    f"and drifts (duplicated limbs, blur) elsewhere. Nearest in shape: {near[0]}x{near[1]} "
                    f"(buckets: {buckets})", "sdxl-resolution"))
        return found

    def lora_strength(self) -> list[Finding]:
        low, high = LORA_STRENGTH_RANGE
        found = []
        for node_id, class_type, inputs in self.nodes():
            for name in ("strength_model", "strength_clip"):
                value = inputs.get(name)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                if not low <= value <= high:
                    found.append(self.warn(
                        node_id, class_type, name,
                        f"LoRA strength {value} is outside the usual {low}–{high}: above it most LoRAs burn in "
                        f"artefacts, below 0 they invert their effect", "lora-strength"))
        return found

    def files_not_provided(self, provided: Collection[str]) -> list[Finding]:
        names = {_base(p) for p in provided}
        lowered = {n.lower(): n for n in names}
        found = []
        for node_id, class_type, inputs in self.nodes():
            schema = self.schemas.get(class_type)
            if schema is None:
                continue
            for name, value in inputs.items():
                spec = schema.inputs.get(name)
                if spec is None or not spec.is_file or not isinstance(value, str) or _base(value) in names:
                    continue
                kind = "input image" if spec.is_image_upload else "model file"
                same = lowered.get(_base(value).lower())
                why = f" (the setup has {same!r}: names are case-sensitive)" if same else ""
                found.append(self.warn(
                    node_id, class_type, name,
                    f"{kind} {value!r} is not among the files the setup task provides{why}; the run would "
                    f"fail at this node", "file-not-provided"))
        return found


def _base(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]
