"""runpod.create, pod.shell and runpod.terminate through the engine, against the REST v2 RunPod emulator
(real HTTP, each pod a real process with a real sshd that trusts the PUBLIC_KEY ralph hands it, as
RunPod images do). The task file is the repository's own roadmap/ralph/RALPH-002-pod-lifecycle.md with
its ralph.yaml, given fast timeouts. Every request ralph sends is checked against RunPod's OpenAPI
document."""

from __future__ import annotations

import base64
import io
import json
import math
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
from ralph.handlers.runpod import reaper
from ralph.handlers.runpod.api import RunPodAPI
from rich.console import Console

from ralph.console import ConsoleReporter
from ralph.parser import parse_file
from ralph.runner import Runner, RunSummary
from tests.far.runpod_emulator import Fault, RunPodEmulator, emulated_for_ralph
from tests.waiting import wait_for

ROADMAP = Path(__file__).resolve().parents[1] / "roadmap" / "ralph"
TASK_FILE = "RALPH-002-pod-lifecycle.md"
A5000, RTX4090 = "NVIDIA RTX A5000", "NVIDIA GeForce RTX 4090"


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    yield from emulated_for_ralph(tmp_path, monkeypatch)


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


def ralph_process(file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ralph", "run", file.name], cwd=file.parent, env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def creates(emu: RunPodEmulator) -> list[str]:
    return [c.body["gpu"]["id"] for c in emu.calls("POST", "/v2/pods")]


def test_create_shell_terminate_run_and_tick_their_boxes(emu: RunPodEmulator, tmp_path: Path) -> None:
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert statuses(file) == {1: "DONE", 2: "DONE", 5: "DONE"}
    assert all(ticked(file, 1)) and all(ticked(file, 2)) and all(ticked(file, 5))
    text = file.read_text()
    [pod] = emu.all_pods
    assert pod.gpu_id == A5000 and pod.status == "TERMINATED" and emu.live_pods() == []
    assert "with GPU NVIDIA RTX A5000" in text and re.search(r"`ssh root@127\.0\.0\.1:\d+ true` answered in", text)
    assert (pod.workspace / "ComfyUI" / "models" / "checkpoints").is_dir()  # pod.shell ran on the pod
    [create] = emu.calls("POST", "/v2/pods")
    assert pod.name.startswith(reaper.owner_prefix(file))
    assert create.body["ports"] == ["22/tcp"]  # no public ComfyUI port
    # The start command carries the switch and ralph's public key, never the account's key.
    script = base64.b64decode(re.search(r"echo (\S+) \| base64", create.body["args"]).group(1)).decode()
    assert "/v2/pods/$RUNPOD_POD_ID" in script and emu.api_key not in script
    assert emu.api_key not in json.dumps(create.body) and create.body["env"]["PUBLIC_KEY"].startswith("ssh-ed25519 ")
    assert [c.principal for c in emu.calls("DELETE", "/v2/pods/")] == ["account"]
    assert not emu.calls("PUT", "/v2/account/ssh-keys"), "never replace the account's keys"
    assert "$" in text and "in all" in text  # the pod's cost, written into the file
    assert "machine" not in state(file)["resources"] or state(file)["resources"]["machine"].get("released")
    assert emu.api_key not in text
    assert emu.api_key not in (file.parent / ".ralph").joinpath(file.stem, "state.json").read_text()
    assert str(tmp_path) not in text, "paths written for people are relative"


def test_the_catalog_places_the_pod_no_create_is_sent_where_it_says_none(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.no_capacity(A5000)
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert creates(emu) == [RTX4090] and emu.all_pods[0].gpu_id == RTX4090
    assert "with GPU NVIDIA GeForce RTX 4090" in file.read_text() and all(ticked(file, 1))


def test_a_catalog_that_says_high_while_creates_fail_moves_to_the_next_candidate(emu: RunPodEmulator,
                                                                              tmp_path: Path) -> None:
    emu.no_capacity(A5000)
    emu.advertise("HIGH", A5000)
    file = pod_project(tmp_path / "project", fast_params(tmp_path, cloud_types=["SECURE"]))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert creates(emu) == [A5000, RTX4090] and emu.pods_created == 1


def test_no_room_anywhere_sends_no_create_and_fails_when_the_budget_runs_out(emu: RunPodEmulator,
                                                                            tmp_path: Path) -> None:
    emu.no_capacity()
    file = pod_project(tmp_path / "project", fast_params(tmp_path, create_budget_s=20))
    started = time.monotonic()
    summary, output = run(file, only=1)
    took = time.monotonic() - started
    [outcome] = summary.outcomes
    assert outcome.status == "FAILED" and "the catalog never showed room" in outcome.error, outcome.error
    assert emu.creates_sent == []
    reads = emu.calls("GET", "/v2/catalog/gpus")
    gaps = [b.at - a.at for a, b in zip(reads[1:], reads[2:], strict=False)]  # the first read is `ralph check`'s
    assert len(reads) <= 1 + 3 and all(g >= 9.5 for g in gaps), gaps  # 0 s, 10 s, 20 s: a few a minute
    assert 19 <= took < 40, took
    assert output.count("no room now") == len(reads) - 2, output


def test_a_lost_create_answer_finds_the_pod_by_name_instead_of_making_a_second(emu: RunPodEmulator,
                                                                              tmp_path: Path) -> None:
    emu.fail(Fault.LOST_ANSWER, method="POST", path="/v2/pods")
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert len(emu.creates_sent) == 1 and emu.pods_created == 1 and emu.live_pods() == []


def test_a_pod_that_goes_to_error_fails_fast_and_is_deleted(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.error_next_pods(1)
    file = pod_project(tmp_path / "project", fast_params(tmp_path, ready_timeout_s=60))
    started = time.monotonic()
    summary, output = run(file)
    [first] = [o for o in summary.outcomes if o.number == 1]
    assert first.status == "FAILED" and "went to ERROR while starting" in first.error
    assert "terminated (confirmed gone)" in first.error and time.monotonic() - started < 30
    assert emu.pods_created == 1 and emu.live_pods() == []


def test_a_switch_that_cannot_check_itself_is_a_warning_in_the_results(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.pod_keys_may_read = False
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    summary, output = run(file)
    assert summary.exit_code == 0, output
    text = file.read_text()
    assert "WARNING: the pod's dead-man's switch may not be able to delete it" in text
    assert "the pod key cannot read its own pod: HTTP 403" in text


def test_sigkill_while_waiting_for_ssh_then_rerun_reuses_the_same_pod(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.seconds_per_phase = math.inf  # the pod stays PROVISIONING: ralph is polling when killed
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    process = ralph_process(file)
    try:
        pod_id = wait_for(lambda: state(file).get("tasks", {}).get("1", {}).get("memory", {}).get("pod_id"))
        wait_for(lambda: len(emu.calls("GET", f"/v2/pods/{pod_id}")) > 1)  # ralph is polling the pod
        assert statuses(file)[1] == "IN_PROGRESS"
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    assert emu.pod(pod_id).status != "RUNNING"  # killed before SSH could have been reached
    emu.seconds_per_phase = 0
    summary, output = run(file)
    assert summary.exit_code == 0, output
    events = (file.parent / ".ralph" / file.stem / "events.jsonl").read_text()
    assert "reusing pod ralph-" in events and f"({pod_id})" in events
    assert emu.pods_created == 1 and emu.all_pods[0].id == pod_id
    assert emu.live_pods() == [] and statuses(file) == {1: "DONE", 2: "DONE", 5: "DONE"}


def test_a_create_redone_with_only_finds_its_pod_instead_of_making_a_second(emu: RunPodEmulator,
                                                                            tmp_path: Path) -> None:
    emu.seconds_per_phase = math.inf  # the pod stays PROVISIONING: ralph is polling when killed
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    process = ralph_process(file)
    try:
        pod_id = wait_for(lambda: state(file).get("tasks", {}).get("1", {}).get("memory", {}).get("pod_id"), timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    emu.seconds_per_phase = 0
    # --only redoes the task from scratch, but what names its pod is remembered.
    summary, output = run(file, only=1)
    assert summary.exit_code == 0, output
    assert emu.pods_created == 1 and state(file)["tasks"]["1"]["memory"]["pod_id"] == pod_id
    summary, output = run(file)
    assert summary.exit_code == 0, output
    assert emu.pods_created == 1 and emu.live_pods() == []


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
    wait_for(lambda: pod.status == "TERMINATED", timeout=hb_timeout + 8)
    took = time.monotonic() - killed
    [call] = wait_for(lambda: emu.calls("DELETE", f"/v2/pods/{pod.id}"))
    assert call.principal == f"pod:{pod.id}"  # the pod's own key: ralph was dead
    assert took <= hb_timeout + 4
    log = (tmp_path / "pod-tmp" / pod.id / "deadman.log").read_text()
    assert "firing: heartbeat stale" in log  # (the DELETE ends the pod, the switch with it: no line after)


def test_a_terminate_acknowledged_but_not_done_fails_unticked_and_the_next_run_finishes_it(
        emu: RunPodEmulator, tmp_path: Path) -> None:
    params = fast_params(tmp_path)
    params["runpod.terminate"]["terminate_timeout_s"] = 1.0
    file = pod_project(tmp_path / "project", params)
    emu.ignore_terminations(None)
    summary, output = run(file)
    assert summary.exit_code == 1
    assert statuses(file)[5] == "FAILED" and ticked(file, 5) == [False, False]
    assert "still exists" in file.read_text() and "acknowledged" in file.read_text()
    [pod] = emu.all_pods
    assert pod.status != "TERMINATED" and len(pod.terminate_requests) >= 1
    assert state(file)["resources"]["machine"].get("released") is None  # not released without confirmation
    emu.ignore_terminations(0)
    summary, output = run(file)
    assert statuses(file)[5] == "DONE" and all(ticked(file, 5)) and emu.live_pods() == [], output
    assert emu.pods_created == 1


def test_terminate_is_resent_until_the_pod_is_gone_and_tells_errors_from_acknowledgements(
        emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.ignore_terminations(2)
    params = fast_params(tmp_path, heartbeat_timeout_s=120)  # the switch stays out of it
    params["runpod.terminate"]["terminate_timeout_s"] = 30
    file = pod_project(tmp_path / "project", params)
    summary, output = run(file)
    assert statuses(file)[5] == "DONE", output
    deletes = [c for c in emu.calls("DELETE", "/v2/pods/") if c.principal == "account"]
    assert len(deletes) == 3 and deletes[2].at - deletes[1].at > deletes[1].at - deletes[0].at  # backoff
    emu.fail(Fault.BAD_GATEWAY, times=None, method="DELETE", path="/v2/pods/{id}")
    params["runpod.terminate"]["terminate_timeout_s"] = 7  # sends at 0 s and 5 s, both answered 502
    file = pod_project(tmp_path / "project2", params)
    summary, output = run(file)
    [outcome] = [o for o in summary.outcomes if o.number == 5]
    assert outcome.status == "FAILED" and "0 acknowledged" in outcome.error and "failed (last: " in outcome.error
    assert "HTTP 502" in outcome.error and "2 terminate request(s)" in outcome.error
    emu.clear_faults()
    run(file)
    assert emu.live_pods() == []


def test_ssh_that_never_comes_fails_at_the_deadline_and_terminates_the_pod(emu: RunPodEmulator,
                                                                          tmp_path: Path) -> None:
    emu.seconds_per_phase = math.inf
    file = pod_project(tmp_path / "project", fast_params(tmp_path, ready_timeout_s=1.5))
    summary, output = run(file)
    assert statuses(file)[1] == "FAILED" and statuses(file)[2] == "SKIPPED" and statuses(file)[5] == "DONE"
    [outcome] = [o for o in summary.outcomes if o.number == 1]
    assert "no working `ssh true` 1.5 s after create (status PROVISIONING" in outcome.error
    assert emu.pods_created == 1 and emu.live_pods() == []


def test_a_pod_that_vanishes_while_starting_is_a_clear_failure(emu: RunPodEmulator, tmp_path: Path) -> None:
    emu.seconds_per_phase = math.inf
    file = pod_project(tmp_path / "project", fast_params(tmp_path))

    def kill_it() -> None:
        [pod] = wait_for(lambda: emu.all_pods[:1])
        wait_for(lambda: len(emu.calls("GET", f"/v2/pods/{pod.id}")) >= 2)
        RunPodAPI(emu.api_key, emu.url).terminate_pod(pod.id)

    killer = threading.Thread(target=kill_it)
    killer.start()
    summary, output = run(file, only=1)
    killer.join()
    [outcome] = summary.outcomes
    assert outcome.status == "FAILED" and "disappeared" in outcome.error and "before SSH worked" in outcome.error
    assert emu.pods_created == 1


def test_a_missing_key_is_refused_before_anything_is_written(emu: RunPodEmulator, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY")
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    before = file.read_bytes()
    for command in (["run"], ["run", "--dry-run"], ["check"]):
        done = subprocess.run([sys.executable, "-m", "ralph", *command, file.name], cwd=file.parent,
                              env=dict(os.environ), capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        assert re.search(rf"{TASK_FILE}:\d+: (error: )?task 1 \(runpod\.create\): set RUNPOD_API_KEY",
                         done.stdout + done.stderr)
    assert file.read_bytes() == before and not (file.parent / ".ralph").exists()
    assert emu.requests == []


def test_check_names_a_gpu_type_the_catalog_does_not_know_at_its_line(emu: RunPodEmulator, tmp_path: Path) -> None:
    file = pod_project(tmp_path / "project", fast_params(tmp_path, gpu_types=[A5000, "NVIDIA Imaginary 9000"]))
    done = subprocess.run([sys.executable, "-m", "ralph", "check", file.name], cwd=file.parent, env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(i for i, text in enumerate(file.read_text().splitlines(), 1) if text.startswith("### 1."))
    assert re.search(rf"^{TASK_FILE}:{line}: error: .*gpu_types: RunPod's catalog has no GPU type "
                     r"'NVIDIA Imaginary 9000'$", done.stdout, re.M), done.stdout
    assert emu.creates_sent == [] and not (file.parent / ".ralph").exists()


def test_the_dry_run_prices_each_candidate_from_the_catalog_and_creates_nothing(emu: RunPodEmulator,
                                                                               tmp_path: Path) -> None:
    emu.no_capacity(RTX4090)
    file = pod_project(tmp_path / "project", fast_params(tmp_path, cloud_types=["SECURE"], max_lifetime_s=7200))
    done = subprocess.run([sys.executable, "-m", "ralph", "run", "--dry-run", file.name], cwd=file.parent,
                          env=dict(os.environ), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "RTX A5000 (24 GB), SECURE: $0.270/h, availability HIGH" in done.stdout
    assert "RTX 4090 (24 GB), SECURE: $0.690/h, availability NONE" in done.stdout
    assert re.search(r"worst case: \$1\.38: .*2 h \(max_lifetime_s\), at \$0\.690/h", done.stdout), done.stdout
    assert emu.creates_sent == [] and not (file.parent / ".ralph").exists()


def test_max_cost_usd_stops_the_work_and_the_pod_is_terminated(emu: RunPodEmulator, tmp_path: Path) -> None:
    file = pod_project(tmp_path / "project", fast_params(tmp_path),
                       edit=lambda text: text.replace("df -h . | tail -n 1", "sleep 120"))
    started = time.monotonic()
    output = io.StringIO()
    summary = Runner(file, ConsoleReporter(Console(file=output, width=200, color_system=None)), retry_wait=0,
                     max_cost_usd=0.0005, cost_check_s=0.1).run()  # $0.27/h: the limit is ~7 s of pod time
    assert time.monotonic() - started < 60, "the long step was cut short"
    assert summary.exit_code == 1, output.getvalue()
    assert statuses(file)[5] == "DONE" and emu.live_pods() == [] and emu.pods_created == 1
    assert "would pass max_cost_usd $0.00" in file.read_text()
