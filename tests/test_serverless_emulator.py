"""The serverless job emulator, driven by the real ``runpod`` SDK, its workers real ComfyUI servers."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.far.comfyui_server import refiner_graph, require_install
from tests.far.serverless_emulator import ServerlessEmulator
from tests.far.tiny_models import comfyui_home, ensure_models
from tests.waiting import wait_for

pytestmark = pytest.mark.slow
runpod = pytest.importorskip("runpod", reason="the serverless extra: pip install -e '.[serverless]'")
logging.getLogger().setLevel(logging.WARNING)  # the SDK's import sets INFO on the root logger


def face_image() -> dict[str, str]:
    face = ensure_models(comfyui_home()) / "input" / "elena_face_ref.jpg"
    return {"name": face.name, "image": base64.b64encode(face.read_bytes()).decode()}


def through(graph: dict[str, Any], class_type: str, **inputs: Any) -> dict[str, Any]:
    """``graph`` with a ``class_type`` node between the decoded image and SaveImage."""
    save = next(k for k, node in graph.items() if node["class_type"] == "SaveImage")
    graph["900"] = {"class_type": class_type, "inputs": {"images": graph[save]["inputs"]["images"], **inputs}}
    graph[save]["inputs"]["images"] = ["900", 0]
    return graph


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerlessEmulator]:
    require_install()
    with ServerlessEmulator(tmp_path_factory.mktemp("serverless"), workers=1) as emu:
        yield emu


@pytest.fixture
def endpoint(emulator: ServerlessEmulator) -> Any:
    runpod.api_key = emulator.api_key
    runpod.endpoint_url_base = emulator.base_url  # the SDK read RUNPOD_ENDPOINT_BASE_URL at its import
    return runpod.Endpoint(emulator.endpoint_id)


def finished(job: Any, timeout: float = 180) -> str:
    wait_for(lambda: job.status() in {"COMPLETED", "FAILED", "CANCELLED"}, timeout, "the job to finish")
    return job.status()


def test_a_job_runs_the_refiner_with_the_face_it_sends_and_returns_the_image(
        endpoint: Any, emulator: ServerlessEmulator) -> None:
    job = endpoint.run({"workflow": refiner_graph(), "images": [face_image()]})
    assert finished(job) == "COMPLETED"
    images = job.output()["images"]
    assert [i["type"] for i in images] == ["base64"]
    with Image.open(io.BytesIO(base64.b64decode(images[0]["data"]))) as image:
        assert image.size == (64, 64) and "prompt" in image.text  # type: ignore[attr-defined]  # a PNG
    assert emulator.cold_starts == 1
    health = endpoint.health()
    assert health["jobs"]["completed"] >= 1 and health["workers"]["idle"] == 1


def test_an_input_the_job_does_not_send_is_not_on_the_worker(endpoint: Any) -> None:
    graph = refiner_graph()
    graph["5"]["inputs"]["image"] = "someone_else.jpg"  # the LoadImage node
    job = endpoint.run({"workflow": graph, "images": [face_image()]})
    assert finished(job) == "FAILED"
    status = endpoint.rp_client.get(f"{endpoint.endpoint_id}/status/{job.job_id}")
    assert "ComfyUI validation failed" in status["error"] and "someone_else.jpg" in status["error"]


def test_a_node_that_raises_fails_the_job_with_comfyuis_message(endpoint: Any) -> None:
    job = endpoint.run({"workflow": through(refiner_graph(), "RalphFail", message="out of VRAM, pretend"),
                        "images": [face_image()]})
    assert finished(job) == "FAILED"
    error = endpoint.rp_client.get(f"{endpoint.endpoint_id}/status/{job.job_id}")["error"]
    assert error.strip() == ("Workflow execution error: Node Type: RalphFail, Node ID: 900, "
                             "Message: out of VRAM, pretend")


def test_a_cancelled_job_stops_its_prompt(endpoint: Any, emulator: ServerlessEmulator) -> None:
    job = endpoint.run({"workflow": through(refiner_graph(), "RalphSleep", seconds=120.0), "images": [face_image()]})
    wait_for(lambda: emulator.jobs[job.job_id].prompt_id is not None, 120, "the prompt to be queued")
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    quick = endpoint.run({"workflow": refiner_graph(seed=7), "images": [face_image()]})
    assert finished(quick, timeout=60) == "COMPLETED", "the interrupted prompt freed the worker"


def test_a_worker_killed_mid_job_is_replaced_and_the_job_retried(endpoint: Any, emulator: ServerlessEmulator) -> None:
    starts = emulator.cold_starts
    job = endpoint.run({"workflow": through(refiner_graph(seed=3), "RalphSleep", seconds=2.0),
                        "images": [face_image()]})
    wait_for(lambda: emulator.jobs[job.job_id].prompt_id is not None, 120, "the prompt to be queued")
    emulator.kill_worker(job.job_id)
    assert finished(job, timeout=240) == "COMPLETED"
    assert emulator.cold_starts == starts + 1 and endpoint.health()["jobs"]["retried"] >= 1


def test_an_expired_result_is_gone(endpoint: Any, emulator: ServerlessEmulator) -> None:
    job = endpoint.run({"workflow": refiner_graph(seed=5), "images": [face_image()]})
    assert finished(job) == "COMPLETED"
    emulator.expire(job.job_id)
    fresh = runpod.endpoint.runner.Job(endpoint.endpoint_id, job.job_id, endpoint.rp_client)
    with pytest.raises(Exception, match="404"):
        fresh.status()


def test_a_wrong_key_is_refused(emulator: ServerlessEmulator) -> None:
    runpod.endpoint_url_base = emulator.base_url
    with pytest.raises(RuntimeError, match="Unauthorized"):
        runpod.Endpoint(emulator.endpoint_id, api_key="wrong").health()
