"""ralph's ComfyUI client on a newer server: the jobs API, found by asking for it.

No newer ComfyUI can be installed here, so the far side is the loopback stand-in of
tests/far/comfyui_jobs_server.py, which serves the contract recorded from ComfyUI's sources
(tests/data/comfyui-jobs-contract.json) and has no /history or /queue: the client must find,
follow and cancel jobs through /api/jobs. The v0.3.75 path is tested against the real server in
tests/test_comfy_client.py; ``test_the_real_v0_3_75_has_no_jobs_api`` checks the detection there.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import httpx
import pytest
from ralph.handlers.comfyui.client import ComfyClient, ExecutionFailed, PromptInterrupted, PromptRejected, ServerGone

from tests.far.comfyui_jobs_server import IMAGE, JobsServer, contract_problems
from tests.far.comfyui_server import ComfyServer, comfyui_server  # noqa: F401
from tests.waiting import wait_for

GRAPH = {"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ralph"}}}


@pytest.fixture
def jobs_server():
    server = JobsServer()
    yield server
    server.close()


def _used_old_routes(server: JobsServer) -> list[str]:
    return [r for r in server.requests if r.split(" ")[1].split("?")[0] in ("/history", "/queue", "/interrupt")
            or r.split(" ")[1].startswith("/history/")]


def test_stand_in_answers_as_recorded(jobs_server: JobsServer) -> None:
    prompt_id = str(uuid.uuid4())
    with httpx.Client(base_url=jobs_server.url) as http:
        assert http.post("/prompt", json={"prompt": GRAPH, "prompt_id": prompt_id}).status_code == 200
        answers = [("GET /api/jobs/{job_id}", http.get(f"/api/jobs/{prompt_id}")),
                   ("GET /api/jobs", http.get("/api/jobs", params={"limit": 1})),
                   ("GET /api/jobs/{job_id}", http.get(f"/api/jobs/{uuid.uuid4()}"))]
        wait_for(lambda: http.get(f"/api/jobs/{prompt_id}").json()["status"] == "completed", what="the job to end")
        answers.append(("GET /api/jobs/{job_id}", http.get(f"/api/jobs/{prompt_id}")))
        answers.append(("POST /api/jobs/{job_id}/cancel", http.post(f"/api/jobs/{prompt_id}/cancel")))
    for route, r in answers:
        assert contract_problems(route, r.status_code, r.json()) == [], route


def test_run_follows_the_job_through_the_jobs_api(jobs_server: JobsServer, tmp_path: Path) -> None:
    with ComfyClient(jobs_server.url, quiet_s=0.05) as client:
        assert client.has_jobs_api()
        result = client.run(GRAPH, dest=tmp_path)
        files = client.download(result, tmp_path)
        assert client.find(result.prompt_id) == "success"
        assert client.find(str(uuid.uuid4())) is None  # unknown: the jobs API's 404, not an empty {}
    assert [(f.node_id, f.filename) for f in result.outputs] == [("9", f"{result.prompt_id[:8]}_00001_.png")]
    assert [f.read_bytes() for f in files] == [IMAGE]
    assert result.server_seconds is not None and result.server_seconds >= 0
    assert f"GET /api/jobs/{result.prompt_id}" in jobs_server.requests
    assert _used_old_routes(jobs_server) == []


def test_failure_is_read_from_the_job(jobs_server: JobsServer) -> None:
    graph = {**GRAPH, "7": {"class_type": "Fail", "inputs": {}}}
    with ComfyClient(jobs_server.url, quiet_s=0.05) as client, pytest.raises(ExecutionFailed) as err:
        client.run(graph)
    assert str(err.value) == "node 7 (Fail) failed: RuntimeError: stand-in failure"


@pytest.mark.parametrize("while_", ["running", "pending"])
def test_interrupt_cancels_through_the_jobs_api(jobs_server: JobsServer, while_: str) -> None:
    jobs_server.run_s = 60.0
    ahead, ours = str(uuid.uuid4()), str(uuid.uuid4())
    with ComfyClient(jobs_server.url, quiet_s=0.05) as client:
        if while_ == "pending":
            client.submit(GRAPH, ahead)  # holds the queue, so ours waits
        outcome: list[BaseException] = []

        def follow() -> None:
            try:
                client.run(GRAPH, prompt_id=ours)
            except BaseException as error:  # noqa: BLE001 - handed to the test
                outcome.append(error)

        thread = threading.Thread(target=follow)
        thread.start()
        with ComfyClient(jobs_server.url) as other:
            wait_for(lambda: other.find(ours) == while_, what=f"the prompt to be {while_}")
            other.interrupt(ours)
            thread.join(timeout=30)
            assert not thread.is_alive()
            # Running: it ends cancelled; pending: it leaves the queue and the server forgets it.
            assert other.find(ours) == ("error" if while_ == "running" else None)
            assert other.find(ahead) == (None if while_ == "running" else "running")
    assert len(outcome) == 1
    # A dequeued prompt is gone for good, as on a real server: the follower says so.
    assert isinstance(outcome[0], PromptInterrupted if while_ == "running" else ServerGone)
    assert f"POST /api/jobs/{ours}/cancel" in jobs_server.requests
    assert _used_old_routes(jobs_server) == []


def test_a_non_canonical_prompt_id_is_refused_as_recorded(jobs_server: JobsServer) -> None:
    with ComfyClient(jobs_server.url) as client, pytest.raises(PromptRejected) as err:
        client.submit(GRAPH, str(uuid.uuid4()).upper())
    assert "prompt_id must be a valid UUID" in str(err.value)


@pytest.mark.slow
def test_the_real_v0_3_75_has_no_jobs_api(comfyui_server: ComfyServer) -> None:
    with ComfyClient(comfyui_server.url) as client:
        assert not client.has_jobs_api()
