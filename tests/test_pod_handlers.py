"""runpod.create, pod.shell and runpod.terminate through the engine, against the RunPod emulator
(the real pinned SDK over HTTP, each pod a real process with a real sshd that trusts the
PUBLIC_KEY ralph hands it, as RunPod images do). The task file is the repository's own
roadmap/ralph/RALPH-002-pod-lifecycle.md with its ralph.yaml, given fast timeouts."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from ralph.console import ConsoleReporter
from ralph.handlers.runpod import reaper
from ralph.handlers.runpod.api import RunPodAPI
from ralph.parser import parse_file
from ralph.runner import Runner, RunSummary
from tests.far.runpod_emulator import Fault, RunPodEmulator, emulated_runpod
from tests.far.sshd import start_sshd

ROADMAP = Path(__file__).resolve().parents[1] / "roadmap" / "ralph"
TASK_FILE = "RALPH-002-pod-lifecycle.md"
A5000, RTX4090 = "NVIDIA RTX A5000", "NVIDIA GeForce RTX 4090"


def sshd_trusting_public_key(pod_id: str, workspace: Path, env: dict[str, str]) -> Any:
    """The emulator's pod sshd, authorising the PUBLIC_KEY the pod was created with (RunPod's
    images append it to root's authorized_keys at start); no PUBLIC_KEY, nobody gets in."""
    keys = workspace.parent / "authorized"
    keys.mkdir(exist_ok=True)
    (keys / "ralph.pub").write_text(env.get("PUBLIC_KEY", "") + "\n")
    safe = {k: v for k, v in env.items() if not any(c in v for c in '"\\\n')}
    return start_sshd(workspace.parent / "sshd", env=safe, start_dir=workspace, client_key=keys / "ralph")


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    generator = emulated_runpod(tmp_path / "runpod", monkeypatch, start_ssh=sshd_trusting_public_key,
                                kill_grace_s=0.3)
    emulator = next(generator)
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    monkeypatch.setenv("RALPH_STATE_HOME", str(tmp_path / "ralph-state"))
    yield emulator
    emulator.ignore_terminations(0)
    yield from generator


def fast_params(tmp_path: Path, **create: Any) -> dict[str, Any]:
    return {
        "runpod.create": {
            "gpu_types": [A5000, RTX4090], "image": "runpod/pytorch:test", "base_start_command": "sleep infinity",
            "remote_workspace": "", "pod_state_dir": str(tmp_path / "pod-tmp"), "volume_gb": 0,
            "ready_timeout_s": 20, "heartbeat_timeout_s": 6, "create_budget_s": 5, "poll_s": 0.1, **create,
        },
        "runpod.terminate": {"terminate_timeout_s": 5, "poll_s": 0.1},
    }


