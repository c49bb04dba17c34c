"""Compiling the task file's node list to ComfyUI's API format, and validating graphs offline."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ralph.handlers.comfyui.check import check_node_list
from ralph.handlers.comfyui.compile import PromptText, compile_workflow
from ralph.handlers.comfyui.nodelist import parse_node_list
from ralph.handlers.comfyui.schema import load_object_info, schemas_from_object_info
from ralph.handlers.comfyui.template import apply_overrides, load_template, parameter_paths
from ralph.handlers.comfyui.validate import validate

from tests.far.comfyui_server import comfyui_server  # noqa: F401  (fixture: a real ComfyUI, slow tests only)
from tests.repo_files import EXAMPLE, OBJECT_INFO

LINES = EXAMPLE.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def schemas():
    return load_object_info(OBJECT_INFO)


def example_block() -> tuple[str, int]:
    start = next(i for i, text in enumerate(LINES) if "Workflow Order" in text) + 1
    end = next(i for i in range(start + 1, len(LINES)) if LINES[i].startswith("```"))
    return "\n".join(LINES[start + 1:end]), start + 2


def file_line(needle: str) -> int:
    return next(i for i, text in enumerate(LINES, 1) if needle in text)


def example_prompts() -> dict[str, PromptText]:
    """As the engine hands them over: the text after `Positive:` (still in backticks) and its line."""
    found = {}
    for number, line in enumerate(LINES, 1):
        for key in ("Positive", "Negative"):
            if line.startswith(f"- {key}:"):
                found[key.lower()] = PromptText(line.split(":", 1)[1].strip(), number)
    return found


def compile_text(text, first, schemas, prompts=None):
    parsed = parse_node_list(text, first)
    assert parsed.problems == []
    return compile_workflow(parsed.nodes, schemas, example_prompts() if prompts is None else prompts)


# --- compile ------------------------------------------------------------------------------------


def test_example_compiles_to_the_refiner_template(schemas):
    compiled = compile_text(*example_block(), schemas)
    assert compiled.graph == load_template("refiner")["prompt"]
    # Only the two seeds were left out; both are fixed and said so, on the samplers' lines.
    assert [(p.severity, p.code, p.node_id, p.line) for p in compiled.problems] == [
        ("info", "default-seed", "11", file_line("Node 11:")), ("info", "default-seed", "12", file_line("Node 12:"))]
    assert "reproducible" in compiled.problems[0].message
    assert validate(compiled.graph, schemas, compiled.line_of) == []
    # The JSON that goes over the wire is plain JSON.
    assert json.loads(json.dumps(compiled.graph)) == compiled.graph


def test_planted_bad_sampler_is_reported_on_its_line(schemas):
    text, first = example_block()
    text = text.replace("steps=30, CFG=7.0, sampler=dpmpp_2m", "steps=30, CFG=7.0, sampler=dpmpp_2mm")
    checked = check_node_list(text, first, schemas, example_prompts())
    errors = [p for p in checked.problems if p.is_error]
    assert len(errors) == 1
    (error,) = errors
    assert error.line == file_line("steps=30, CFG=7.0") and error.code == "bad-choice"
    assert str(error).startswith("node 11 (KSampler) input sampler_name: 'dpmpp_2mm' is not allowed; did you mean "
                                 "'dpmpp_2m'")
    assert not checked.ok


def test_loose_names_map_to_real_inputs(schemas):
    text = ("Node 1: KSampler (seed: 7)\n"
            "  → params: Steps=12, cfg_scale=4, Sampler=Euler, sched=normal, denoise=1\n"
            "Node 2: LoraLoader (x.safetensors, lora strength 0.6)\n"
            "Node 3: EmptyLatentImage (resolution: 1024x1024, batch_size 2)\n"
            "Node 4: SaveImage (out/x)\n")
    compiled = compile_text(text, 1, schemas, {})
    assert compiled.problems == []
    k = compiled.graph["1"]["inputs"]
    assert (k["seed"], k["steps"], k["cfg"], k["sampler_name"], k["scheduler"], k["denoise"]) == (
        7, 12, 4.0, "euler", "normal", 1.0)
    assert isinstance(k["cfg"], float) and isinstance(k["denoise"], float)
    assert compiled.graph["2"]["inputs"] == {"lora_name": "x.safetensors", "strength_model": 0.6, "strength_clip": 0.6}
    assert compiled.graph["3"]["inputs"] == {"width": 1024, "height": 1024, "batch_size": 2}
    assert compiled.graph["4"]["inputs"] == {"filename_prefix": "out/x"}
    assert compiled.line_of("1", "scheduler") == 2 and compiled.line_of("1", "seed") == 1


def test_links_found_by_type_when_the_name_is_loose(schemas):
    text = ("Node 1: CheckpointLoaderSimple (a.safetensors)\n"
            "Node 2: EmptyLatentImage (512x512)\n"
            "Node 3: VAEDecode\n  → inputs: latent[2,0], [1,2]\n")
    compiled = compile_text(text, 1, schemas, {})
    assert compiled.graph["3"]["inputs"] == {"samples": ["2", 0], "vae": ["1", 2]}


def test_what_cannot_be_placed_is_an_error_on_its_line(schemas):
    text = ("Node 1: KSampler (30)\n"
            "  → params: colour=red, steps=3, steps=4\n"
            "Node 2: CLIPTextEncode (NEGATIVE prompt)\n"
            "Node 3: KSampler (dpmpp_2mm)\n")
    compiled = compile_text(text, 10, schemas, {"Positive": PromptText("p", 1)})
    got = {(p.line, p.code) for p in compiled.problems if p.severity == "error"}
    assert got == {(10, "ambiguous"), (11, "unknown-input"), (11, "duplicate-input"), (12, "missing-prompt"),
                   (13, "unknown-value")}
    messages = " | ".join(str(p) for p in compiled.problems)
    assert "'30' could be seed, cfg, denoise: write name=value" in messages  # steps is taken by name
    assert "did you mean 'dpmpp_2m'?" in messages


def test_unknown_node_type_passes_through_for_validate(schemas):
    compiled = compile_text("Node 5: KSampeler\n → params: steps=3\n", 1, schemas, {})
    assert compiled.graph == {"5": {"inputs": {"steps": 3}, "class_type": "KSampeler"}}
    problems = validate(compiled.graph, schemas, compiled.line_of)
    assert [(p.line, p.code) for p in problems if p.code == "unknown-node"] == [(1, "unknown-node")]
    assert "did you mean KSampler?" in str(problems[0])


def test_a_custom_node_no_server_has_described_is_left_to_the_live_server():
    # A snapshot (shipped, or cached from servers ralph ran on) does not know every custom node pack:
    # a class with no close name there may be one, so only the server that runs it can refuse it.
    graph = copy.deepcopy(load_template("refiner")["prompt"])
    graph["14"]["class_type"] = "SaveImageToCloudBucket"  # the only output node: custom
    snapshot = json.loads(OBJECT_INFO.read_text())
    found = validate(graph, schemas_from_object_info(snapshot, files_listed=False))
    assert [(p.code, p.severity) for p in found] == [("unknown-node", "warning")], found
    assert "the live server checks it before the prompt" in str(found[0])
    live = validate(graph, schemas_from_object_info(snapshot, files_listed=True))  # the server's own word
    assert sorted((p.code, p.severity) for p in live if p.code in ("no-output", "unknown-node")) == [
        ("no-output", "error"), ("unknown-node", "error")]


# --- templates ----------------------------------------------------------------------------------


def test_template_overrides(schemas):
    template = load_template("refiner")
    graph = apply_overrides(template, {"cfg": 5.5, "denoise2": 0.3, "lora_strength": 0.7, "11.steps": 25,
                                       "positive": "a red bicycle"})
    assert graph["11"]["inputs"]["cfg"] == graph["12"]["inputs"]["cfg"] == 5.5
    assert graph["12"]["inputs"]["denoise"] == 0.3 and graph["11"]["inputs"]["denoise"] == 0.8
    assert graph["2"]["inputs"]["strength_model"] == graph["2"]["inputs"]["strength_clip"] == 0.7
    assert graph["11"]["inputs"]["steps"] == 25 and graph["7"]["inputs"]["text"] == "a red bicycle"
    assert template["prompt"]["11"]["inputs"]["cfg"] == 7.0  # the template itself is untouched
    assert validate(graph, schemas) == []
    with pytest.raises(KeyError, match="known: .*denoise2"):
        apply_overrides(template, {"denoise3": 0.1})
    with pytest.raises(KeyError):
        apply_overrides(template, {"99.cfg": 1})


def test_every_template_parameter_points_at_an_existing_input():
    template = load_template("refiner")
    for name, paths in parameter_paths(template).items():
        for node_id, input_name in paths:
            assert input_name in template["prompt"][node_id]["inputs"], name
    assert {"cfg", "denoise2", "steps", "lora_strength", "positive", "negative", "seed", "width", "height"} \
        <= set(parameter_paths(template))


# --- schemas ------------------------------------------------------------------------------------


def test_both_combo_shapes_are_read_alike():
    old = {"N": {"input": {"required": {"mode": [["a", "b"], {}], "n": ["INT", {"min": 1}]}}, "output": ["IMAGE"],
                 "output_node": True}}
    new = {"N": {"input": {"required": {"mode": ["COMBO", {"options": ["a", "b"]}], "n": ["INT", {"min": 1}]}},
                 "output": ["IMAGE"], "output_node": True}}
    for data in (old, new):
        schemas = schemas_from_object_info(data)
        assert schemas["N"].inputs["mode"].type == "COMBO" and schemas["N"].inputs["mode"].options == ("a", "b")
        bad = validate({"1": {"class_type": "N", "inputs": {"mode": "c", "n": 1}}}, schemas)
        assert [(p.code, p.input) for p in bad] == [("bad-choice", "mode")]
        assert validate({"1": {"class_type": "N", "inputs": {"mode": "b", "n": 1}}}, schemas) == []


def test_odd_schema_shapes_do_not_crash():
    schemas = schemas_from_object_info({"N": {"input": {"required": {"a": "MODEL", "b": [], "c": 5}}, "output": None},
                                        "junk": 3})
    assert [s.type for s in schemas["N"].inputs.values()] == ["MODEL", "*", "*"] and "junk" not in schemas


# --- validate: one failing and one passing case per rule ------------------------------------------


def refiner():
    return copy.deepcopy(load_template("refiner")["prompt"])


def codes(graph, schemas):
    return sorted((p.code, p.node_id, p.input, p.severity) for p in validate(graph, schemas))


def test_the_template_passes(schemas):
    assert validate(refiner(), schemas) == []


@pytest.mark.parametrize("mutate, expected", [
    (lambda g: g["11"].update(class_type="KSampeler"), [("unknown-node", "11", None)]),
    (lambda g: g["13"]["inputs"].pop("vae"), [("missing-input", "13", "vae")]),
    (lambda g: g["11"]["inputs"].update(cfg_scale=5), [("unknown-input", "11", "cfg_scale")]),
    (lambda g: g["11"]["inputs"].update(cfg=150.0), [("out-of-range", "11", "cfg")]),
    (lambda g: g["12"]["inputs"].update(denoise=-0.1), [("out-of-range", "12", "denoise")]),
    (lambda g: g["11"]["inputs"].update(steps="30"), [("bad-value", "11", "steps")]),
    (lambda g: g["11"]["inputs"].update(steps=30.5), [("bad-value", "11", "steps")]),
    (lambda g: g["12"]["inputs"].update(scheduler="Karras2"), [("bad-choice", "12", "scheduler")]),
    (lambda g: g["4"]["inputs"].update(provider="TPU"), [("bad-choice", "4", "provider")]),
    (lambda g: g["13"]["inputs"].update(samples=["99", 0]), [("dangling-link", "13", "samples")]),
    (lambda g: g["13"]["inputs"].update(vae=["1", 3]), [("bad-output", "13", "vae")]),
    (lambda g: g["13"]["inputs"].update(vae=["1", 0]), [("type-mismatch", "13", "vae")]),
    (lambda g: g["13"]["inputs"].update(vae="vae.safetensors"), [("not-a-link", "13", "vae")]),
    (lambda g: g["10"]["inputs"].update(width=830), [("not-multiple-of-8", "10", "width")]),
    (lambda g: g["10"]["inputs"].update(height=1212), [("not-multiple-of-8", "10", "height")]),
    (lambda g: g.pop("14"), [("no-output", None, None)]),
])
def test_each_rule_fails_on_its_mistake(schemas, mutate, expected):
    graph = refiner()
    mutate(graph)
    found = codes(graph, schemas)
    assert [(c, n, i) for c, n, i, s in found if s == "error"] == expected


def test_a_cycle_is_reported_once_with_its_path(schemas):
    graph = refiner()
    graph["9"]["inputs"]["model"] = ["12", 0]  # loops 9 ← 12 ← 9 and 9 ← 12 ← 11 ← 9: one report
    problems = validate(graph, schemas)
    cycles = [p for p in problems if p.code == "cycle"]
    assert len(cycles) == 1 and cycles[0].node_id in {"9", "11", "12"}
    assert {"9", "12"} <= set(cycles[0].message.replace("←", " ").split())
    assert ("type-mismatch", "9", "model") in {(p.code, p.node_id, p.input) for p in problems}  # LATENT into MODEL
    graph["9"]["inputs"]["model"] = ["2", 0]
    assert validate(graph, schemas) == []


def test_file_choices_checked_only_against_a_real_file_list():
    data = json.loads(OBJECT_INFO.read_text())
    graph = refiner()
    assert validate(graph, schemas_from_object_info(data, files_listed=False)) == []
    live = validate(graph, schemas_from_object_info(data, files_listed=True))
    assert {(p.code, p.node_id) for p in live} == {("missing-file", n) for n in ("1", "2", "5", "6")}
    data["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0].append("bigLove_xl1.safetensors")
    assert "1" not in {p.node_id for p in validate(graph, schemas_from_object_info(data))}


def test_a_node_feeding_no_output_is_a_warning(schemas):
    graph = refiner()
    graph["20"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    assert codes(graph, schemas) == [("unused-node", "20", None, "warning")]


def test_malformed_graphs_are_problems_not_crashes(schemas):
    assert [p.code for p in validate([], schemas)] == ["shape", "no-output"]
    found = validate({"1": 5, "2": {"inputs": {}}, "3": {"class_type": "SaveImage", "inputs": []}}, schemas)
    assert {(p.code, p.node_id) for p in found} >= {("shape", "1"), ("shape", "2"), ("shape", "3")}


# --- robustness ---------------------------------------------------------------------------------

PIECES = st.sampled_from(["Node 1: ", "Node 2: ", "Node 3: ", "KSampler", "VAEDecode", "SaveImage", "LoraLoader",
                          "EmptyLatentImage", "CLIPTextEncode", "(", ")", "\n", "  → inputs: ", "  → params: ",
                          "model[1,0]", "samples[2,0]", "[3,0]", "images[1,0]", "vae[1,2]", "cfg=", "steps=", "x",
                          "8x9", "POSITIVE prompt", ", ", "1.5", "-3", "true", "karras", "a.safetensors", "seed 4"])


@settings(max_examples=200, deadline=None)
@given(st.lists(PIECES, max_size=50).map("".join))
def test_garbage_node_lists_never_crash_and_every_problem_has_a_line(text):
    checked = check_node_list(text, 1, load_object_info(OBJECT_INFO), {"positive": ("p", 99)},
                              provided_files=set(), family="sdxl")
    for problem in checked.problems:
        assert problem.line is not None, problem
        assert str(problem)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(["euler", "karras", "CUDA", "a.safetensors"]))
VALUES = st.one_of(SCALARS, st.lists(st.one_of(st.sampled_from(["1", "2", "3", 1]), st.integers(-2, 4)),
                                     max_size=3))
INPUT_NAMES = st.sampled_from(["model", "clip", "vae", "samples", "images", "latent_image", "pixels", "width",
                               "height", "denoise", "cfg", "seed", "strength_model", "ckpt_name", "image", "x"])
NODES = st.fixed_dictionaries({"class_type": st.sampled_from(
    ["KSampler", "VAEDecode", "VAEEncode", "SaveImage", "EmptyLatentImage", "LoraLoader", "LoadImage",
     "CheckpointLoaderSimple", "ApplyInstantID", "Nope"]), "inputs": st.dictionaries(INPUT_NAMES, VALUES, max_size=6)})
GRAPHS = st.dictionaries(st.sampled_from(["1", "2", "3", "4", "5"]), st.one_of(NODES, SCALARS), max_size=5)


@settings(max_examples=300, deadline=None)
@given(GRAPHS)
def test_arbitrary_graphs_never_crash_validate_or_lint(graph):
    from ralph.handlers.comfyui.lint import lint

    schemas = load_object_info(OBJECT_INFO)
    for problem in validate(graph, schemas) + lint(graph, schemas, provided_files={"a.safetensors"}, family="sdxl"):
        assert str(problem) and problem.severity in ("error", "warning", "info")


# --- against the real ComfyUI (v0.3.75 on CPU, InstantID stand-ins): offline verdicts match its own ------------


@pytest.mark.slow
def test_offline_validation_agrees_with_a_real_comfyui(comfyui_server):
    import time
    import uuid

    import httpx

    live = schemas_from_object_info(httpx.get(f"{comfyui_server.url}/object_info", timeout=30).json())
    compiled = compile_text(*example_block(), live)
    # The compiled example is valid for the live server, file lists included (same file names there).
    assert [p for p in validate(compiled.graph, live, compiled.line_of) if p.severity != "info"] == []
    small = apply_overrides({"prompt": compiled.graph, "parameters": load_template("refiner")["parameters"]},
                            {"width": 64, "height": 64, "steps": 2, "steps2": 1, "face_provider": "CPU",
                             "filename_prefix": f"quality_tests/v-{uuid.uuid4().hex[:8]}"})

    def post(graph):
        r = httpx.post(f"{comfyui_server.url}/prompt", json={"prompt": graph, "client_id": "validate-test"}, timeout=30)
        return r.status_code, r.json()

    status, body = post(small)
    assert status == 200 and body["node_errors"] == {}
    deadline = time.monotonic() + 120
    while not (entry := httpx.get(f"{comfyui_server.url}/history/{body['prompt_id']}").json()):
        assert time.monotonic() < deadline, comfyui_server.log_tail()
        time.sleep(0.2)
    assert entry[body["prompt_id"]]["status"]["status_str"] == "success"

    mistakes = [
        lambda g: g["11"]["inputs"].update(sampler_name="dpmpp_2mm"),
        lambda g: g["12"]["inputs"].update(cfg=150.0),
        lambda g: g["12"]["inputs"].update(steps=0),
        lambda g: g["13"]["inputs"].pop("vae"),
        lambda g: g["13"]["inputs"].update(vae=["1", 0]),
        lambda g: g["1"]["inputs"].update(ckpt_name="missing.safetensors"),
        lambda g: g["4"]["inputs"].update(provider="TPU"),
    ]
    for mutate in mistakes:
        graph = copy.deepcopy(small)
        mutate(graph)
        ours = {(p.node_id, p.input) for p in validate(graph, live) if p.is_error}
        status, body = post(graph)
        assert status == 400, body
        theirs = {(node_id, e["extra_info"]["input_name"]) for node_id, entry in body["node_errors"].items()
                  for e in entry["errors"]}
        assert ours == theirs, (ours, theirs)
