"""``comfyui.run`` with ``executor: serverless``: the example's refiner task as jobs on an emulated RunPod
Serverless endpoint (tests/far/serverless_emulator.py) whose workers are real ComfyUI servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from ralph.handlers.runpod.endpoint import WORKER_IMAGE

from ralph.parser import parse_file
from tests.engine.project import Project
from tests.far.comfyui_server import require_install
from tests.far.runpod_emulator import RunPodEmulator
from tests.far.serverless_emulator import ServerlessEmulator
from tests.far.tiny_models import comfyui_home, ensure_models
from tests.repo_files import EXAMPLE
from tests.waiting import wait_for

TASK_3 = "Générer avec workflow optimisé (Refiner Pass)"
TINY = {"width": 64, "height": 64, "steps": 3, "steps2": 2}
SWEEP = {"cfg": [5.0, 7.0, 9.0]}


def _project(root: Path, endpoint: str | dict[str, Any], **params: Any) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    file = root / "RALPH-001-grain-reduction.md"
    file.write_bytes(EXAMPLE.read_bytes())
    (root / "face.jpg").write_bytes((ensure_models(comfyui_home()) / "input" / "elena_face_ref.jpg").read_bytes())
    params = {"executor": "serverless", "endpoint": endpoint, "template": "refiner", "overrides": TINY,
              "sweep": SWEEP, "inputs": {"elena_face_ref.jpg": "face.jpg"}, "concurrency": 3,
              "worker_usd_per_hour": 1.8, "output_dir": "output/runpod-quality-tests", **params}
    config = {"tasks": {TASK_3: {"handler": "comfyui.run", "params": params}}}
    (root / "ralph.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return Project(root, file, root / "ledger.txt")


def _env(emu: ServerlessEmulator) -> dict[str, str]:
    return {"RUNPOD_ENDPOINT_BASE_URL": emu.base_url, "RUNPOD_API_KEY": emu.api_key}


def _saved_jobs(project: Project) -> dict[str, Any]:
    state = project.root / ".ralph" / project.file.stem / "state.json"
    try:
        return json.loads(state.read_text())["tasks"]["3"]["memory"]["jobs"]
    except (OSError, ValueError, KeyError):
        return {}


def _start(project: Project, emu: ServerlessEmulator) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ralph", "run", "--only", "3", project.file.name],
                            cwd=project.root, env={**os.environ, **_env(emu)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerlessEmulator]:
    pytest.importorskip("runpod", reason="the serverless extra: pip install -e '.[serverless]'")
    require_install()
    with ServerlessEmulator(tmp_path_factory.mktemp("serverless"), workers=3) as emulator:
        yield emulator


@pytest.fixture
def paused(emu: ServerlessEmulator) -> Iterator[ServerlessEmulator]:
    """The endpoint with its workers taking no job until the test says so."""
    emu.paused = True
    yield emu
    emu.paused = False


def test_check_and_the_plan_know_the_jobs_offline(tmp_path: Path) -> None:
    project = _project(tmp_path, "ep-offline", inputs={})
    check = project.cli("check", project.file.name)
    assert check.returncode == 2
    assert "LoadImage reads elena_face_ref.jpg, which a serverless worker has only if inputs sends it" in check.stdout
    project = _project(tmp_path / "ok", "ep-offline")
    check = project.cli("check", project.file.name)
    assert "serverless" not in check.stdout and "inputs" not in check.stdout, check.stdout
    plan = project.cli("run", "--dry-run", "--only", "3", project.file.name)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "serverless: 3 jobs on endpoint ep-offline, at most 3 at once" in plan.stdout
    assert "of worker time × $1.80/h = $" in plan.stdout


@pytest.mark.slow
def test_a_cfg_sweep_runs_as_concurrent_jobs_with_the_face_and_lands_one_image_per_variant(
        tmp_path: Path, emu: ServerlessEmulator) -> None:
    project = _project(tmp_path, emu.endpoint_id)
    result = project.cli("run", "--only", "3", project.file.name, env=_env(emu))
    assert result.returncode == 0, result.stdout + result.stderr
    assert emu.peak_running == 3, "the three jobs ran at once, one per worker"
    images = sorted((tmp_path / "output" / "runpod-quality-tests").rglob("*.png"))
    assert [p.name for p in images] == [f"elena_refiner_cfg={c}.png" for c in SWEEP["cfg"]]
    for path, cfg in zip(images, SWEEP["cfg"], strict=False):
        with Image.open(path) as image:
            assert image.size == (64, 64)
            assert json.loads(image.text["ralph"])["cfg"] == cfg  # type: ignore[attr-defined]  # a PNG
    task = parse_file(project.file)[0].task(3)
    assert task is not None and task.status == "DONE" and all(c.checked for c in task.criteria)
    state = json.loads((tmp_path / ".ralph" / project.file.stem / "state.json").read_text())
    cost = state["tasks"]["3"]["result"]["cost_usd"]
    seconds = sum(j["execution_s"] for j in _saved_jobs(project).values())
    assert cost == pytest.approx(seconds / 3600 * 1.8) and cost > 0


@pytest.mark.slow
def test_a_sweep_killed_mid_way_resumes_without_resubmitting_a_job(tmp_path: Path, paused: ServerlessEmulator) -> None:
    emu = paused
    project = _project(tmp_path, emu.endpoint_id, sweep={"cfg": [4.0, 6.0, 8.0]})
    before = len(emu.submitted)
    ralph = _start(project, emu)
    wait_for(lambda: len(_saved_jobs(project)) == 3 and all("job_id" in j for j in _saved_jobs(project).values()),
             120, "three job ids saved")
    ids = {j["job_id"] for j in _saved_jobs(project).values()}
    emu.paused = False
    wait_for(lambda: any(emu.jobs[i].status == "COMPLETED" for i in ids), 120, "a job to finish")
    ralph.send_signal(signal.SIGKILL)
    ralph.wait(30)
    again = project.cli("run", "--only", "3", project.file.name, env=_env(emu))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(emu.submitted) - before == 3, "nothing was submitted twice"
    assert {j["job_id"] for j in _saved_jobs(project).values()} == ids
    assert len(list((tmp_path / "output").rglob("*.png"))) == 3


@pytest.mark.slow
def test_ctrl_c_cancels_the_jobs(tmp_path: Path, paused: ServerlessEmulator) -> None:
    emu = paused
    project = _project(tmp_path, emu.endpoint_id, sweep={"cfg": [3.0, 3.5, 4.5]})
    ralph = _start(project, emu)
    wait_for(lambda: len(_saved_jobs(project)) == 3 and all("job_id" in j for j in _saved_jobs(project).values()),
             120, "three job ids saved")
    ralph.send_signal(signal.SIGINT)
    output, _ = ralph.communicate(timeout=60)
    assert ralph.returncode != 0
    ids = [j["job_id"] for j in _saved_jobs(project).values()]
    assert [emu.jobs[i].status for i in ids] == ["CANCELLED"] * 3, output
    assert "cancelled" in output


@pytest.mark.slow
def test_a_job_comfyui_refuses_fails_the_task_with_comfyuis_message(tmp_path: Path, emu: ServerlessEmulator) -> None:
    project = _project(tmp_path, emu.endpoint_id, sweep={}, overrides={**TINY, "checkpoint": "missing.safetensors"})
    result = project.cli("run", "--only", "3", project.file.name, env=_env(emu))
    assert result.returncode != 0
    text = project.file.read_text(encoding="utf-8")
    assert "ComfyUI validation failed" in result.stdout + text and "missing.safetensors" in result.stdout + text


@pytest.mark.slow
def test_an_endpoint_created_for_the_run_mounts_the_volume_and_is_deleted_afterwards(
        tmp_path: Path, emu: ServerlessEmulator) -> None:
    with RunPodEmulator(tmp_path / "runpod", api_key=emu.api_key) as rest:
        rest.serverless = emu  # the endpoints it creates get workers there
        volume = rest.create_volume("models", 50, "EU-RO-1")
        wanted = {"create": True, "gpu_pools": ["ADA_24"], "workers_max": 2, "volume": "models"}
        project = _project(tmp_path / "project", wanted, sweep={"cfg": [5.5, 6.5]}, concurrency=2)
        plan = project.cli("run", "--dry-run", "--only", "3", project.file.name)
        assert "serverless: 2 jobs on a new endpoint (ADA_24, up to 2 workers, deleted afterwards), at most 2 at once" \
            in plan.stdout, plan.stdout + plan.stderr
        result = project.cli("run", "--only", "3", project.file.name,
                             env={**_env(emu), "RUNPOD_API_BASE_URL": rest.url})
        assert result.returncode == 0, result.stdout + result.stderr
        [create] = rest.calls("POST", "/v2/serverless")
        body = create.body
        assert body["image"] == WORKER_IMAGE and body["networkVolumes"] == [volume.id]
        assert body["dataCenterIds"] == ["EU-RO-1"] and body["workers"] == {"min": 0, "max": 2}
        assert rest.endpoints() == [] and len(rest.calls("DELETE", "/v2/serverless/")) == 1
        assert rest.request_violations == [] and rest.response_violations == []
    assert len(list((tmp_path / "project" / "output").rglob("*.png"))) == 2


@pytest.mark.slow
def test_a_job_whose_result_expired_is_submitted_again_and_only_it(tmp_path: Path, paused: ServerlessEmulator) -> None:
    emu = paused
    project = _project(tmp_path, emu.endpoint_id, sweep={"cfg": [2.0, 2.5]})
    before = len(emu.submitted)
    ralph = _start(project, emu)
    wait_for(lambda: len(_saved_jobs(project)) == 2 and all("job_id" in j for j in _saved_jobs(project).values()),
             120, "two job ids saved")
    ralph.send_signal(signal.SIGKILL)
    ralph.wait(30)
    ids = [j["job_id"] for j in _saved_jobs(project).values()]
    emu.expire(ids[0])  # RunPod forgets it (results live 30 min)
    emu.paused = False
    again = project.cli("run", "--only", "3", project.file.name, env=_env(emu))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(emu.submitted) - before == 3, "the expired job once more, the other one not"
    assert ids[1] in {j["job_id"] for j in _saved_jobs(project).values()}
    assert "expired: submitted again" in " ".join(again.stdout.split())  # the console wraps long lines
    assert len(list((tmp_path / "output").rglob("*.png"))) == 2
