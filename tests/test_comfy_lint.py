"""Domain warnings: each rule fires on its mistake, stays quiet on the fixed graph, and says why."""

from __future__ import annotations

import copy

import pytest
from ralph.handlers.comfyui.check import check_node_list
from ralph.handlers.comfyui.lint import SDXL_BUCKETS, guess_family, lint, nearest_bucket
from ralph.handlers.comfyui.schema import load_object_info
from ralph.handlers.comfyui.template import load_template

from tests.repo_files import EXAMPLE, OBJECT_INFO

ALL_FILES = {"bigLove_xl1.safetensors", "elena_v4_cloud.safetensors", "ip-adapter.bin",
             "instantid_controlnet.safetensors", "elena_face_ref.jpg"}


@pytest.fixture(scope="module")
def schemas():
    return load_object_info(OBJECT_INFO)


def fixed():
    """The refiner template with the example's one mistake corrected (denoise 1.0 on the first pass)."""
    graph = copy.deepcopy(load_template("refiner")["prompt"])
    graph["11"]["inputs"]["denoise"] = 1.0
    return graph


def found(graph, schemas, **kw):
    return sorted((p.code, p.node_id, p.input) for p in lint(graph, schemas, **kw))


def test_the_corrected_graph_is_clean(schemas):
    assert lint(fixed(), schemas, provided_files=ALL_FILES, family="sdxl") == []


def test_the_example_is_flagged_for_denoise_on_its_file_line(schemas):
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, text in enumerate(lines) if "Workflow Order" in text) + 1
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    checked = check_node_list("\n".join(lines[start + 1:end]), start + 2, schemas,
                              {"positive": ("p", 1), "negative": ("n", 2)}, provided_files=ALL_FILES)
    warnings = [p for p in checked.problems if p.severity == "warning"]
    assert [(p.code, p.node_id, p.input) for p in warnings] == [("denoise-on-empty-latent", "11", "denoise")]
    assert lines[warnings[0].line - 1].strip().endswith("denoise=0.8")
    assert "residual noise" in warnings[0].message and checked.ok


def test_denoise_below_one_is_fine_on_a_real_latent(schemas):
    graph = fixed()
    graph["12"]["inputs"]["denoise"] = 0.25  # the refiner works on node 11's latent: that is the point
    assert found(graph, schemas) == []
    graph["12"]["inputs"]["latent_image"] = ["10", 0]
    assert found(graph, schemas) == [("denoise-on-empty-latent", "12", "denoise")]


def test_refiner_through_pixels(schemas):
    graph = fixed()
    graph["20"] = {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["1", 2]}}
    graph["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["1", 2]}}
    graph["12"]["inputs"]["latent_image"] = ["21", 0]
    (problem,) = lint(graph, schemas)
    assert (problem.code, problem.node_id, problem.input) == ("refiner-via-pixels", "12", "latent_image")
    assert "lossy" in problem.message
    # Encoding a loaded photo (img2img) is not a round trip.
    graph["21"]["inputs"]["pixels"] = ["5", 0]
    assert found(graph, schemas) == []


@pytest.mark.parametrize("size, flagged", [((832, 1216), False), ((1024, 1024), False), ((512, 512), True),
                                           ((832, 1208), True), ((1920, 1080), True)])
def test_sdxl_resolution(schemas, size, flagged):
    graph = fixed()
    graph["10"]["inputs"].update(width=size[0], height=size[1])
    assert found(graph, schemas) == ([("sdxl-resolution", "10", "width")] if flagged else [])
    # The same size on an SD1.5 model is none of this rule's business.
    graph["1"]["inputs"]["ckpt_name"] = "v1-5-pruned.safetensors"
    assert found(graph, schemas) == []
    assert found(graph, schemas, family="sdxl") == ([("sdxl-resolution", "10", "width")] if flagged else [])


def test_sdxl_guess_and_nearest_bucket():
    assert guess_family({"1": {"inputs": {"ckpt_name": "bigLove_xl1.safetensors"}}}) == "sdxl"
    assert guess_family({"1": {"inputs": {"ckpt_name": "juggernautXL_v9.safetensors"}}}) == "sdxl"
    assert guess_family({"1": {"inputs": {"ckpt_name": "pixlart_v1.safetensors"}}}) is None
    assert nearest_bucket(1920, 1080) == (1344, 768) and nearest_bucket(512, 512) == (1024, 1024)
    assert (832, 1216) in SDXL_BUCKETS


@pytest.mark.parametrize("strength, flagged", [(1.0, False), (0.0, False), (1.5, False), (2.0, True), (-0.5, True)])
def test_lora_strength(schemas, strength, flagged):
    graph = fixed()
    graph["2"]["inputs"]["strength_model"] = strength
    assert found(graph, schemas) == ([("lora-strength", "2", "strength_model")] if flagged else [])


def test_files_the_setup_does_not_provide(schemas):
    provided = ALL_FILES - {"instantid_controlnet.safetensors"} | {"models/loras/elena_v4_cloud.safetensors"}
    got = lint(fixed(), schemas, provided_files=provided)
    assert [(p.code, p.node_id, p.input) for p in got] == [("file-not-provided", "6", "control_net_name")]
    wrong_case = ALL_FILES - {"elena_face_ref.jpg"} | {"Elena_Face_Ref.jpg"}
    (problem,) = lint(fixed(), schemas, provided_files=wrong_case)
    assert problem.node_id == "5" and "case-sensitive" in problem.message and "input image" in problem.message
    assert lint(fixed(), schemas, provided_files=None) == []


def test_broken_graphs_do_not_crash_lint(schemas):
    assert lint(None, schemas, provided_files=set()) == []
    graph = {"1": {"class_type": "KSampler", "inputs": {"latent_image": ["9", 0], "denoise": "x"}},
             "2": {"class_type": "KSampler", "inputs": {"latent_image": ["2", 0], "denoise": 0.5}}, "3": 7}
    assert lint(graph, schemas, family="sdxl", provided_files={"a"}) == []
