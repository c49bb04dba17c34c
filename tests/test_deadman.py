"""The dead-man's switch on emulated pods: the start script really runs as the pod's process, with the
pod's own RUNPOD_POD_ID and pod-scoped key, and the pod really goes (REST v2 DELETE by the pod's key;
the v2 action, GraphQL and runpodctl when that is refused). Every limit is tested by its effect."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ralph.handlers.machines import session
from ralph.handlers.runpod import deadman
from ralph.handlers.runpod.api import PodSpec, RunPodAPI

from tests.far.runpod_emulator import (
    Fault,
    RecordedRequest,
    RunPodEmulator,
    emulated_runpod,
)
from tests.waiting import wait_for

A5000 = "NVIDIA RTX A5000"
NAME = "ralph-0000aaaa-t1-test"
# What the script needs besides an HTTP client (the tests that take curl away keep these).
SCRIPT_TOOLS = ("sh", "base64", "tr", "sed", "head", "tail", "mkdir", "rm", "date", "cat", "sleep", "mv")
NEVER = 600  # a limit that does not fire during a test


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    yield from emulated_runpod(tmp_path / "runpod", monkeypatch, reads_per_phase=0, kill_grace_s=0.3)


@pytest.fixture
def api(emu: RunPodEmulator) -> Iterator[RunPodAPI]:
    client = RunPodAPI.from_env()
    yield client
    client.close()


@pytest.fixture
def state_base(tmp_path: Path) -> str:
    """The switch's folder on the pod (the pods are local sandboxes: a local path)."""
    return str(tmp_path / "pod-tmp")


def create(api: RunPodAPI, switch: deadman.Switch, *, ports: tuple[str, ...] = (), env: dict[str, str] | None = None,
           before: str = "") -> str:
    """A pod whose start command is the switch in front of ``sleep infinity`` (``before``: shell
    words in front of it, e.g. a variable assignment for the container)."""
    args = before + deadman.start_command(switch, "sleep infinity")
    return api.create_pod(PodSpec(name=NAME, image="runpod/pytorch:test", gpu_id=A5000, ports=ports,
                                  env=env or {}, args=args)).id