def pod_project(root: Path, params: dict[str, Any], *, edit: Callable[[str], str] = lambda text: text) -> Path:
    """The roadmap's task file and ralph.yaml in ``root``, with ``params`` added to the yaml."""
    root.mkdir(parents=True, exist_ok=True)
    file = root / TASK_FILE
    file.write_text(edit((ROADMAP / TASK_FILE).read_text("utf-8")), encoding="utf-8")
    config = yaml.safe_load((ROADMAP / "ralph.yaml").read_text("utf-8"))
    config["params"] = params
    (root / "ralph.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return file


def run(file: Path, **options: Any) -> tuple[RunSummary, str]:
    output = io.StringIO()
    reporter = ConsoleReporter(Console(file=output, width=200, color_system=None))
    summary = Runner(file, reporter, retry_wait=0, **options).run()
    return summary, output.getvalue()


def statuses(file: Path) -> dict[int, str]:
    parsed, _ = parse_file(file)
    return {t.number: t.status for t in parsed.tasks}


def ticked(file: Path, number: int) -> list[bool]:
    parsed, _ = parse_file(file)
    return [c.checked for c in parsed.task(number).criteria]


def state(file: Path) -> dict[str, Any]:
    path = file.parent / ".ralph" / file.stem / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def ralph_process(file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ralph", "run", file.name], cwd=file.parent, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_create_shell_terminate_run_and_tick_their_boxes(emu: RunPodEmulator, tmp_path: Path) -> None:
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert statuses(file) == {1: "DONE", 2: "DONE", 5: "DONE"}
    assert all(ticked(file, 1)) and all(ticked(file, 2)) and all(ticked(file, 5))
    text = file.read_text()
    [pod] = emu.all_pods
    assert pod.gpu.id == A5000 and pod.terminated and emu.live_pods() == []
    assert "with GPU RTX A5000" in text and re.search(r"`ssh root@127\.0\.0\.1:\d+ true` answered in", text)
    assert (pod.workspace / "ComfyUI" / "models" / "checkpoints").is_dir()  # pod.shell ran on the pod
    assert pod.name.startswith(reaper.owner_prefix(file)) and pod.ports == "22/tcp"  # no public ComfyUI port
    # The start command carries the switch and ralph's public key, never the account's key.
    script = base64.b64decode(re.search(r"echo (\S+) \| base64", pod.docker_args).group(1)).decode()
    assert "podTerminate" in script and emu.api_key not in script and emu.api_key not in json.dumps(pod.env)
    assert pod.env["PUBLIC_KEY"].startswith("ssh-ed25519 ")
    [terminate] = emu.calls("podTerminate")
    assert terminate.principal == "account"
    assert "$" in text and "in all" in text  # the pod's cost, written into the file
    assert state(file)["resources"].get("pod", {}).get("released") or "pod" not in state(file)["resources"]
    assert emu.api_key not in text and emu.api_key not in (file.parent / ".ralph").joinpath(file.stem, "state.json").read_text()


def test_no_capacity_for_the_first_gpu_type_uses_the_second(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.no_capacity(A5000)
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    [pod] = emu.all_pods
    assert pod.gpu.id == RTX4090
    creates = emu.calls("podFindAndDeployOnDemand")
    assert [c.args["input"]["gpuTypeId"] for c in creates] == [A5000, RTX4090]
    assert "with GPU RTX 4090" in file.read_text() and all(ticked(file, 1))


def test_a_lost_create_answer_finds_the_pod_by_name_instead_of_making_a_second(emu: RunPodEmulator,
                                                                              tmp_path: Path) -> None:
    emu.fail(Fault.SERVER_ERROR, operation="podFindAndDeployOnDemand", after=True)
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert emu.pods_created == 1 and emu.live_pods() == []


def test_sigkill_while_waiting_for_ssh_then_rerun_reuses_the_same_pod(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.runtime_after_s = 3.0  # the API shows no ports for 3 s: ralph is polling when killed
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    process = ralph_process(file)
    try:
        pod_id = wait_for(lambda: state(file).get("tasks", {}).get("1", {}).get("memory", {}).get("pod_id"))
        wait_for(lambda: emu.pod(pod_id).polls > 0)  # ralph is polling the API for the pod's ports
        assert statuses(file)[1] == "IN_PROGRESS"
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    assert emu.pod(pod_id).runtime_since is None  # killed before SSH could have been reached
    summary, output = run(file)
    assert summary.exit_code == 0, output
    events = (file.parent / ".ralph" / file.stem / "events.jsonl").read_text()
    assert "reusing pod ralph-" in events and f"({pod_id})" in events
    assert emu.pods_created == 1 and emu.all_pods[0].id == pod_id
    assert emu.live_pods() == [] and statuses(file) == {1: "DONE", 2: "DONE", 5: "DONE"}


def test_ralph_killed_and_never_rerun_the_pod_deletes_itself(emu: RunPodEmulator, tmp_path: Path) -> None:
    hb_timeout = 3
    file = pod_project(tmp_path / "project", fast_params(tmp_path, heartbeat_timeout_s=hb_timeout),
                       edit=lambda text: text.replace("df -h . | tail -n 1", "sleep 60"))
    process = ralph_process(file)
    try:
        wait_for(lambda: statuses(file)[2] == "IN_PROGRESS", timeout=30)
        [pod] = emu.all_pods
        beat = tmp_path / "pod-tmp" / pod.id / "heartbeat"
        wait_for(beat.exists)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    killed = time.monotonic()
    wait_for(lambda: pod.terminated, timeout=hb_timeout + 8)
    took = time.monotonic() - killed
    [call] = wait_for(lambda: emu.calls("podTerminate"))  # recorded once answered
    assert call.principal == f"pod:{pod.id}"  # the pod's own key: ralph was dead
    assert took <= hb_timeout + 4
    log = (tmp_path / "pod-tmp" / pod.id / "deadman.log").read_text()
    assert "firing: heartbeat stale" in log


def test_a_terminate_acknowledged_but_not_done_fails_unticked_and_the_next_run_finishes_it(
        emu: RunPodEmulator, tmp_path: Path) -> None:
    params = fast_params(tmp_path)
    params["runpod.terminate"]["terminate_timeout_s"] = 1.0
    file = pod_project(tmp_path / "project", params)
    emu.ignore_terminations()
    summary, output = run(file)
    assert summary.exit_code == 1
    assert statuses(file)[5] == "FAILED" and ticked(file, 5) == [False, False]
    assert "still exists" in file.read_text() and "acknowledged terminate" in file.read_text()
    [pod] = emu.all_pods
    assert not pod.terminated and pod.terminate_requests >= 1
    assert state(file)["resources"]["machine"].get("released") is None  # not released without confirmation
    emu.ignore_terminations(0)
    summary, output = run(file)
    assert statuses(file)[5] == "DONE" and all(ticked(file, 5)) and emu.live_pods() == [], output
    assert emu.pods_created == 1


def test_missing_key_blocks_with_one_line_and_creates_nothing(emu: RunPodEmulator, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY")
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 1
    assert statuses(file)[1] == "BLOCKED"
    [outcome] = [o for o in summary.outcomes if o.number == 1]
    assert "set RUNPOD_API_KEY" in outcome.error and "\n" not in outcome.error
    assert emu.requests == [] and emu.pods_created == 0


def test_ssh_that_never_comes_fails_at_the_deadline_and_terminates_the_pod(emu: RunPodEmulator,
                                                                          tmp_path: Path) -> None:
    emu.runtime_never = True
    file = pod_project(tmp_path / "project", fast_params(tmp_path, ready_timeout_s=1.5))
    summary, output = run(file)
    assert statuses(file)[1] == "FAILED" and statuses(file)[2] == "SKIPPED" and statuses(file)[5] == "DONE"
    [outcome] = [o for o in summary.outcomes if o.number == 1]
    assert "no working `ssh true` 1.5 s after create (runtime is null" in outcome.error
    assert emu.pods_created == 1 and emu.live_pods() == []


def test_a_pod_that_vanishes_while_starting_is_a_clear_failure(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.runtime_never = True
    file = pod_project(tmp_path / "project", fast_params(tmp_path))

    def kill_it() -> None:
        pod = wait_for(lambda: emu.all_pods and emu.all_pods[0])
        wait_for(lambda: pod.polls >= 2)
        RunPodAPI(emu.api_key).terminate_pod(pod.id)

    killer = threading.Thread(target=kill_it)
    killer.start()
    summary, output = run(file, only=1)
    killer.join()
    [outcome] = summary.outcomes
    assert outcome.status == "FAILED" and "disappeared" in outcome.error and "before SSH worked" in outcome.error
    assert emu.pods_created == 1
