"""``comfyui.setup`` through ralph's runner, on a "pod" that is a real sshd on loopback.

RALPH-001's task 2 runs verbatim (its criteria checked by the handler); task 1 is a stand-in
that holds the sshd as the run's pod, so the handler reaches it through pods/session like a
real pod. Model files are real files: uploaded from disk, or downloaded by the machine (curl)
from an ``http.server`` on 127.0.0.1. Fast tests use a stand-in ComfyUI (a ``main.py`` that
answers /system_stats and, like ComfyUI, dies without torch) with a stand-in torch package; the
slow test runs the real test ComfyUI (v0.3.75, CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ralph.handlers.comfyui import run, service, setup
from ralph.handlers.comfyui.nodes import custom_nodes, pip_pins
from ralph.handlers.docs import SessionDoc
from ralph.handlers.facts import ComfyServer, MachineHandle
from ralph.handlers.machines import session
from ralph.handlers.machines.forwarding import forward
from ralph.handlers.machines.ssh import SshMachine, SshTarget
from rich.console import Console

from ralph.console import ConsoleReporter
from ralph.context import Context
from ralph.handler import Evidence, Handler, Param, Result, criterion
from ralph.measures import UPLOAD_SPEED, Measures
from ralph.parser import parse_file
from ralph.plan import make_plan
from ralph.runner import Runner, RunSummary
from ralph.state import RunState
from tests.far import tiny_models
from tests.far.comfyui_server import free_port, require_install
from tests.far.git_remotes import Remotes, git, make_remotes
from tests.far.sshd import SshServer
from tests.repo_files import EXAMPLE

TASK2 = [
    "ComfyUI installé et running",
    "torch >= 2.4.0",
    "BigLove XL uploadé",
    "Elena LoRA uploadé",
    "InstantID models téléchargés",
    "InsightFace antelopev2 models téléchargés",
    "Face reference uploadée",
]

STAND_IN_MAIN = '''
import argparse, http.server, json, sys
import torch  # as ComfyUI does: no torch, no server
ap = argparse.ArgumentParser()
ap.add_argument("--listen"); ap.add_argument("--port", type=int)
args, _ = ap.parse_known_args()
class Stats(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path != "/system_stats":
            self.send_error(404); return
        body = json.dumps({"system": {"comfyui_version": "0.0.0-stand-in", "pytorch_version": torch.__version__,
                                      "argv": sys.argv}, "devices": [{"name": "cpu"}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer((args.listen, args.port), Stats).serve_forever()
'''


class HoldPod(Handler):
    """Test stand-in for runpod.create: holds the given sshd as the run's pod."""

    name = "hold"
    provides = (MachineHandle,)
    params = {"pod": Param(dict, help="a MachineHandle's record")}

    def run(self, ctx: Context) -> Result:
        ctx.publish(MachineHandle(**ctx.params["pod"]))
        return Result(summary="holding the test sshd")

    @criterion(r"pod cree|ssh accessible")
    def stand_in(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(True, "a loopback sshd stands in for the pod")


# -- far sides ------------------------------------------------------------------------------------
class _Files(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def files_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, served folder, paths requested) of a plain HTTP file server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []
    handler = type("Files", (_Files,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    server.shutdown()
    server.server_close()


def fake_torch(folder: Path, version: str) -> Path:
    """A python that imports a stand-in ``torch`` of ``version`` (the pod's python, emulated)."""
    site = folder / "site"
    (site / "torch").mkdir(parents=True, exist_ok=True)
    (site / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return python


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Pod:
    """The sshd as a pod, a workspace on it, and a project (task file + ralph.yaml) here."""

    sshd: SshServer
    root: Path
    workspace: Path
    port: int
    handle: session.MachineHandle
    file: Path = field(init=False)
    output: str = ""

    def __post_init__(self) -> None:
        self.file = self.root / "project" / "RALPH-001-grain-reduction.md"
        self.file.parent.mkdir(parents=True, exist_ok=True)

    def configure(self, params: dict[str, Any]) -> None:
        params = {"workspace": str(self.workspace), "port": self.port, **params}
        config = {"handlers": {"hold": "tests.test_comfyui_setup:HoldPod"},
                  "tasks": {1: {"handler": "hold", "params": {"pod": self.handle.record()}},
                            2: {"handler": "comfyui.setup", "params": params}}}
        (self.file.parent / "ralph.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        # Tasks 1 and 2 verbatim (all PENDING again), the port the test server uses.
        example = EXAMPLE.read_text("utf-8")
        text = example[: example.index("### 3.")] + example[example.index("## Constraints"):]
        self.file.write_text(text.replace("(port 8188)", f"(port {self.port})"), encoding="utf-8")

    def run(self, params: dict[str, Any]) -> RunSummary:
        self.configure(params)
        out = io.StringIO()
        summary = Runner(self.file, ConsoleReporter(Console(file=out, width=200, color_system=None)),
                         retry_wait=0).run()
        self.output = out.getvalue()
        return summary

    def result(self) -> dict[str, Any]:
        state = json.loads((self.file.parent / ".ralph" / self.file.stem / "state.json").read_text("utf-8"))
        return state["tasks"]["2"]

    def status(self) -> str:
        return parse_file(self.file)[0].task(2).status

    def after_setup(self, params: dict[str, Any]) -> Context:
        """What task 3 would see after this run: the facts setup published, task 2's record."""
        state = RunState(self.file.parent / ".ralph" / self.file.stem)
        file = parse_file(self.file)[0]
        task = dataclasses.replace(file.task(2), number=3)
        return Context(file, state.resources, self.file.parent, state.directory, "test", reporter=None,
                       events=None, task=task, params=params, memory=state.memory(3),
                       records=state.records())

    def provider(self) -> SshMachine:
        return SshMachine(SshTarget(self.sshd.host, self.sshd.port, self.sshd.client_key, user=self.sshd.user),
                           known_hosts=self.root / "kh-test")


def verdicts(summary: RunSummary) -> dict[str, Evidence]:
    outcome = next(o for o in summary.outcomes if o.number == 2)
    return {start: next(v.evidence for v in outcome.verdicts if v.criterion.startswith(start)) for start in TASK2}


@pytest.fixture
def pod(sshd: SshServer, tmp_path: Path) -> Iterator[Pod]:
    workspace = sshd.start_dir / "workspace"
    handle = session.MachineHandle(
        id="pod-setup-test", name="ralph-test", host=sshd.host, port=sshd.port, user=sshd.user,
        key_file=str(sshd.client_key), known_hosts=str(tmp_path / "known_hosts"), workspace=str(sshd.start_dir),
        state_base=str(sshd.start_dir / "deadman"), heartbeat_interval_s=30.0)
    p = Pod(sshd, tmp_path, workspace, free_port(), handle)
    yield p
    session.detach_all()
    with p.provider() as ssh:
        service.stop_service(ssh, handle.services_dir, grace=5)
    pid_file = sshd.start_dir / ".ralph" / "services" / "comfyui.pid"  # belt and braces: never leave a server behind
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


@pytest.fixture
def stand_in_comfyui(tmp_path: Path) -> Path:
    """A ComfyUI "release" for install_command to copy: main.py is the stand-in server."""
    release = tmp_path / "comfyui-release"
    write(release / "main.py", STAND_IN_MAIN.encode())
    return release


@pytest.fixture
def models(tmp_path: Path, files_server: tuple[str, Path, list[str]]) -> dict[str, Any]:
    """Real files: three on this machine's disk, four served over HTTP for the machine to fetch."""
    url, served, _ = files_server
    disk = tmp_path / "disk"
    checkpoint = write(disk / "bigLove_xl1.safetensors", os.urandom(5 * 1024 * 1024 + 3))
    lora = write(disk / "elena_v4_cloud.safetensors", os.urandom(700_001))
    face = write(disk / "elena_face_ref.jpg", os.urandom(50_000))
    ip = write(served / "ip-adapter.bin", os.urandom(1_200_000))
    write(served / "cn" / "instantid_controlnet.safetensors", os.urandom(900_000))
    onnx = [write(served / "antelopev2" / n, os.urandom(100_000 + i))
            for i, n in enumerate(("scrfd_10g_bnkps.onnx", "glintr100.onnx"))]
    return {
        "models": {
            "checkpoints": [{"path": str(checkpoint), "sha256": sha(checkpoint.read_bytes())}],
            "loras": [{"path": str(lora)}],
            "instantid": [{"url": f"{url}/ip-adapter.bin", "sha256": sha(ip.read_bytes()), "size": ip.stat().st_size}],
            "controlnet": [{"url": f"{url}/cn/instantid_controlnet.safetensors"}],
            "antelopev2": [{"url": f"{url}/antelopev2/{p.name}"} for p in onnx],
        },
        "face_reference": str(face),
    }


def base_params(tmp_path: Path, release: Path, torch_version: str = "2.14.1+cu124") -> dict[str, Any]:
    return {"python": str(fake_torch(tmp_path / "pypod", torch_version)),
            "install_command": f"cp -r {release} {{dir}}", "start_timeout": 30}


def placed(pod: Pod, folder: str, name: str) -> Path:
    return pod.workspace / "ComfyUI" / folder / name


# -- tests --------------------------------------------------------------------------------------
def test_setup_places_every_file_starts_comfyui_and_a_rerun_skips_everything(
        pod: Pod, models: dict[str, Any], stand_in_comfyui: Path, files_server: Any, tmp_path: Path) -> None:
    _, served, requests = files_server
    params = {**base_params(tmp_path, stand_in_comfyui), **models}
    summary = pod.run(params)
    found = verdicts(summary)
    assert all(e.verified is True for e in found.values()), {k: e.detail for k, e in found.items()}
    assert pod.status() == "DONE"
    assert f"ComfyUI 0.0.0-stand-in at {pod.workspace}/ComfyUI answered /system_stats on 127.0.0.1:{pod.port}" \
        in found["ComfyUI installé et running"].detail
    assert found["torch >= 2.4.0"].detail.startswith("torch 2.14.1+cu124 >= 2.4.0")
    assert "ip-adapter.bin in" in found["InstantID models téléchargés"].detail
    assert "instantid_controlnet.safetensors in" in found["InstantID models téléchargés"].detail
    # The bytes really are where ComfyUI looks for them.
    sources = {
        placed(pod, "models/checkpoints", "bigLove_xl1.safetensors"): Path(models["models"]["checkpoints"][0]["path"]),
        placed(pod, "models/loras", "elena_v4_cloud.safetensors"): Path(models["models"]["loras"][0]["path"]),
        placed(pod, "input", "elena_face_ref.jpg"): Path(models["face_reference"]),
        placed(pod, "models/instantid", "ip-adapter.bin"): served / "ip-adapter.bin",
        placed(pod, "models/controlnet", "instantid_controlnet.safetensors"):
            served / "cn" / "instantid_controlnet.safetensors",
        placed(pod, "models/insightface/models/antelopev2", "glintr100.onnx"): served / "antelopev2" / "glintr100.onnx",
        placed(pod, "models/insightface/models/antelopev2", "scrfd_10g_bnkps.onnx"):
            served / "antelopev2" / "scrfd_10g_bnkps.onnx",
    }
    for dest, src in sources.items():
        assert dest.read_bytes() == src.read_bytes(), dest
    first = pod.result()["result"]["data"]
    assert sum(f["bytes_sent"] for f in first["files"]) >= 5 * 1024 * 1024 + 700_001 + 50_000
    speed = Measures().get(UPLOAD_SPEED)  # the checkpoint's upload, remembered for the next estimate
    assert speed is not None and speed.value > 0 and "bigLove_xl1.safetensors" in speed.detail
    assert first["install"] == {"installed": True, "found": False, "skipped": False, "pinned": None,
                                "commit": "", "tag": ""}, "install_command: nothing pinned, not a git checkout"
    assert first["service"]["started"] is True
    assert len(requests) == 4
    markers = sorted(p.name for p in (pod.workspace / ".ralph" / "setup").iterdir())
    assert "install.json" in markers and "torch.json" in markers and len(markers) == 2 + 7
    stamps = {d: (d.stat().st_ino, d.stat().st_mtime_ns) for d in sources}

    again = pod.run(params)
    assert all(e.verified is True for e in verdicts(again).values())
    second = pod.result()["result"]["data"]
    assert all(f["skipped"] and f["bytes_sent"] == 0 for f in second["files"]), second["files"]
    assert second["install"]["skipped"] and second["torch"]["skipped"]
    assert second["service"]["started"] is False and second["service"]["pid"] == first["service"]["pid"]
    assert len(requests) == 4, "nothing was downloaded again"
    assert {d: (d.stat().st_ino, d.stat().st_mtime_ns) for d in sources} == stamps, "no file was rewritten"
    assert "7 files (7 already done, 0 bytes sent)" in pod.result()["result"]["summary"]


def test_a_later_experiment_on_the_same_workspace_links_its_models_from_the_cache(
        pod: Pod, models: dict[str, Any], stand_in_comfyui: Path, tmp_path: Path) -> None:
    """The workspace on a network volume outlives the pod: the next experiment's files, whatever
    their names, come from the content-hash cache there — 0 bytes cross the link."""
    params = {**base_params(tmp_path, stand_in_comfyui), **models}
    pod.run(params)
    checkpoint = Path(models["models"]["checkpoints"][0]["path"])
    renamed = {**models["models"], "checkpoints": [{"path": str(checkpoint), "name": "experiment2.safetensors"}]}
    summary = pod.run({**params, "models": renamed})
    assert all(e.verified is True for e in verdicts(summary).values())
    [linked] = [f for f in pod.result()["result"]["data"]["files"] if f["name"] == "experiment2.safetensors"]
    assert (linked["how"], linked["bytes_sent"]) == ("linked from the model cache", 0)
    copy = placed(pod, "models/checkpoints", "experiment2.safetensors")
    original = placed(pod, "models/checkpoints", "bigLove_xl1.safetensors")
    assert copy.read_bytes() == checkpoint.read_bytes() and copy.stat().st_ino == original.stat().st_ino


def test_comfyui_run_reaches_comfyui_on_the_port_setup_started_it_on(
        pod: Pod, stand_in_comfyui: Path, tmp_path: Path) -> None:
    assert pod.port != service.DEFAULT_PORT
    pod.run(base_params(tmp_path, stand_in_comfyui))  # no models: their criteria go to review
    assert pod.result()["result"]["data"]["service"]["port"] == pod.port, pod.output
    ctx = pod.after_setup({"server": None})  # the example's task 3, comfyui.run
    server = ctx.fact(ComfyServer)  # the fact setup published
    assert server is not None and (server.port, server.machine) == (pod.port, pod.handle.id)
    assert server.folder == f"{pod.workspace}/ComfyUI"
    with run.server_url(ctx) as url:
        stats = httpx.get(f"{url}/system_stats", timeout=30).json()
    assert stats["system"]["comfyui_version"] == "0.0.0-stand-in"
    assert stats["system"]["argv"][-2:] == ["--port", str(pod.port)]


def test_changed_sha256_reruns_only_that_step_and_a_wrong_one_fails_clearly(
        pod: Pod, models: dict[str, Any], stand_in_comfyui: Path, files_server: Any, tmp_path: Path) -> None:
    _, served, requests = files_server
    params = {**base_params(tmp_path, stand_in_comfyui), **models}
    pod.run(params)
    assert pod.status() == "DONE" and len(requests) == 4
    controlnet = served / "cn" / "instantid_controlnet.safetensors"
    entry = params["models"]["controlnet"][0]

    entry["sha256"] = sha(controlnet.read_bytes())  # now pinned: the step reruns, checks, keeps the file
    pod.run(params)
    files = {f["name"]: f for f in pod.result()["result"]["data"]["files"]}
    assert pod.status() == "DONE"
    assert not files["instantid_controlnet.safetensors"]["skipped"]
    assert files["instantid_controlnet.safetensors"]["how"] == "already there"
    assert [n for n, f in files.items() if not f["skipped"]] == ["instantid_controlnet.safetensors"]
    assert len(requests) == 4, "a file that matches the new sha256 is not fetched again"

    good = placed(pod, "models/controlnet", "instantid_controlnet.safetensors").read_bytes()
    entry["sha256"] = "0" * 64
    pod.run(params)
    record = pod.result()
    assert pod.status() == "FAILED"
    assert f"the sha256 given for it is {'0' * 64}" in record["error"]
    assert sha(good) in record["error"], "the message names the sha256 the file really has"
    assert len(requests) == 5, "a file not matching the new sha256 is fetched again"
    assert placed(pod, "models/controlnet", "instantid_controlnet.safetensors").read_bytes() == good
    assert not list(placed(pod, "models/controlnet", "").glob(".*ralph-part")), "the bad download was removed"

    entry["sha256"] = sha(good)
    params["models"]["loras"][0]["sha256"] = "f" * 64  # a local file that is not what params say
    pod.run(params)
    record = pod.result()
    assert pod.status() == "FAILED"
    assert f"elena_v4_cloud.safetensors: its sha256 is {sha(Path(params['models']['loras'][0]['path']).read_bytes())}" \
        in record["error"] and f"given for it is {'f' * 64}" in record["error"]


def test_torch_missing_or_too_old_fails_its_criterion_and_is_checked_again(
        pod: Pod, stand_in_comfyui: Path, tmp_path: Path) -> None:
    params = {"python": sys.executable, "install_command": f"cp -r {stand_in_comfyui} {{dir}}"}
    summary = pod.run(params)  # ralph's own venv has no torch
    found = verdicts(summary)
    assert pod.status() == "FAILED"
    assert found["torch >= 2.4.0"].verified is False
    assert f"torch not importable by {sys.executable}" in found["torch >= 2.4.0"].detail
    assert "No module named 'torch'" in found["torch >= 2.4.0"].detail
    assert found["ComfyUI installé et running"].verified is False
    assert "not started: torch check failed" in found["ComfyUI installé et running"].detail
    # Nothing configured for the file criteria: reviewed, never ticked.
    for start in TASK2[2:]:
        assert found[start].verified is None and "not configured" in found[start].detail, found[start].detail
    assert not (pod.workspace / ".ralph" / "setup" / "torch.json").exists(), "a failed check leaves no marker"

    old = fake_torch(tmp_path / "old", "2.3.1+cu121")
    found = verdicts(pod.run({**params, "python": str(old)}))
    torch = found["torch >= 2.4.0"]
    assert torch.verified is False and torch.detail.startswith("torch 2.3.1+cu121 < 2.4.0")

    # The upgrade command runs when torch is too old (here: it installs the stand-in 2.14.1).
    upgrade = f"printf '__version__ = \"2.14.1+cu124\"\\n' > {tmp_path / 'old' / 'site' / 'torch' / '__init__.py'}"
    summary = pod.run({**params, "python": str(old), "torch_upgrade_command": upgrade, "start_timeout": 30})
    data = pod.result()["result"]["data"]
    assert data["torch"]["upgraded"] is True and data["torch"]["version"] == "2.14.1+cu124"
    assert verdicts(summary)["torch >= 2.4.0"].verified is True
    assert verdicts(summary)["ComfyUI installé et running"].verified is True


def test_a_dead_comfyui_is_started_again_and_a_crashing_one_fails_with_its_log(
        pod: Pod, stand_in_comfyui: Path, tmp_path: Path) -> None:
    params = base_params(tmp_path, stand_in_comfyui)
    pod.run(params)
    first = pod.result()["result"]["data"]["service"]
    os.kill(first["pid"], signal.SIGKILL)
    pod.run(params)
    second = pod.result()["result"]["data"]["service"]
    assert pod.status() == "NEEDS_REVIEW"  # running and torch verified; files not configured → review
    assert second["started"] is True and second["pid"] != first["pid"]
    with pod.provider() as ssh, forward(ssh, remote_port=pod.port) as tunnel:
        assert httpx.get(f"{tunnel.url}/system_stats").json()["system"]["comfyui_version"] == "0.0.0-stand-in"
        assert service.stop_service(ssh, pod.handle.services_dir) is True
        assert service.service_pid(ssh, pod.handle.services_dir) is None

    (pod.workspace / "ComfyUI" / "main.py").write_text("raise SystemExit('bad config: no models folder')\n")
    pod.run(params)
    assert pod.status() == "FAILED"
    error = pod.result()["error"]
    assert "exited while starting" in error and "bad config: no models folder" in error


def test_an_existing_comfyui_is_not_reinstalled_and_install_failures_are_named(
        pod: Pod, stand_in_comfyui: Path, tmp_path: Path) -> None:
    write(pod.workspace / "ComfyUI" / "main.py", STAND_IN_MAIN.encode())  # a pre-baked image
    params = {**base_params(tmp_path, stand_in_comfyui), "install_command": "exit 3"}
    pod.run(params)
    install = pod.result()["result"]["data"]["install"]
    assert (install["installed"], install["found"], install["skipped"]) == (False, True, False)
    with pod.provider() as ssh:
        service.stop_service(ssh, pod.handle.services_dir)
    shutil.rmtree(pod.workspace / "ComfyUI")
    pod.run(params)
    assert pod.status() == "FAILED" and "installing ComfyUI failed: command exited 3" in pod.result()["error"]
    pod.run({**params, "install_command": "true"})
    assert "main.py is missing" in pod.result()["error"]


# -- pinned versions ----------------------------------------------------------------------------
@pytest.fixture
def remotes(tmp_path: Path) -> Remotes:
    """ComfyUI's repository (tags v0.3.75, v0.45.2, a newer untagged tip) and ComfyUI_InstantID's."""
    return make_remotes(tmp_path / "github", STAND_IN_MAIN.replace("0.0.0-stand-in", "{version}"))


def pinned(tmp_path: Path, remotes: Remotes, version: str = "v0.45.2", node: int = 0) -> dict[str, Any]:
    return {"python": str(fake_torch(tmp_path / "pypod", "2.14.1+cu124")), "start_timeout": 30,
            "comfyui_repository": remotes.comfyui_url, "comfyui_version": version,
            "custom_nodes": [{"url": remotes.node_url, "commit": remotes.node_commits[node]}],
            "pip": [f"PyYAML=={yaml.__version__}"]}  # installed already: pip needs no network


def session_doc(pod: Pod) -> str:
    """The session document docs.session appends after this run (the example's last task)."""
    SessionDoc().run(pod.after_setup({"path": "session.md"}))
    return (pod.file.parent / "session.md").read_text("utf-8")


def test_the_pinned_release_and_node_commit_are_checked_out_recorded_and_moved_when_the_pin_changes(
        pod: Pod, remotes: Remotes, tmp_path: Path) -> None:
    comfy = pod.workspace / "ComfyUI"
    node = comfy / "custom_nodes" / "ComfyUI_InstantID"
    release, first, second = remotes.releases["v0.45.2"], *remotes.node_commits
    pod.run(pinned(tmp_path, remotes))
    assert pod.status() == "NEEDS_REVIEW", pod.output  # running, torch ok; no model files configured
    assert git(comfy, "rev-parse", "HEAD") == release != remotes.tip, "the tag, not the default branch's tip"
    assert git(node, "rev-parse", "HEAD") == first
    data = pod.result()["result"]["data"]
    assert {k: data["install"][k] for k in ("installed", "pinned", "commit", "tag")} == {
        "installed": True, "pinned": "v0.45.2", "commit": release, "tag": "v0.45.2"}
    assert data["service"]["version"] == "0.45.2" and data["warning"] == ""
    assert data["custom_nodes"] == [{"name": "ComfyUI_InstantID", "url": remotes.node_url, "pinned": first,
                                     "commit": first, "skipped": False}]
    assert data["packages"] == {"requirements": [str(node / "requirements.txt")],
                                "pip": [f"PyYAML=={yaml.__version__}"], "skipped": False}
    assert not (pod.workspace / "ComfyUI.ralph-part").exists()
    assert not any((pod.workspace / ".ralph" / "part").iterdir()), "no part folder left behind"
    # What ran, in the results block, the fact and the session's document.
    text = pod.file.read_text("utf-8")
    assert f"ComfyUI 0.45.2 (v0.45.2, commit {release[:12]}, pinned v0.45.2) at " in text
    assert f"custom node ComfyUI_InstantID {first[:12]}; torch 2.14.1+cu124 (ok)" in text
    server = pod.after_setup({}).fact(ComfyServer)
    assert server is not None
    assert (server.commit, server.tag, server.custom_nodes, server.unpinned) == (
        release, "v0.45.2", {"ComfyUI_InstantID": first}, "")
    assert (f"- **Versions**: ComfyUI 0.45.2 (v0.45.2, commit `{release[:12]}`), ComfyUI_InstantID commit "
            f"`{first[:12]}`, torch 2.14.1+cu124\n") in session_doc(pod)

    # Other pins: the checkouts ralph made move, and the ComfyUI running starts again on the new code.
    pid = data["service"]["pid"]
    pod.run(pinned(tmp_path, remotes, "v0.3.75", node=1))
    data = pod.result()["result"]["data"]
    assert git(comfy, "rev-parse", "HEAD") == remotes.releases["v0.3.75"] and data["install"]["tag"] == "v0.3.75"
    assert git(node, "rev-parse", "HEAD") == second and data["custom_nodes"][0]["commit"] == second
    assert data["service"]["version"] == "0.3.75" and data["service"]["pid"] != pid
    assert not data["install"]["skipped"] and not data["packages"]["skipped"]

    # A commit pins as well as a tag; the same pins again change nothing.
    pod.run(pinned(tmp_path, remotes, release, node=1))
    assert git(comfy, "rev-parse", "HEAD") == release
    assert pod.result()["result"]["data"]["install"]["pinned"] == release
    pid = pod.result()["result"]["data"]["service"]["pid"]
    pod.run(pinned(tmp_path, remotes, release, node=1))
    data = pod.result()["result"]["data"]
    assert data["install"]["skipped"] and data["custom_nodes"][0]["skipped"] and data["packages"]["skipped"]
    assert data["service"]["pid"] == pid and data["service"]["started"] is False


def test_a_comfyui_ralph_did_not_install_is_left_alone_and_named_against_the_pin(
        pod: Pod, remotes: Remotes, tmp_path: Path) -> None:
    prebaked = write(pod.workspace / "ComfyUI" / "main.py",
                     STAND_IN_MAIN.replace("0.0.0-stand-in", "0.3.75").encode())  # an image's copy, no .git
    pod.run({**pinned(tmp_path, remotes), "custom_nodes": [], "pip": []})
    data = pod.result()["result"]["data"]
    assert prebaked.read_text() == STAND_IN_MAIN.replace("0.0.0-stand-in", "0.3.75"), "left as it was"
    assert (data["install"]["installed"], data["install"]["found"], data["install"]["commit"]) == (False, True, "")
    warning = ("ComfyUI was already there, not installed by ralph: found 0.3.75, not a git checkout, pinned "
               "v0.45.2; the pin was not applied (remove the folder to install the pin)")
    assert data["warning"] == warning
    summary = pod.result()["result"]["summary"]
    assert summary.startswith(f"WARNING: {warning}. ComfyUI 0.3.75 (not a git checkout) at "), summary
    assert f"- WARNING: {warning}" in pod.file.read_text("utf-8"), "in the results block"
    assert f"**Versions**: ComfyUI 0.3.75, torch 2.14.1+cu124, WARNING: {warning}" in session_doc(pod)

    # A git checkout ralph did not make is not moved either: the warning names its tag and commit.
    with pod.provider() as ssh:
        service.stop_service(ssh, pod.handle.services_dir)
    shutil.rmtree(pod.workspace / "ComfyUI")
    git(pod.workspace, "clone", "-q", "--branch", "v0.3.75", remotes.comfyui_url, "ComfyUI")
    pod.run({**pinned(tmp_path, remotes), "custom_nodes": [], "pip": []})
    old = remotes.releases["v0.3.75"]
    assert git(pod.workspace / "ComfyUI", "rev-parse", "HEAD") == old
    summary = pod.result()["result"]["summary"]
    assert summary.startswith(f"WARNING: ComfyUI was already there, not installed by ralph: found 0.3.75, v0.3.75, "
                              f"commit {old[:12]}, pinned v0.45.2; the pin was not applied"), summary
    assert f"ComfyUI 0.3.75 (v0.3.75, commit {old[:12]}) at " in summary, "no pin claimed for it"

    # install_command instead: nothing pinned, nothing to warn about; what is there is still read back.
    pod.run({**pinned(tmp_path, remotes), "install_command": "exit 3", "custom_nodes": [], "pip": []})
    data = pod.result()["result"]["data"]
    assert data["warning"] == "" and data["install"]["pinned"] is None
    assert pod.result()["result"]["summary"].startswith(f"ComfyUI 0.3.75 (v0.3.75, commit {old[:12]}) at ")


def test_a_missing_pin_or_a_failing_fetch_fails_with_what_git_said(pod: Pod, remotes: Remotes,
                                                                     tmp_path: Path) -> None:
    pod.run({**pinned(tmp_path, remotes, "v9.9.9"), "custom_nodes": []})
    assert pod.status() == "FAILED"
    error = pod.result()["error"]
    assert error.startswith(f"checking out ComfyUI v9.9.9 from {remotes.comfyui_url} failed: ")
    assert "refs/tags/v9.9.9" in error, error
    assert not (pod.workspace / "ComfyUI").exists(), "nothing half-installed where main.py is looked for"

    unknown = "0123456789" * 4
    pod.run({**pinned(tmp_path, remotes), "custom_nodes": [{"url": remotes.node_url, "commit": unknown}]})
    assert pod.status() == "FAILED"
    assert f"checking out custom node ComfyUI_InstantID {unknown} from {remotes.node_url} failed" \
        in pod.result()["error"]
    assert not (pod.workspace / "ComfyUI" / "custom_nodes" / "ComfyUI_InstantID").exists()


def test_pins_are_checked_before_anything_runs(tmp_path: Path) -> None:
    """A branch is not a pin: `ralph check` refuses it at the task's line, as every parameter."""
    project = tmp_path / "p"
    project.mkdir()
    example = EXAMPLE.read_text("utf-8")
    (project / "R.md").write_text(example[: example.index("### 3.")] + example[example.index("## Constraints"):])
    task_line = next(i for i, line in enumerate(example.splitlines(), 1) if line.startswith("### 2."))
    bad = {
        "custom_nodes": [{"url": "https://github.com/cubiq/ComfyUI_InstantID.git", "commit": "main"}],
        "pip": ["insightface"],
        "comfyui_version": "-v0.45.2",
    }
    (project / "ralph.yaml").write_text(yaml.safe_dump({"tasks": {2: {"handler": "comfyui.setup", "params": bad}}}))
    problems = [p for p in make_plan(project / "R.md").problems if p.message.startswith("task 2 (Setup ComfyUI")]
    assert len(problems) == 3 and {p.line for p in problems} == {task_line}, problems
    messages = [p.message for p in problems]
    assert any("custom_nodes[0].commit: 'main' is not a commit: give the full 40-hex commit id "
               "(a branch moves, so it is not a pin)" in m for m in messages), messages
    assert any("pip[0]: 'insightface' is not pinned: write name==version" in m for m in messages), messages
    assert any("comfyui_version: '-v0.45.2' is neither a tag nor a full 40-hex commit" in m for m in messages)
    done = subprocess.run([sys.executable, "-m", "ralph", "check", "R.md"], cwd=project, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and f"R.md:{task_line}: " in done.stdout + done.stderr, done
    wrong: list[tuple[dict[str, Any], str]] = [
        ({"custom_nodes": [{"url": "u", "commit": "a" * 40, "branch": "main"}]}, "unknown key 'branch'"),
        ({"custom_nodes": [{"url": "x/A.git", "commit": "a" * 40}, {"url": "y/A", "commit": "b" * 40}]},
         "custom_nodes/A is given twice"),
        ({"custom_nodes": [{"url": "https://h/.git", "commit": "a" * 40}]}, "is not a folder name"),
        ({"custom_nodes": ["https://h/x.git"]}, "expected {url: …, commit: <40-hex commit>}"),
        ({"custom_nodes": [{"url": "x", "commit": "a" * 40, "requirements": "no"}]}, "expected true or false"),
    ]
    for params, message in wrong:
        with pytest.raises(ValueError, match=re.escape(message)):
            custom_nodes({"custom_nodes": [], **params})
    assert pip_pins({"pip": ["insightface==0.7.3", "onnxruntime-gpu==1.20.2; sys_platform == 'linux'"]})


@pytest.mark.parametrize("version,minimum,ok", [
    ("2.14.1+cu124", "2.4.0", True), ("2.4.0", "2.4.0", True), ("2.4.0+cpu", "2.4.0", True),
    ("2.3.1+cu121", "2.4.0", False), ("2.10.0", "2.4.0", True), ("2.4", "2.4.0", True),
    ("2.4.0.dev20240601+cu121", "2.4.0", False), ("2.4.0rc1", "2.4.0", False), ("2.4.0.post1", "2.4.0", True),
    ("1.13.1", "2.4.0", False), ("3.0.0a1", "2.4.0", True),
])
def test_versions_compare_by_number(version: str, minimum: str, ok: bool) -> None:
    assert setup.version_at_least(version, minimum) is ok


def test_file_parameters_are_checked_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "ok.bin").write_bytes(b"x")
    good = setup.file_specs({"models": {"checkpoints": [{"path": "ok.bin"}], "vae": ["https://h/x/v%20ae.safetensors?dl=1"]},
                             "face_reference": {"path": "ok.bin", "name": "face.jpg"}}, tmp_path)
    assert [(s.folder, s.name, s.path or s.url) for s in good] == [
        ("models/checkpoints", "ok.bin", tmp_path / "ok.bin"),
        ("models/vae", "v ae.safetensors", "https://h/x/v%20ae.safetensors?dl=1"),
        ("input", "face.jpg", tmp_path / "ok.bin")]
    bad: list[tuple[dict[str, Any], str | None]] = [
        ({"models": {"loras": {"path": "a"}}}, "models.loras: expected a list"),
        ({"models": {"loras": [{"path": "a", "url": "https://h/a"}]}}, "exactly one of path or url"),
        ({"models": {"loras": [{"url": "https://h/a", "sha256": "abc"}]}}, "sha256 must be 64 hex digits"),
        ({"models": {"loras": [{"url": "https://h/"}]}}, "cannot name the file"),
        ({"models": {"loras": [{"path": "a"}], "checkpoints": [{"path": "x/a", "name": "a"}]}}, None),
        ({"models": {"loras": [{"path": "a"}, {"url": "https://h/a"}]}}, "models/loras/a is given twice"),
        ({"models": {"../etc": [{"path": "a"}]}}, "not a model folder name"),
    ]
    for params, message in bad:
        if message is None:
            setup.file_specs(params, tmp_path)
            continue
        with pytest.raises(ValueError, match=message):
            setup.file_specs(params, tmp_path)
    # `ralph check` reports them at the task, with missing local files.
    project = tmp_path / "p"
    project.mkdir()
    example = EXAMPLE.read_text("utf-8")
    (project / "R.md").write_text(example[: example.index("### 3.")] + example[example.index("## Constraints"):])
    (project / "ralph.yaml").write_text(yaml.safe_dump({"tasks": {2: {"handler": "comfyui.setup", "params": {
        "models": {"checkpoints": [{"path": "nowhere.safetensors"}]}, "min_torch": "two"}}}}))
    problems = [p.message for p in make_plan(project / "R.md").problems]
    assert any("checkpoints file" in m and "nowhere.safetensors does not exist" in m for m in problems), problems
    assert any("min_torch: not a version: 'two'" in m for m in problems), problems


@pytest.mark.slow
def test_real_comfyui_set_up_over_ssh_answers_through_the_tunnel(pod: Pod, tmp_path: Path,
                                                                  files_server: Any) -> None:
    """The test ComfyUI (v0.3.75, CPU) installed into the workspace by copying it, the tiny
    models uploaded as checkpoint and LoRA, InstantID and antelopev2 as small files (the
    criteria check files, not their use), started as a service over SSH."""
    home = require_install()
    built = tiny_models.ensure_models(home)
    url, served, _ = files_server
    write(served / "ip-adapter.bin", (built / tiny_models.FILES[tiny_models.INSTANTID]).read_bytes())
    write(served / "scrfd_10g_bnkps.onnx", os.urandom(4096))
    source = home / "ComfyUI"
    params = {
        "python": str(home / "venv" / "bin" / "python"),
        "install_command": f"cp -r {source} {{dir}}.part && rm -rf {{dir}}.part/models {{dir}}.part/user "
                           f"{{dir}}.part/input {{dir}}.part/output && mv {{dir}}.part {{dir}}",
        "comfyui_args": ["--cpu", "--disable-auto-launch", "--disable-api-nodes"],
        "start_timeout": 180,
        "models": {
            "checkpoints": [{"path": str(built / tiny_models.FILES[tiny_models.CHECKPOINT])}],
            "loras": [{"path": str(built / tiny_models.FILES[tiny_models.LORA])}],
            "instantid": [{"url": f"{url}/ip-adapter.bin"}],
            "controlnet": [{"path": str(built / tiny_models.FILES[tiny_models.CONTROLNET])}],
            "antelopev2": [{"url": f"{url}/scrfd_10g_bnkps.onnx"}],
        },
        "face_reference": str(built / tiny_models.FILES[tiny_models.FACE_REF]),
    }
    summary = pod.run(params)
    found = verdicts(summary)
    assert all(e.verified is True for e in found.values()), {k: e.detail for k, e in found.items()}
    assert pod.status() == "DONE"
    data = pod.result()["result"]["data"]
    assert data["service"]["version"] == "0.3.75" and data["torch"]["version"].startswith("2.")
    with pod.provider() as ssh, forward(ssh, remote_port=pod.port) as tunnel:
        info = httpx.get(f"{tunnel.url}/object_info/CheckpointLoaderSimple", timeout=30).json()
        names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert tiny_models.CHECKPOINT in names, "ComfyUI sees the uploaded checkpoint in its own folder"
        loras = httpx.get(f"{tunnel.url}/object_info/LoraLoader", timeout=30).json()
        assert tiny_models.LORA in loras["LoraLoader"]["input"]["required"]["lora_name"][0]
    again = pod.run(params)
    assert all(e.verified is True for e in verdicts(again).values())
    second = pod.result()["result"]["data"]
    assert second["service"]["started"] is False and all(f["skipped"] for f in second["files"])
