"""The RunPod emulator answers the real runpod SDK (1.12.0) the way RunPod does: every query the SDK
sends, the pod life cycle, pods as real sandboxes (start command, OpenSSH), and each injected fault
surfacing as the SDK exception the real failure would raise."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import requests
import runpod
from runpod import error as sdk_error

from tests.far.runpod_emulator import (
    CAPACITY_MESSAGE,
    RESUME_CAPACITY_MESSAGE,
    DEFAULT_GPU_TYPES,
    EmulatedPod,
    Fault,
    RunPodEmulator,
    emulated_runpod,
    parse_operation,
)

GPU = "NVIDIA GeForce RTX 4090"
OTHER_GPU = "NVIDIA L40S"
VOLUMES = [{"id": "vol123", "name": "models", "size": 50, "dataCenterId": "EU-RO-1"}]


@pytest.fixture
def emu(tmp_path, monkeypatch):
    """An emulator with the account key set as the SDK's global key (the SDK never reads the env)."""
    gen = emulated_runpod(tmp_path / "runpod", monkeypatch, network_volumes=VOLUMES, kill_grace_s=0.3)
    emulator = next(gen)
    monkeypatch.setattr(runpod, "api_key", emulator.api_key)
    yield emulator
    gen.close()


def create(name: str = "ralph-test", gpu: str = GPU, **kwargs) -> dict:
    return runpod.create_pod(name, "runpod/pytorch:2.4.0", gpu, ports="8188/http,22/tcp", **kwargs)