def text_of(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""


def arming_report(state_base: str, pod_id: str) -> str:
    """The switch's one line once written (it is moved into place whole)."""
    return wait_for(lambda: text_of(deadman.arming_path(state_base, pod_id)).strip())


def terminations(emu: RunPodEmulator, pod_id: str) -> list[RecordedRequest]:
    """Every request of the switch's that asked for the pod's end, in order (v2, GraphQL, v1)."""
    return [r for r in emu.requests if (r.method, r.path) in {
        ("DELETE", f"/v2/pods/{pod_id}"), ("POST", f"/v2/pods/{pod_id}/action"), ("POST", "/graphql"),
        ("DELETE", f"/v1/pods/{pod_id}")}]


def test_the_start_script_is_posix_sh_and_carries_no_account_secret(emu: RunPodEmulator, api: RunPodAPI,
                                                                     state_base: str) -> None:
    switch = deadman.Switch(600, 1500, 10800)
    text = deadman.script(switch, "/start.sh")
    shells = [shell for shell in ("sh", "dash") if shutil.which(shell)]
    assert "sh" in shells
    for shell in shells:
        checked = subprocess.run([shell, "-n"], check=False, input=text, text=True, capture_output=True)
        assert checked.returncode == 0, f"{shell}: {checked.stderr}"
    assert text.rstrip().endswith("exec /start.sh")
    assert deadman.start_command(switch, "/start.sh").startswith("sh -c 'echo ")
    # What the pod was really given: no account key in its start command or its environment.
    pod_id = create(api, deadman.Switch(NEVER, NEVER, NEVER, state_base=state_base))
    assert arming_report(state_base, pod_id).startswith("ok: ")
    pod = emu.pod(pod_id)
    assert emu.api_key not in pod.args and emu.api_key not in "".join(pod.container_env.values())
    assert pod.container_env["RUNPOD_API_KEY"] == pod.pod_key
    assert emu.request_violations == []


def test_dash_runs_the_switch_too(emu: RunPodEmulator, api: RunPodAPI, state_base: str) -> None:
    """Where /bin/sh is dash (Debian, Ubuntu images), the script must work under it, not just parse."""
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("dash is not installed here")
    switch = deadman.Switch(heartbeat_timeout_s=NEVER, grace_s=2, max_lifetime_s=NEVER, state_base=state_base)
    encoded = deadman.start_command(switch, "sleep infinity").replace("| sh'", f"| {dash}'")
    assert encoded != deadman.start_command(switch, "sleep infinity")
    pod_id = api.create_pod(PodSpec(name=NAME, image="runpod/pytorch:test", gpu_id=A5000, ports=(),
                                    args=encoded)).id
    assert arming_report(state_base, pod_id).startswith("ok: ")
    [call] = wait_for(lambda: emu.calls("DELETE", f"/v2/pods/{pod_id}"))
    assert (call.principal, call.status) == (f"pod:{pod_id}", 204)
    assert emu.request_violations == []


def test_no_heartbeat_within_the_grace_period_the_pod_deletes_itself(emu: RunPodEmulator, api: RunPodAPI,
                                                                     state_base: str) -> None:
    grace = 2
    started = time.monotonic()
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=3, grace_s=grace, max_lifetime_s=NEVER,
                                        state_base=state_base))
    [call] = wait_for(lambda: emu.calls("DELETE", f"/v2/pods/{pod_id}"), timeout=grace + 10)
    assert (call.principal, call.status) == (f"pod:{pod_id}", 204)  # by the pod's own key, not the account's
    assert grace - 1 <= call.at - started <= grace + 4  # whole seconds on the pod's clock, a 1 s poll
    assert api.get_pod(pod_id) is None and emu.pod(pod_id).terminate_requests == [f"pod:{pod_id}"]
    assert terminations(emu, pod_id) == [call]  # the first way worked: nothing else was tried
    assert f"firing: no heartbeat within {grace}s of start" in text_of(deadman.log_path(state_base, pod_id))
    assert emu.request_violations == []


def test_heartbeats_keep_the_pod_and_their_silence_kills_it(emu: RunPodEmulator, api: RunPodAPI,
                                                            tmp_path: Path, state_base: str) -> None:
    timeout, grace = 3, 3
    key = session.ensure_client_key(tmp_path / "ssh")
    created = time.monotonic()
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=timeout, grace_s=grace, max_lifetime_s=NEVER,
                                        state_base=state_base),
                    ports=("22/tcp",), env={"PUBLIC_KEY": session.public_key(key)})
    ssh = wait_for(lambda: (api.get_pod(pod_id) or pytest.fail("the pod went")).ssh)
    handle = session.MachineHandle(id=pod_id, name=NAME, host=ssh.host, port=ssh.port, user=ssh.user,
                                   key_file=str(key), known_hosts=str(tmp_path / "known_hosts"), workspace="",
                                   state_base=state_base, heartbeat_interval_s=0.5)
    beat = session.Heartbeat(handle)  # ralph's own heartbeat: heartbeat_command over SSH
    beat.start()
    try:
        # Past the grace period and two whole heartbeat timeouts, beats landing all along.
        wait_for(lambda: time.monotonic() - created > grace + 2 * timeout and beat.beats >= 8,
                 timeout=grace + 2 * timeout + 15)
        assert api.get_pod(pod_id) is not None and beat.failures == 0, beat.last_error
        assert "firing" not in text_of(deadman.log_path(state_base, pod_id))
    finally:
        beat.stop()
    last_beat = beat.last_beat
    assert last_beat is not None
    [call] = wait_for(lambda: emu.calls("DELETE", f"/v2/pods/{pod_id}"), timeout=timeout + 10)
    # The pod's clock counts whole seconds, the switch looks every second, and the last beat was
    # written a moment before its SSH command returned.
    assert timeout - 1.5 <= call.at - last_beat <= timeout + 3
    assert (call.principal, call.status) == (f"pod:{pod_id}", 204) and api.get_pod(pod_id) is None
    assert "firing: heartbeat stale for" in text_of(deadman.log_path(state_base, pod_id))
    assert emu.request_violations == []


