"""ralph's ComfyUI client against a real ComfyUI (v0.3.75, CPU, tiny random models).

The far side is real: the server of tests/far/comfyui_server.py, with a loopback TCP relay
where a test needs the network to misbehave, and test nodes (tests/far/comfy_nodes) that
sleep or report chosen output names.
"""
from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from ralph.handlers.comfyui.client import (
    ComfyClient,
    ExecutionFailed,
    OutputFile,
    PromptInterrupted,
    PromptRejected,
    ServerGone,
    Stalled,
    UnsafeOutputName,
    UploadTooLarge,
    local_path,
)

from tests.far.comfyui_server import ComfyServer, TcpRelay, comfyui_server, refiner_graph, require_install, start_server  # noqa: F401
from tests.waiting import wait_for

slow = pytest.mark.slow


def _slow_graph(seconds: float, prefix: str) -> dict:
    """The refiner graph with a RalphSleep between decode and save: a prompt that is
    surely running while the test acts on it."""
    graph = refiner_graph(prefix=prefix)
    graph["15"] = {"class_type": "RalphSleep", "inputs": {"images": ["13", 0], "seconds": seconds}}
    graph["14"]["inputs"]["images"] = ["15", 0]
    return graph


def _outputs(server: ComfyServer, prefix: str) -> list[Path]:
    return sorted(server.output_dir.glob(f"{prefix}_*.png"))


def _queue_empty(server: ComfyServer) -> bool:
    queue = httpx.get(f"{server.url}/queue", timeout=30).json()
    return not queue["queue_running"] and not queue["queue_pending"]


def _once_running(url: str, action: Callable[[], object]) -> threading.Thread:
    """Call ``action`` in a thread as soon as the server at ``url`` runs a prompt (not after a
    fixed delay, which a loaded machine may spend before the prompt even starts)."""

    def watch() -> None:
        wait_for(lambda: httpx.get(f"{url}/queue", timeout=30).json()["queue_running"], what="a prompt to run")
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@slow
def test_example_workflow_runs_and_its_image_lands_on_disk(comfyui_server: ComfyServer, tmp_path: Path) -> None:
    progress: list[tuple[str, int, int]] = []
    with ComfyClient(comfyui_server.url) as client:
        result = client.run(refiner_graph(seed=1), on_progress=lambda *p: progress.append(p))
        files = client.download(result, tmp_path / "runpod-quality-tests")
    assert [(f.node_id, f.subfolder) for f in result.outputs] == [("14", "quality_tests")]
    assert files == [tmp_path / "runpod-quality-tests" / "quality_tests" / result.outputs[0].filename]
    served = comfyui_server.output_dir / "quality_tests" / result.outputs[0].filename
    assert files[0].read_bytes() == served.read_bytes()
    assert ("11", 3, 3) in progress and ("12", 2, 2) in progress  # both samplers, to the last step
    assert result.server_seconds is not None and result.server_seconds > 0


@slow
def test_outputs_are_fetched_as_their_node_reports_them(comfyui_server: ComfyServer, tmp_path: Path) -> None:
    # With dest, run() fetches each saved file on the node's `executed` event and returns on
    # `execution_success`, before ComfyUI's post-prompt cleanup (bench/comfy_overhead.py).
    prefix = f"early-{uuid.uuid4().hex[:8]}"
    with ComfyClient(comfyui_server.url) as client:
        result = client.run(refiner_graph(seed=7, prefix=prefix), dest=tmp_path)
        served = _outputs(comfyui_server, prefix)
        assert [p.read_bytes() for p in result.fetched.values()] == [p.read_bytes() for p in served]
        for p in served:
            p.unlink()  # download() must not ask /view again: it would now get a 404
        files = client.download(result, tmp_path)
    assert files == list(result.fetched.values()) and all(f.is_file() for f in files)
    assert [(f.node_id, f.filename) for f in result.outputs] == [("14", served[0].name)]
    assert result.server_seconds is not None and result.server_seconds > 0