def ssh(pod: EmulatedPod, port: int, command: str) -> subprocess.CompletedProcess:
    known = pod.directory / "known_hosts"
    known.write_text(pod.ssh.known_hosts_line() + "\n")
    return subprocess.run(
        ["ssh", "-i", str(pod.ssh.client_key), "-p", str(port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5",
         "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=20,
    )


def public_ssh_port(raw_pod: dict) -> int:
    [entry] = [p for p in raw_pod["runtime"]["ports"]
               if p["privatePort"] == 22 and p["type"] == "tcp" and p["isIpPublic"]]
    return entry["publicPort"]


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# ---- queries -------------------------------------------------------------------------------------


def test_gpu_types_list_has_exactly_the_selected_fields(emu):
    gpus = runpod.get_gpus()
    assert [g["id"] for g in gpus] == [g.id for g in DEFAULT_GPU_TYPES]
    assert all(set(g) == {"id", "displayName", "memoryInGb"} for g in gpus)


def test_single_gpu_lookup_prices_the_asked_count(emu):
    gpu = runpod.get_gpu(OTHER_GPU, 2)
    assert gpu["id"] == OTHER_GPU and gpu["memoryInGb"] == 48
    assert gpu["lowestPrice"]["uninterruptablePrice"] == pytest.approx(0.86 * 2)
    with pytest.raises(ValueError, match="No GPU found"):
        runpod.get_gpu("NVIDIA GeForce GTX 280")


def test_myself_returns_pub_key_and_network_volumes(emu):
    me = runpod.get_user()
    assert me["networkVolumes"] == VOLUMES and "pubKey" in me


def test_create_with_network_volume_looks_up_its_data_centre(emu):
    created = create(network_volume_id="vol123", volume_mount_path="/workspace")
    pod = emu.pod(created["id"])
    assert pod.data_center_id == "EU-RO-1" and pod.network_volume_id == "vol123"
    assert [r.fields for r in emu.requests] == [("gpuTypes",), ("myself",), ("podFindAndDeployOnDemand",)]
    assert pod.volume_mount_path == "/workspace"


def test_create_answers_the_sdk_shape_and_counts_pods(emu):
    created = create(env={"HF_HOME": "/workspace/hf"})
    assert set(created) == {"id", "imageName", "env", "machineId", "machine"}
    assert created["machine"]["podHostId"].startswith(created["id"])
    assert created["env"] == ["HF_HOME=/workspace/hf"]
    assert emu.pods_created == 1 and len(emu.calls("podFindAndDeployOnDemand")) == 1


def test_unescaped_quote_in_a_value_is_a_syntax_error_as_on_the_real_server(emu):
    with pytest.raises(sdk_error.QueryError, match="Syntax Error"):
        create(name='say "hi"')
    assert emu.pods_created == 0
    assert emu.calls("podFindAndDeployOnDemand") == [] and emu.requests[-1].status == 400


def test_unknown_field_is_a_graphql_error_not_a_silent_answer(emu):
    with pytest.raises(sdk_error.QueryError, match='Cannot query field "balance"'):
        runpod.api.graphql.run_graphql_query("query { myself { id balance } }")


def test_parser_reads_escapes_enums_lists_and_objects():
    op = parse_operation(r'mutation { f(input: { a: "q\"\\\n\u00e9", b: ALL, c: [1, 2.5, null], d: {e: true} }) { id } }')
    args = op.fields[0].args["input"]
    assert args == {"a": 'q"\\\n\u00e9', "b": "ALL", "c": [1, 2.5, None], "d": {"e": True}}
    assert op.kind == "mutation" and op.fields[0].selections[0].name == "id"


# ---- life cycle ----------------------------------------------------------------------------------


def test_runtime_is_null_for_the_configured_polls_then_a_real_sshd_answers(emu):
    emu.runtime_after_polls = 2
    pod_id = create()["id"]
    first, second, third = (runpod.get_pod(pod_id) for _ in range(3))
    assert first["desiredStatus"] == second["desiredStatus"] == "RUNNING"
    assert first["runtime"] is None and second["runtime"] is None
    port = public_ssh_port(third)
    assert third["costPerHr"] == pytest.approx(0.69) and third["machine"]["gpuDisplayName"] == "RTX 4090"
    pod = emu.pod(pod_id)
    result = ssh(pod, port, "echo $RUNPOD_POD_ID; pwd")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [pod_id, str(pod.workspace)]


def test_runtime_waits_for_the_configured_seconds(emu):
    emu.runtime_after_s = 0.4
    pod_id = create()["id"]
    assert runpod.get_pod(pod_id)["runtime"] is None
    time.sleep(0.45)
    assert runpod.get_pod(pod_id)["runtime"]["ports"]


def test_runtime_that_never_appears(emu):
    emu.runtime_never = True
    pod_id = create()["id"]
    for _ in range(20):
        assert runpod.get_pod(pod_id)["runtime"] is None
    assert runpod.get_pods()[0]["runtime"] is None


def test_list_shows_live_pods_and_terminated_ones_leave(emu):
    a, b = create("ralph-a")["id"], create("ralph-b")["id"]
    assert {p["id"] for p in runpod.get_pods()} == {a, b}
    runpod.terminate_pod(a)
    assert [p["id"] for p in runpod.get_pods()] == [b]
    assert runpod.get_pod(a) is None
    assert [p.id for p in emu.live_pods()] == [b] and emu.pods_created == 2


def test_stop_keeps_stale_ports_and_resume_starts_afresh(emu):
    pod_id = create()["id"]
    old_port = public_ssh_port(runpod.get_pod(pod_id))
    assert runpod.stop_pod(pod_id) == {"id": pod_id, "desiredStatus": "EXITED"}
    stopped = runpod.get_pod(pod_id)
    assert stopped["desiredStatus"] == "EXITED" and public_ssh_port(stopped) == old_port
    assert refuses(old_port)
    assert runpod.get_pods()[0]["desiredStatus"] == "EXITED"  # a stopped pod still exists (and bills)
    emu.runtime_after_polls = 1
    assert runpod.resume_pod(pod_id, 1)["desiredStatus"] == "RUNNING"
    assert runpod.get_pod(pod_id)["runtime"] is None
    new_port = public_ssh_port(runpod.get_pod(pod_id))
    assert ssh(emu.pod(pod_id), new_port, "true").returncode == 0


def test_resume_without_free_gpus(emu):
    pod_id = create()["id"]
    runpod.stop_pod(pod_id)
    emu.no_capacity(GPU)
    with pytest.raises(sdk_error.QueryError, match=RESUME_CAPACITY_MESSAGE):
        runpod.resume_pod(pod_id, 1)


def test_start_command_runs_in_the_workspace_with_the_pod_env_and_dies_on_terminate(emu):
    pod_id = create(docker_args="bash -c 'echo $RUNPOD_POD_ID $RUNPOD_TCP_PORT_22 $MODE > boot.txt; exec sleep 60'",
                    env={"MODE": "test"})["id"]
    pod = emu.pod(pod_id)
    boot = wait_for(lambda: (pod.workspace / "boot.txt").exists() and (pod.workspace / "boot.txt").read_text())
    assert boot.split() == [pod_id, str(pod.ssh_port), "test"]
    pid, port = pod.process.pid, public_ssh_port(runpod.get_pod(pod_id))
    runpod.terminate_pod(pod_id)
    assert not Path(f"/proc/{pid}").exists()
    assert refuses(port)


def test_pod_scoped_key_terminates_its_own_pod_from_the_start_command(emu):
    """What a dead-man's switch does: the pod's own key and runpodctl, no SSH involved."""
    pod_id = create(docker_args="bash -c 'sleep 0.2; runpodctl remove pod $RUNPOD_POD_ID; sleep 60'")["id"]
    wait_for(lambda: runpod.get_pod(pod_id) is None)
    [call] = emu.calls("podTerminate")
    assert call.principal == f"pod:{pod_id}" and call.status == 200
    assert emu.live_pods() == []


def test_pod_scoped_key_is_limited_to_its_own_pod(emu):
    mine, other = create("ralph-a")["id"], create("ralph-b")["id"]
    key = emu.pod(mine).pod_key
    assert runpod.get_pod(mine, api_key=key)["id"] == mine
    with pytest.raises(sdk_error.AuthenticationError):
        runpod.get_pod(other, api_key=key)
    with pytest.raises(sdk_error.AuthenticationError):
        runpod.get_pods(api_key=key)
    with pytest.raises(sdk_error.AuthenticationError):
        runpod.get_gpus(api_key=key)
    body = json.dumps({"query": f'mutation {{ podTerminate(input: {{ podId: "{mine}" }}) }}'}).encode()
    request = urllib.request.Request(emu.url + "/graphql", data=body,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response) == {"data": {"podTerminate": None}}
    assert runpod.get_pod(mine) is None and runpod.get_pod(other) is not None
    with pytest.raises(sdk_error.AuthenticationError):  # a terminated pod's key is dead
        runpod.get_pod(mine, api_key=key)


def test_pod_record_exposes_pod_env_without_the_account_key(emu):
    pod_id = create()["id"]
    pod = emu.pod(pod_id)
    env = pod.pod_env(emu.url, "127.0.0.1")
    assert env["RUNPOD_POD_ID"] == pod_id and env["RUNPOD_API_BASE_URL"] == emu.url
    assert env["RUNPOD_API_KEY"] == pod.pod_key != emu.api_key
    assert emu.api_key not in repr(emu.requests) and emu.api_key not in repr(pod)


# ---- faults --------------------------------------------------------------------------------------


def test_unknown_key_is_http_401(emu):
    with pytest.raises(sdk_error.AuthenticationError):
        runpod.get_gpus(api_key="rp_wrong")
    assert emu.requests[-1].status == 401 and emu.requests[-1].principal is None


def test_capacity_error_for_chosen_gpu_types_only(emu):
    emu.no_capacity(GPU)
    with pytest.raises(sdk_error.QueryError) as info:
        create()
    assert str(info.value) == CAPACITY_MESSAGE
    assert create(gpu=OTHER_GPU)["id"] and emu.pods_created == 1
    emu.restore_capacity()
    assert create()["id"] and emu.pods_created == 2


@pytest.mark.parametrize(("fault", "raised"), [
    (Fault.UNAUTHORIZED, sdk_error.AuthenticationError),
    (Fault.SERVER_ERROR, requests.exceptions.JSONDecodeError),
    (Fault.SERVER_ERROR_JSON, sdk_error.QueryError),
    (Fault.RATE_LIMITED, requests.exceptions.JSONDecodeError),
    (Fault.RATE_LIMITED_JSON, sdk_error.QueryError),
    (Fault.GARBAGE, requests.exceptions.JSONDecodeError),
    (Fault.NO_DATA, KeyError),
    (Fault.NULL_DATA, TypeError),
])
def test_each_fault_reaches_the_sdk_as_the_real_failure_would(emu, fault, raised):
    emu.fail(fault, operation="gpuTypes")
    with pytest.raises(raised):
        runpod.get_gpus()
    assert emu.requests[-1].fault == fault
    assert len(runpod.get_gpus()) == len(DEFAULT_GPU_TYPES)  # times=1: the next call is fine


def test_fault_filters_by_operation_and_counts_times(emu):
    emu.fail(Fault.SERVER_ERROR, operation="podTerminate", times=2)
    pod_id = create()["id"]  # gpuTypes + create are untouched
    for _ in range(2):
        with pytest.raises(requests.exceptions.JSONDecodeError):
            runpod.terminate_pod(pod_id)
    assert runpod.get_pod(pod_id) is not None
    runpod.terminate_pod(pod_id)
    assert runpod.get_pod(pod_id) is None
    assert [r.status for r in emu.calls("podTerminate")] == [502, 502, 200]


def test_lost_create_response_still_creates_the_pod(emu):
    emu.fail(Fault.GARBAGE, operation="podFindAndDeployOnDemand", after=True)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        create("ralph-lost")
    assert emu.pods_created == 1
    assert [p["name"] for p in runpod.get_pods()] == ["ralph-lost"]


def test_acknowledged_termination_that_does_not_happen(emu):
    pod_id = create()["id"]
    emu.ignore_terminations(times=1)
    assert runpod.terminate_pod(pod_id) is None
    assert runpod.get_pod(pod_id)["desiredStatus"] == "RUNNING"
    assert emu.pod(pod_id).terminate_requests == 1
    runpod.terminate_pod(pod_id)
    assert runpod.get_pod(pod_id) is None


def test_stop_releases_every_process(tmp_path, monkeypatch):
    root = tmp_path / "rp"
    with RunPodEmulator(root, kill_grace_s=0.2) as emulator:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.url)
        monkeypatch.setattr(runpod, "api_key", emulator.api_key)
        create(docker_args="sleep 60")
        pod = emulator.all_pods[0]
        pid, sshd_pid = pod.process.pid, pod.ssh.process.pid
    assert not Path(f"/proc/{pid}").exists() and not Path(f"/proc/{sshd_pid}").exists()


def test_a_literal_of_the_wrong_type_is_rejected_without_creating_a_pod(emu):
    query = 'mutation { podFindAndDeployOnDemand(input: { name: "n", imageName: "i", gpuTypeId: "%s", gpuCount: "two" }) { id } }'
    with pytest.raises(sdk_error.QueryError, match="Invalid value"):
        runpod.api.graphql.run_graphql_query(query % GPU)
    assert emu.pods_created == 0 and emu.requests[-1].status == 400


def test_a_failing_sandbox_is_a_500_not_a_dropped_connection(tmp_path, monkeypatch):
    def broken_sshd(pod_id, workspace, env):
        raise RuntimeError("sshd exited (255)")

    gen = emulated_runpod(tmp_path / "rp", monkeypatch, start_ssh=broken_sshd)
    emulator = next(gen)
    monkeypatch.setattr(runpod, "api_key", emulator.api_key)
    with pytest.raises(sdk_error.QueryError, match="sshd exited"):
        create()
    assert emulator.requests[-1].status == 500
    gen.close()


def test_pluggable_ssh_hook_gets_the_pod_and_is_stopped_on_terminate(tmp_path, monkeypatch):
    seen, stopped = [], []

    def hook(pod_id, workspace, env):
        seen.append((pod_id, workspace, env["RUNPOD_POD_ID"], env["RUNPOD_API_BASE_URL"]))
        return "127.0.0.1", 2222, lambda: stopped.append(pod_id)

    gen = emulated_runpod(tmp_path / "rp", monkeypatch, start_ssh=hook)
    emulator = next(gen)
    monkeypatch.setattr(runpod, "api_key", emulator.api_key)
    pod_id = create()["id"]
    assert seen == [(pod_id, emulator.pod(pod_id).workspace, pod_id, emulator.url)]
    assert public_ssh_port(runpod.get_pod(pod_id)) == 2222
    runpod.terminate_pod(pod_id)
    assert stopped == [pod_id]
    gen.close()