def test_the_max_lifetime_fires_whatever_else(emu: RunPodEmulator, api: RunPodAPI, tmp_path: Path,
                                              state_base: str) -> None:
    lifetime = 5  # past the grace period and a heartbeat timeout: only the beats keep it until then
    started = time.monotonic()
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=3, grace_s=3, max_lifetime_s=lifetime,
                                        state_base=state_base))
    # ralph's heartbeat, beating all along: on this machine (the pods are local sandboxes), through
    # the same command and folder it uses over SSH.
    handle = session.MachineHandle(id=pod_id, name=NAME, host="", port=0, user="", key_file="",
                                   known_hosts=str(tmp_path / "local" / "known_hosts"), workspace=str(tmp_path),
                                   state_base=state_base, heartbeat_interval_s=0.3, kind="local")
    beat = session.Heartbeat(handle)
    beat.start()
    try:
        [call] = wait_for(lambda: emu.calls("DELETE", f"/v2/pods/{pod_id}"), timeout=lifetime + 10)
    finally:
        beat.stop()
    assert beat.beats > 1 and beat.failures == 0, beat.last_error
    assert lifetime - 1 <= call.at - started <= lifetime + 4
    assert (call.principal, call.status) == (f"pod:{pod_id}", 204)
    assert f"firing: max lifetime of {lifetime}s reached" in text_of(deadman.log_path(state_base, pod_id))
    assert emu.request_violations == []


def test_the_arming_report_says_ok_when_the_pod_key_reads_its_pod(emu: RunPodEmulator, api: RunPodAPI,
                                                                  state_base: str) -> None:
    pod_id = create(api, deadman.Switch(NEVER, NEVER, NEVER, state_base=state_base))
    assert arming_report(state_base, pod_id) == "ok: the pod key reads its own pod (HTTP 200)"
    [read] = emu.calls("GET", f"/v2/pods/{pod_id}")
    assert (read.principal, read.status) == (f"pod:{pod_id}", 200)
    assert "arming check: ok" in text_of(deadman.log_path(state_base, pod_id))
    assert emu.request_violations == []


def test_the_arming_report_says_why_the_switch_cannot_fire(emu: RunPodEmulator, api: RunPodAPI,
                                                           state_base: str) -> None:
    # The pod key refused: RunPod answers 403 to the pod's read of itself.
    emu.fail(Fault.FORBIDDEN, method="GET", path="/v2/pods/{id}")
    refused = create(api, deadman.Switch(NEVER, NEVER, NEVER, state_base=state_base))
    assert arming_report(state_base, refused) == "the pod key cannot read its own pod: HTTP 403"
    # The API out of reach: the container's RUNPOD_API_BASE_URL names a loopback port nobody listens
    # on (held bound, not listening, so nothing else takes it meanwhile).
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        unreachable = create(api, deadman.Switch(NEVER, NEVER, NEVER, state_base=state_base),
                             before=f"RUNPOD_API_BASE_URL={url} ")
        assert arming_report(state_base, unreachable) == f"cannot reach the API at {url}"
    assert emu.calls("GET", f"/v2/pods/{unreachable}") == []
    assert emu.request_violations == []


