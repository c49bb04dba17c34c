"""Task 3 of the example, run by ralph against a real ComfyUI server (CPU, tiny models)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from ralph.measures import SECONDS_PER_IMAGE, Measures
from ralph.parser import parse_file
from tests.engine.project import Project
from tests.far.comfyui_server import ComfyServer, comfyui_server  # noqa: F401  (fixture)
from tests.repo_files import EXAMPLE
from tests.waiting import wait_for

TASK_3 = "Générer avec workflow optimisé (Refiner Pass)"
TINY = {"width": 64, "height": 64, "steps": 3, "steps2": 2}


def _example_project(root: Path, params: dict) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    file = root / "RALPH-001-grain-reduction.md"
    file.write_bytes(EXAMPLE.read_bytes())
    config = {"tasks": {TASK_3: {"handler": "comfyui.run", "params": params}}}
    (root / "ralph.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return Project(root, file, root / "ledger.txt")


def test_check_finds_the_denoise_on_empty_latent_pattern_and_a_planted_bad_sampler(tmp_path: Path) -> None:
    project = _example_project(tmp_path, {})
    result = project.cli("check", project.file.name)
    lines = result.stdout.splitlines()
    denoise_line = EXAMPLE.read_text(encoding="utf-8").splitlines().index(
        "         → params: steps=30, CFG=7.0, sampler=dpmpp_2m, scheduler=karras, denoise=0.8"
    ) + 1
    assert any(
        line.startswith(f"{project.file.name}:{denoise_line}: warning: node 11 (KSampler) input denoise: denoise 0.8 "
                        "on an empty latent")
        for line in lines
    ), result.stdout
    project.file.write_text(
        project.file.read_text(encoding="utf-8").replace("denoise=0.8", "denoise=1.0").replace(
            "sampler=dpmpp_2m, scheduler=karras, denoise=0.25", "sampler=dpmpp_9x, scheduler=karras, denoise=0.25"
        ),
        encoding="utf-8",
    )
    planted = project.cli("check", project.file.name)
    assert planted.returncode == 2
    bad = [line for line in planted.stdout.splitlines() if "sampler_name" in line and "error" in line]
    assert len(bad) == 1
    assert bad[0].startswith(f"{project.file.name}:{denoise_line + 5}: error: node 12 (KSampler) input sampler_name:")
    assert "'dpmpp_9x' is not allowed" in bad[0]


@pytest.mark.slow
def test_the_examples_task_3_runs_and_its_criteria_are_ticked_from_evidence(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    params = {"server": comfyui_server.url, "overrides": TINY, "output_dir": "output/runpod-quality-tests"}
    project = _example_project(tmp_path, params)
    result = project.cli("run", "--only", "3", project.file.name)
    assert result.returncode == 0, result.stdout + result.stderr
    file, _ = parse_file(project.file)
    task = file.task(3)
    assert task is not None and task.status == "DONE"
    assert all(c.checked for c in task.criteria), [c.text for c in task.criteria]
    images = sorted((tmp_path / "output" / "runpod-quality-tests").rglob("*.png"))
    assert len(images) == 1
    with Image.open(images[0]) as image:
        assert image.size == (64, 64)
        recorded = json.loads(image.text["ralph"])  # type: ignore[attr-defined]  # a PNG's text chunks
        assert "prompt" in image.text, "ComfyUI's own metadata is kept"  # type: ignore[attr-defined]
    assert recorded["cfg"] == 7.0 and recorded["denoise2"] == 0.25 and recorded["steps"] == 3
    server_files = sorted((comfyui_server.output_dir / "quality_tests").glob("elena_refiner*.png"))
    assert server_files, "the server saved under output/quality_tests/ as the task says"
    text = project.file.read_text(encoding="utf-8")
    assert "✔ verified: Image sauvegardée dans output/quality_tests/ — saved output/quality_tests/" in text

    # Asked again, the finished prompt is found in the state: nothing is submitted twice.
    before = len(list(comfyui_server.output_dir.rglob("*.png")))
    again = project.cli("run", "--only", "3", project.file.name)
    assert again.returncode == 0, again.stdout
    assert len(list(comfyui_server.output_dir.rglob("*.png"))) == before


@pytest.mark.slow
def test_a_sweep_runs_every_variant_in_one_session_and_records_its_parameters(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    params = {"server": comfyui_server.url, "overrides": TINY, "sweep": {"cfg": [5.0, 9.0]}, "seeds": [1, 2]}
    project = _example_project(tmp_path, params)
    result = project.cli("run", "--only", "3", project.file.name)
    assert result.returncode == 0, result.stdout + result.stderr
    images = sorted((tmp_path / "output" / "comfyui").rglob("*.png"))
    assert len(images) == 4
    seen = set()
    for path in images:
        with Image.open(path) as image:
            values = json.loads(image.text["ralph"])  # type: ignore[attr-defined]  # a PNG's text chunks
        seen.add((values["cfg"], values["seed"]))
    assert seen == {(5.0, 1), (5.0, 2), (9.0, 1), (9.0, 2)}
    state = json.loads((tmp_path / ".ralph" / project.file.stem / "state.json").read_text())
    assert len(state["tasks"]["3"]["result"]["data"]["images"]) == 4
    assert state["tasks"]["3"]["result"]["data"]["comfyui_version"] == "0.3.75", "the version that ran"
    assert state["tasks"]["3"]["result"]["summary"].endswith("(ComfyUI 0.3.75)")
    # ComfyUI's time per image is remembered: the next plan says so instead of a default.
    pace = Measures().get(SECONDS_PER_IMAGE)
    assert pace is not None and pace.value > 0 and "image(s) of RALPH-001-grain-reduction.md task 3" in pace.detail
    plan = project.cli("run", "--dry-run", "--only", "3", project.file.name)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "4 images: 4 variants (cfg 5.0, 9.0 × seeds 1, 2), into output/comfyui/" in plan.stdout
    assert f"(measured on {pace.at}: " in plan.stdout and "images: 4" in plan.stdout


@pytest.mark.slow
def test_a_workflow_the_live_server_refuses_fails_with_a_readable_reason(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    # The snapshot lists example file names only; the live server knows which files it has.
    params = {"server": comfyui_server.url, "overrides": {**TINY, "checkpoint": "missing.safetensors"}}
    project = _example_project(tmp_path, params)
    result = project.cli("run", "--only", "3", project.file.name)
    assert result.returncode == 1
    text = project.file.read_text(encoding="utf-8")
    assert "node 1 (CheckpointLoaderSimple) input ckpt_name: 'missing.safetensors'" in text
    assert not (tmp_path / "output").exists(), "nothing ran"


def test_the_node_list_infers_the_templates_parameter_names() -> None:
    from ralph.handlers.comfyui.parameters import infer_parameters
    from ralph.handlers.comfyui.template import load_template
    from ralph.handlers.comfyui.workflow import build, snapshot_schemas

    file, _ = parse_file(EXAMPLE)
    task = file.task(3)
    assert task is not None
    flow = build(file, task, {}, snapshot_schemas())
    template = load_template("refiner")
    prompts = {k: v.text for k, v in task.prompts.items()}
    assert infer_parameters(flow.graph, prompts) == template["parameters"]



def test_sweep_values_and_seeds_are_range_checked_like_overrides() -> None:
    from ralph.handlers.comfyui.workflow import build, snapshot_schemas

    file, _ = parse_file(EXAMPLE)
    task = file.task(3)
    assert task is not None
    good = build(file, task, {"sweep": {"denoise2": [0.2, 0.3], "steps": [20, 30]}, "seeds": [1, 2]},
                 snapshot_schemas())
    assert not [p for p in good.problems if p.is_error], good.problems
    bad = build(file, task, {"sweep": {"denoise2": [0.2, 1.5], "steps": [0, 20]}, "seeds": [1, -3]}, snapshot_schemas())
    errors = [str(p) for p in bad.problems if p.is_error]
    assert any("sweep denoise2=1.5:" in e for e in errors), errors
    assert any("sweep steps=0:" in e for e in errors), errors
    assert any("sweep seed=-3:" in e for e in errors), errors
    assert not any("denoise2=0.2:" in e or "steps=20:" in e for e in errors), "valid values are not reported"
    yaml_block = task.code("yaml", "yml")
    assert {p.line for p in bad.problems if "sweep" in p.message} == {yaml_block.line if yaml_block else task.line}


def test_file_names_carry_the_variant() -> None:
    from ralph.handlers.comfyui.run import file_label

    assert file_label("cfg=7 denoise2=0.25 seed=1") == "cfg7-den2_0.25-s1"
    assert file_label("sampler=dpmpp_2m steps=30") == "smpdpmpp_2m-st30"
    assert file_label("base") == ""


@pytest.mark.slow
def test_check_uses_the_schemas_the_live_server_gave_last_time(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    project = _example_project(tmp_path, {"server": comfyui_server.url, "overrides": TINY})
    assert project.cli("run", "--only", "3", project.file.name).returncode == 0
    cache = tmp_path / ".ralph" / project.file.stem / "object_info.json"
    live = json.loads(cache.read_text())
    assert "RalphSleep" in live, "the cache is the live server's, with its test-only nodes"
    text = project.file.read_text(encoding="utf-8").replace("Node 13: VAEDecode", "Node 13: RalphSleep")
    project.file.write_text(text, encoding="utf-8")
    check = project.cli("check", project.file.name)
    assert "unknown node type" not in check.stdout, "RalphSleep is known from the cached schemas"


@pytest.mark.slow
def test_a_later_run_asks_the_server_only_for_the_workflows_node_classes(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    from ralph.handlers.comfyui.workflow import class_types

    from tests.far.http_recorder import recording

    with recording(comfyui_server.url) as (url, seen):
        project = _example_project(tmp_path, {"server": url, "overrides": TINY})
        assert project.cli("run", "--only", "3", project.file.name).returncode == 0
        first = [p for p in seen.paths() if p.startswith("/object_info")]
        assert first == ["/object_info"], "the first run fills the cache `ralph check` reads with every class"
        cache = tmp_path / ".ralph" / project.file.stem / "object_info.json"
        written = cache.stat().st_mtime_ns
        seen.requests.clear()
        assert project.cli("run", "--only", "3", project.file.name).returncode == 0
        later = sorted(p for p in seen.paths() if p.startswith("/object_info"))
    task = next(t for t in parse_file(project.file)[0].tasks if t.number == 3)
    classes = class_types(task, {})
    assert later == sorted(f"/object_info/{name}" for name in classes) and len(classes) >= 8, later
    assert cache.stat().st_mtime_ns == written, "the server said nothing new: the cache is not rewritten"
    assert "RalphSleep" in json.loads(cache.read_text()), "the first run's classes are all still known"


def _queued(url: str) -> list[str]:
    """The prompt ids the server is running or has pending."""
    queue = httpx.get(f"{url}/queue", timeout=10).json()
    return [item[1] for item in queue["queue_running"] + queue["queue_pending"]]


def _two(queued: list[str]) -> list[str] | None:
    return queued if len(queued) == 2 else None


@pytest.mark.slow
def test_a_sweep_queues_the_next_variant_while_one_runs_and_withdraws_it_on_ctrl_c(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    # A variant long enough on CPU to be caught with the next one queued behind it.
    sweep = {"cfg": [5.0, 6.0, 7.0]}
    project = _example_project(tmp_path, {"server": comfyui_server.url, "overrides": {**TINY, "steps": 40},
                                          "sweep": sweep})
    run = project.popen("run", "--only", "3", project.file.name)
    try:
        both = wait_for(lambda: _two(_queued(comfyui_server.url)), 120, "the second variant queued behind the first")
        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 130
    finally:
        if run.poll() is None:
            run.kill()
    wait_for(lambda: not _queued(comfyui_server.url), 60, "the server's queue to empty")
    history = httpx.get(f"{comfyui_server.url}/history", timeout=10).json()
    assert both[1] not in history, "the queued variant was withdrawn, never run"
    state = json.loads((tmp_path / ".ralph" / project.file.stem / "state.json").read_text())
    memory = state["tasks"]["3"]["memory"]["variants"]
    assert both == [memory["cfg=5.0"]["prompt_id"], memory["cfg=6.0"]["prompt_id"]], "ids saved before sending"
    # The same command again finishes every variant (the interrupted and the withdrawn one sent again).
    done = project.cli("run", "--only", "3", project.file.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((tmp_path / "output").rglob("*.png"))) == 3


@pytest.mark.slow
def test_a_custom_node_the_snapshots_lack_runs_on_a_server_that_has_it(
    tmp_path: Path, comfyui_server: ComfyServer  # noqa: F811
) -> None:
    # A fresh project (no cached schemas): RalphSleep is a custom node of the test server only.
    project = _example_project(tmp_path, {"server": comfyui_server.url, "overrides": TINY})
    text = project.file.read_text(encoding="utf-8").replace(
        "Node 14: SaveImage (filename_prefix: quality_tests/elena_refiner)\n         → inputs: images[13,0]",
        "Node 15: RalphSleep\n         → inputs: images[13,0]\n         → params: seconds=0\n\n"
        "Node 14: SaveImage (filename_prefix: quality_tests/elena_refiner)\n         → inputs: images[15,0]")
    # A misspelt name of a node ralph knows is still refused before anything runs.
    project.file.write_text(text.replace("Node 13: VAEDecode", "Node 13: VAEDecod"), encoding="utf-8")
    assert "unknown node type 'VAEDecod'; did you mean VAEDecode?" in project.cli("check", project.file.name).stdout
    project.file.write_text(text, encoding="utf-8")
    check = project.cli("check", project.file.name).stdout
    assert "warning: node 15 (RalphSleep): node type 'RalphSleep' is not among the schemas" in check, check
    done = project.cli("run", "--only", "3", project.file.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((tmp_path / "output").rglob("*.png"))) == 1
