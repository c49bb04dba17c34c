"""A ComfyUI that dies in the middle of a prompt: the task fails naming it ("ComfyUI on the machine
stopped", the end of its log attached), and the task's rerun starts the service again the way
comfyui.setup did and resubmits the prompt, to a finished image. The machine is the loopback sshd,
ComfyUI the real test install (v0.3.75, CPU, tiny models), killed with SIGKILL as a crash would."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from ralph.console import ConsoleReporter
from ralph.parser import parse_file
from ralph.runner import Runner, RunSummary
from tests.far import tiny_models
from tests.far.comfyui_server import NODES_DIR, require_install
from tests.repo_files import EXAMPLE
from tests.test_comfyui_setup import Pod, files_server, pod  # noqa: F401 (fixtures)
from tests.waiting import wait_for

TINY = {"width": 64, "height": 64, "steps": 3, "steps2": 2}


def project(pod: Pod, tmp_path: Path) -> Path:  # noqa: F811
    home = require_install()
    built = tiny_models.ensure_models(home)
    antelope = tmp_path / "stand-ins" / "scrfd_10g_bnkps.onnx"
    antelope.parent.mkdir(parents=True, exist_ok=True)
    antelope.write_bytes(os.urandom(4096))
    setup = {
        "workspace": str(pod.workspace), "port": pod.port, "python": str(home / "venv" / "bin" / "python"),
        "install_command": f"cp -r {home / 'ComfyUI'} {{dir}}.part && rm -rf {{dir}}.part/models {{dir}}.part/user "
                           f"{{dir}}.part/input {{dir}}.part/output && cp -r {NODES_DIR}/. {{dir}}.part/custom_nodes/ "
                           f"&& mv {{dir}}.part {{dir}}",
        "comfyui_args": ["--cpu", "--disable-auto-launch", "--disable-api-nodes"], "start_timeout": 180,
        "models": {name: [{"path": str(built / tiny_models.FILES[key])}] for name, key in (
            ("checkpoints", tiny_models.CHECKPOINT), ("loras", tiny_models.LORA),
            ("instantid", tiny_models.INSTANTID), ("controlnet", tiny_models.CONTROLNET))}
        | {"antelopev2": [{"path": str(antelope)}]},
        "face_reference": str(built / tiny_models.FILES[tiny_models.FACE_REF]),
    }
    config: dict[str, Any] = {
        "handlers": {"hold": "tests.test_comfyui_setup:HoldPod"},
        "tasks": {1: {"handler": "hold", "params": {"pod": pod.handle.record()}},
                  2: {"handler": "comfyui.setup", "params": setup},
                  3: {"handler": "comfyui.run", "params": {"overrides": TINY, "output_dir": "output",
                                                          "stall_timeout": 120}}},
    }
    pod.file.parent.joinpath("ralph.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    text = EXAMPLE.read_text("utf-8").replace("(port 8188)", f"(port {pod.port})")
    pod.file.write_text(text[: text.index("### 4.")] + text[text.index("## Constraints"):], encoding="utf-8")
    return pod.file


def run(file: Path) -> RunSummary:
    return Runner(file, ConsoleReporter(Console(file=io.StringIO(), width=200, color_system=None)),
                  retry_wait=0).run()


@pytest.mark.slow
def test_a_comfyui_killed_mid_prompt_is_named_and_the_rerun_restarts_it_and_finishes(
        pod: Pod, tmp_path: Path) -> None:  # noqa: F811
    file = project(pod, tmp_path)
    log = Path(pod.handle.services_dir) / "comfyui.log"
    pid_file = Path(pod.handle.services_dir) / "comfyui.pid"
    killed: list[int] = []

    def crash_once_the_prompt_runs() -> None:
        wait_for(lambda: log.exists() and "got prompt" in log.read_text(errors="replace"), timeout=240)
        pid = int(pid_file.read_text())
        os.killpg(pid, signal.SIGKILL)  # started with setsid: its group is its pid
        killed.append(pid)

    crasher = threading.Thread(target=crash_once_the_prompt_runs, daemon=True)
    crasher.start()
    first = run(file)
    crasher.join(timeout=5)
    assert killed, "ComfyUI was killed while it ran the prompt"
    [outcome] = [o for o in first.outcomes if o.number == 3]
    assert outcome.status == "FAILED", outcome
    assert outcome.error.startswith("ComfyUI on the machine stopped: ")
    assert "a rerun starts it again and resubmits the prompt. Its log ends:" in outcome.error
    assert "got prompt" in outcome.error, "the end of ComfyUI's log is attached"

    second = run(file)
    [outcome] = [o for o in second.outcomes if o.number == 3]
    assert outcome.status == "DONE", outcome
    assert int(pid_file.read_text()) != killed[0], "a new ComfyUI was started"
    events = (file.parent / ".ralph" / file.stem / "events.jsonl").read_text("utf-8")
    assert "ComfyUI is not running on the machine: starting it again as comfyui.setup did" in events
    assert parse_file(file)[0].task(3).status == "DONE"
    assert list((file.parent / "output").rglob("*.png")), "the image landed"