def test_a_pod_key_refused_termination_falls_back_to_graphql(emu: RunPodEmulator, api: RunPodAPI,
                                                             state_base: str) -> None:
    emu.pod_keys_may_terminate = False
    emu.enable_graphql()
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=3, grace_s=1, max_lifetime_s=NEVER,
                                        state_base=state_base))
    wait_for(lambda: emu.pod(pod_id).terminated)
    delete, action, graphql = wait_for(lambda: terminations(emu, pod_id) if len(terminations(emu, pod_id)) == 3 else [])
    assert (delete.method, delete.status, action.status) == ("DELETE", 403, 403)
    assert action.body == {"action": "terminate"}
    assert (graphql.path, graphql.status, graphql.principal) == ("/graphql", 200, f"pod:{pod_id}")
    assert pod_id in graphql.body["query"] and "podTerminate" in graphql.body["query"]
    assert {delete.principal, action.principal} == {f"pod:{pod_id}"}
    assert api.get_pod(pod_id) is None
    log = text_of(deadman.log_path(state_base, pod_id))
    assert "v2 DELETE: 403" in log and "v2 terminate action: 403" in log
    assert emu.request_violations == []


def test_with_every_way_refused_the_switch_keeps_trying_and_logs_why(emu: RunPodEmulator, api: RunPodAPI,
                                                                      state_base: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadman, "RETRY_S", 1)  # the script's pause between rounds, shortened
    emu.pod_keys_may_terminate = False  # and GraphQL retired (410), runpodctl on REST v1 (410)
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=3, grace_s=1, max_lifetime_s=NEVER,
                                        state_base=state_base))
    log_file = deadman.log_path(state_base, pod_id)
    runpodctl_refused = f"runpodctl: DELETE /v1/pods/{pod_id} -> 410"  # what runpodctl prints, logged
    wait_for(lambda: text_of(log_file).count(runpodctl_refused) >= 2)  # two whole rounds
    log = text_of(log_file)
    assert log.count("v2 DELETE: 403") >= 2 and log.count("v2 terminate action: 403") >= 2
    assert log.count("GraphQL podTerminate: 410") >= 2
    v1 = emu.calls("DELETE", f"/v1/pods/{pod_id}")
    assert len(v1) >= 2 and {(r.principal, r.status) for r in v1} == {(f"pod:{pod_id}", 410)}
    assert api.get_pod(pod_id) is not None  # nothing it may do can end the pod: it still bills
    assert emu.request_violations == []


@pytest.mark.parametrize("client", ["python3", "wget"])
def test_an_image_without_curl_still_fires(emu: RunPodEmulator, api: RunPodAPI, state_base: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    """Only python3, or only wget, on the PATH: each must read the status RunPod answers (a refused
    DELETE sends the switch on to the terminate action) and the pod still goes."""
    found = os.path.realpath(sys.executable) if client == "python3" else shutil.which(client)
    if found is None:
        pytest.skip(f"{client} is not installed here")
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in SCRIPT_TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    (tools / client).symlink_to(found)
    emu.fail(Fault.FORBIDDEN, method="DELETE", path="/v2/pods/{id}")
    with monkeypatch.context() as patch:
        patch.setenv("PATH", str(tools))  # what the emulated container's PATH is made of (plus runpodctl)
        pod_id = create(api, deadman.Switch(heartbeat_timeout_s=3, grace_s=1, max_lifetime_s=NEVER,
                                            state_base=state_base))
    path = emu.pod(pod_id).container_env["PATH"].split(os.pathsep)
    assert path[1:] == [str(tools)] and not any(Path(d, "curl").exists() for d in path)
    assert arming_report(state_base, pod_id) == "ok: the pod key reads its own pod (HTTP 200)"
    wait_for(lambda: emu.pod(pod_id).terminated)
    delete, action = wait_for(lambda: terminations(emu, pod_id) if len(terminations(emu, pod_id)) == 2 else [])
    assert (delete.method, delete.status, delete.fault) == ("DELETE", 403, Fault.FORBIDDEN)
    assert (action.path, action.body, action.status) == (f"/v2/pods/{pod_id}/action", {"action": "terminate"}, 204)
    assert {delete.principal, action.principal} == {f"pod:{pod_id}"} and api.get_pod(pod_id) is None
    log = text_of(deadman.log_path(state_base, pod_id))
    assert "firing: no heartbeat within 1s of start" in log and "v2 DELETE: 403" in log
    assert emu.request_violations == []