@slow
def test_a_prompt_failing_after_an_output_leaves_no_fetched_file(comfyui_server: ComfyServer, tmp_path: Path) -> None:
    prefix = f"half-{uuid.uuid4().hex[:8]}"
    graph = refiner_graph(prefix=prefix)
    # Node 14 saves first (an output node as soon as its input is ready); a second branch fails later.
    graph["15"] = {"class_type": "RalphSleep", "inputs": {"images": ["13", 0], "seconds": 0.5}}
    graph["16"] = {"class_type": "RalphFail", "inputs": {"images": ["15", 0], "message": "disk full"}}
    graph["17"] = {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": f"{prefix}-b"}}
    with ComfyClient(comfyui_server.url) as client, pytest.raises(ExecutionFailed, match="node 16"):
        client.run(graph, dest=tmp_path)
    assert len(_outputs(comfyui_server, prefix)) == 1  # the first output was saved, and fetched…
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # …then removed with the failure


@slow
def test_validation_error_is_reported_per_node_and_input(comfyui_server: ComfyServer) -> None:
    graph = refiner_graph()
    graph["11"]["inputs"]["cfg"] = -1.0
    graph["1"]["inputs"]["ckpt_name"] = "missing.safetensors"
    with ComfyClient(comfyui_server.url) as client, pytest.raises(PromptRejected) as err:
        client.run(graph)
    text = str(err.value)
    assert "node 11 (KSampler) input cfg: Value -1.0 smaller than min of 0.0" in text
    assert ("node 1 (CheckpointLoaderSimple) input ckpt_name: Value not in list: 'missing.safetensors' "
            "not in ['bigLove_xl1.safetensors']") in text


@slow
def test_object_info_for_some_classes_is_the_servers_own_entries(comfyui_server: ComfyServer) -> None:
    with ComfyClient(comfyui_server.url) as client:
        every = client.object_info()
        some = client.object_info({"KSampler", "ApplyInstantID", "NoSuchNode"})
    assert some == {name: every[name] for name in ("KSampler", "ApplyInstantID")}, "a class it lacks is absent"


@slow
def test_unknown_node_type_is_reported(comfyui_server: ComfyServer) -> None:
    graph = refiner_graph()
    graph["9"]["class_type"] = "ApplyInstantIDAdvanced"
    with ComfyClient(comfyui_server.url) as client, pytest.raises(PromptRejected) as err:
        client.run(graph)
    assert str(err.value) == "Cannot execute because node ApplyInstantIDAdvanced does not exist (Node ID '#9')"


@slow
def test_failure_while_running_names_the_node(comfyui_server: ComfyServer) -> None:
    graph = refiner_graph()
    graph["15"] = {"class_type": "RalphFail", "inputs": {"images": ["13", 0], "message": "no space left on device"}}
    graph["14"]["inputs"]["images"] = ["15", 0]
    prompt_id = str(uuid.uuid4())
    with ComfyClient(comfyui_server.url) as client:
        with pytest.raises(ExecutionFailed) as err:
            client.run(graph, prompt_id=prompt_id)
        assert str(err.value) == "node 15 (RalphFail) failed: RuntimeError: no space left on device"
        # The same reason when only history is left to read (a resumed run).
        with pytest.raises(ExecutionFailed) as again:
            client.run(graph, prompt_id=prompt_id)
        assert str(again.value) == str(err.value)


@slow
def test_partly_valid_prompt_is_a_failure_and_is_cancelled(comfyui_server: ComfyServer) -> None:
    # One valid output (slowed down) and one invalid: ComfyUI answers 200 with node_errors
    # and would run the valid half anyway.
    prefix = f"partial-{uuid.uuid4().hex[:8]}"
    graph = _slow_graph(2.0, prefix)
    graph["16"] = {"class_type": "KSampler", "inputs": {**graph["12"]["inputs"], "cfg": 500.0}}
    graph["17"] = {"class_type": "VAEDecode", "inputs": {"samples": ["16", 0], "vae": ["1", 2]}}
    graph["18"] = {"class_type": "SaveImage", "inputs": {"images": ["17", 0], "filename_prefix": prefix + "-b"}}
    with ComfyClient(comfyui_server.url) as client:
        with pytest.raises(PromptRejected) as err:
            client.run(graph)
        assert "node 16 (KSampler) input cfg: Value 500.0 bigger than max of 100.0" in str(err.value)
        # Had the valid half been left to run, its image would be saved by the time the queue empties.
        wait_for(lambda: _queue_empty(comfyui_server), what="ComfyUI's queue to empty")
    assert _outputs(comfyui_server, prefix) == []


@pytest.mark.parametrize("reconnect", [True, False], ids=["socket-reconnects", "socket-refused"])
@slow
def test_dropped_socket_still_sees_completion(comfyui_server: ComfyServer, tmp_path: Path, reconnect: bool) -> None:
    relay = TcpRelay(comfyui_server.port)
    prefix = f"drop-{uuid.uuid4().hex[:8]}"
    severed: list[int] = []

    def cut() -> None:
        relay.refuse_websockets = not reconnect
        severed.append(relay.sever())

    watcher = _once_running(comfyui_server.url, cut)
    try:
        with ComfyClient(relay.url, quiet_s=0.5) as client:
            result = client.run(_slow_graph(2.5, prefix))
            files = client.download(result, tmp_path)
    finally:
        watcher.join(timeout=60)
        relay.close()
    assert severed == [1]  # the client's one socket was cut mid-run
    assert (relay.refused > 0) is (not reconnect)
    assert [f.name for f in files] == [p.name for p in _outputs(comfyui_server, prefix)]


@pytest.mark.parametrize("filename,subfolder", [
    ("../escape.png", ""), ("/tmp/escape.png", ""), ("escape.png", "../.."), ("escape.png", "/etc"),
    ("..\\escape.png", ""),
])
@slow
def test_hostile_output_name_stays_inside(comfyui_server: ComfyServer, tmp_path: Path,
                                          filename: str, subfolder: str) -> None:
    graph = refiner_graph()
    graph["14"] = {"class_type": "RalphReportOutput",
                   "inputs": {"images": ["13", 0], "filename": filename, "subfolder": subfolder}}
    dest = tmp_path / "a" / "b" / "dest"
    with ComfyClient(comfyui_server.url) as client:
        result = client.run(graph)
        assert result.outputs[0].filename == filename  # the server really said it
        with pytest.raises(UnsafeOutputName):
            client.download(result, dest)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_local_path_refuses_symlinked_escape(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path)
    f = OutputFile("14", "images", "x.png", "link", "output")
    with pytest.raises(UnsafeOutputName):
        local_path(dest, f)
    ok = OutputFile("14", "images", "x_00001_.png", "quality_tests/a", "output")
    assert local_path(dest, ok) == dest.resolve() / "quality_tests" / "a" / "x_00001_.png"


@slow
def test_interrupt_stops_only_that_prompt(comfyui_server: ComfyServer) -> None:
    prompt_id = str(uuid.uuid4())
    with ComfyClient(comfyui_server.url) as client:
        interrupting = _once_running(comfyui_server.url, lambda: client.interrupt(prompt_id))
        with pytest.raises(PromptInterrupted):
            client.run(_slow_graph(120.0, "interrupted"), prompt_id=prompt_id)
        interrupting.join(timeout=60)  # interrupt() also clears the queue: let it finish with the client
        assert client.find(prompt_id) == "error"


@slow
def test_resumed_run_finds_its_prompt_instead_of_resubmitting(comfyui_server: ComfyServer) -> None:
    prefix = f"resume-{uuid.uuid4().hex[:8]}"
    graph = _slow_graph(2.0, prefix)
    prompt_id = str(uuid.uuid4())
    first: dict = {}
    # a's socket is taken over by b (same client id), so a finishes by polling: keep it short.
    with ComfyClient(comfyui_server.url, quiet_s=0.5) as a, ComfyClient(comfyui_server.url) as b:
        assert b.find(prompt_id) is None
        t = threading.Thread(target=lambda: first.update(result=a.run(graph, prompt_id=prompt_id)))
        t.start()
        wait_for(lambda: b.find(prompt_id) == "running", what="a's prompt to run")
        resumed = b.run(graph, prompt_id=prompt_id)  # attaches to the running prompt
        t.join()
        again = b.run(graph, prompt_id=prompt_id)  # finished: answered from history
    assert resumed.outputs == first["result"].outputs == again.outputs
    assert len(_outputs(comfyui_server, prefix)) == 1


@slow
def test_stall_timeout_instead_of_a_fixed_one(comfyui_server: ComfyServer) -> None:
    prompt_id = str(uuid.uuid4())
    with ComfyClient(comfyui_server.url, stall_timeout=1.0, quiet_s=0.3) as client:
        started = time.monotonic()
        try:
            with pytest.raises(Stalled, match="no progress for 1 s"):
                client.run(_slow_graph(120.0, "stalled"), prompt_id=prompt_id)
        finally:
            client.interrupt(prompt_id)
    assert time.monotonic() - started < 60, "it waited for the prompt, not for its stall timeout"


@slow
def test_upload_checks_size_first_and_lands_in_input(comfyui_server: ComfyServer, tmp_path: Path) -> None:
    face = comfyui_server.input_dir / "elena_face_ref.jpg"
    with ComfyClient(comfyui_server.url) as client:
        name = client.upload_image(_copy(face, tmp_path / "face-up.jpg"), subfolder="refs")
        assert name == "refs/face-up.jpg"
        assert (comfyui_server.input_dir / "refs" / "face-up.jpg").read_bytes() == face.read_bytes()
        graph = refiner_graph(prefix="uploaded")
        graph["5"]["inputs"]["image"] = name
        assert client.run(graph).outputs
    with ComfyClient(comfyui_server.url, max_upload_bytes=70_000) as small:
        with pytest.raises(UploadTooLarge, match="face-big.jpg"):
            small.upload_image(_copy(face, tmp_path / "face-big.jpg", pad=10_000))
    assert not (comfyui_server.input_dir / "face-big.jpg").exists()


def _copy(src: Path, dst: Path, pad: int = 0) -> Path:
    dst.write_bytes(src.read_bytes() + b"\0" * pad)
    return dst


@slow
def test_server_killed_mid_run_fails_clearly(tmp_path: Path) -> None:
    server = start_server(tmp_path / "base", require_install())
    try:
        prompt_id = str(uuid.uuid4())
        _once_running(server.url, server.kill)
        started = time.monotonic()
        with ComfyClient(server.url, quiet_s=0.5, gone_timeout=2.0) as client, pytest.raises(ServerGone) as err:
            client.run(_slow_graph(120.0, "killed"), prompt_id=prompt_id)
        assert time.monotonic() - started < 60, "it waited for the prompt, not for the server's end"
        assert server.url in str(err.value) and prompt_id in str(err.value)
    finally:
        server.stop()


def test_an_https_server_is_still_verified(tmp_path: Path) -> None:
    # Plain http skips building a TLS context (0.1-0.3 s); https must still check the certificate.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)

    class Stats(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"system": {"comfyui_version": "0.3.75"}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ComfyClient(f"https://127.0.0.1:{server.server_address[1]}", gone_timeout=1) as client:
            with pytest.raises(ServerGone, match="CERTIFICATE_VERIFY_FAILED"):
                client.system_stats()
    finally:
        server.shutdown()
        server.server_close()
