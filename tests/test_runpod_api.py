"""ralph's RunPod adapter over the real, pinned SDK against the emulator: the pod life cycle, values
that would break the SDK's pasted GraphQL, and every failure mapped to ralph's exceptions without
ever showing the key."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import threading
import traceback

import pytest
import runpod
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ralph.handlers.runpod.api import (
    SDK_VERSION,
    APIError,
    AuthError,
    CapacityError,
    RunPodAPI,
    SshEndpoint,
    TransientAPIError,
    graphql_string,
    script_start_command,
)
from tests.far.runpod_emulator import Fault, RunPodEmulator, emulated_runpod

GPU = "NVIDIA GeForce RTX 4090"
OTHER_GPU = "NVIDIA RTX A5000"
IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"


@pytest.fixture
def emu(tmp_path, monkeypatch):
    yield from emulated_runpod(tmp_path / "runpod", monkeypatch, kill_grace_s=0.3)


@pytest.fixture
def api(emu):
    return RunPodAPI(emu.api_key)


def create(api: RunPodAPI, name: str = "ralph-run1-a", **kwargs) -> str:
    kwargs.setdefault("gpu_type_id", GPU)
    return api.create_pod(name=name, image=IMAGE, **kwargs)


def test_the_sdk_is_the_pinned_version():
    assert SDK_VERSION == "1.12.0"
    assert runpod.__version__ == SDK_VERSION == importlib.metadata.version("runpod")


def test_gpu_types_and_price(api):
    ids = [g.id for g in api.gpu_types()]
    assert GPU in ids and OTHER_GPU in ids
    gpu = api.gpu_type(GPU, gpu_count=2)
    assert (gpu.display_name, gpu.memory_gb, gpu.max_gpu_count) == ("RTX 4090", 24, 8)
    assert gpu.price_per_hr == pytest.approx(1.38)


def test_life_cycle_create_wait_ssh_stop_terminate(emu, api):
    emu.runtime_after_polls = 2
    pod_id = create(api, ports="8188/http,22/tcp", env={"HF_HOME": "/workspace/hf"})
    first = api.get_pod(pod_id)
    assert first.running and first.ssh is None and first.ports == ()
    assert first.cost_per_hr == pytest.approx(0.69) and first.gpu == "RTX 4090" and first.name == "ralph-run1-a"
    assert api.get_pod(pod_id).ssh is None
    ready = api.get_pod(pod_id)
    assert ready.ssh == SshEndpoint("127.0.0.1", emu.pod(pod_id).ssh_port, "root")
    server = emu.pod(pod_id).ssh
    known = emu.pod(pod_id).directory / "known_hosts"
    known.write_text(server.known_hosts_line() + "\n")
    done = subprocess.run(
        ["ssh", "-i", str(server.client_key), "-p", str(ready.ssh.port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={known}", f"{ready.ssh.user}@{ready.ssh.host}", "echo $HF_HOME"],
        capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() == "/workspace/hf", done.stderr
    assert [p.id for p in api.list_pods()] == [pod_id]

    assert api.stop_pod(pod_id) == "EXITED"
    stopped = api.get_pod(pod_id)
    assert stopped.desired_status == "EXITED" and stopped.ports and stopped.ssh is None  # stale ports ignored
    assert api.resume_pod(pod_id) == "RUNNING"

    api.terminate_pod(pod_id)
    assert api.get_pod(pod_id) is None and api.list_pods() == []
    assert emu.pods_created == 1


def test_create_sends_workspace_mount_and_the_asked_choice(emu, api):
    create(api, gpu_type_id=OTHER_GPU, gpu_count=2, cloud_type="SECURE", data_center_id="EU-RO-1",
           container_disk_gb=30, volume_gb=5, ports="22/tcp")
    [pod] = emu.all_pods
    assert pod.volume_mount_path == "/workspace"
    assert (pod.gpu.id, pod.gpu_count, pod.cloud_type, pod.data_center_id) == (OTHER_GPU, 2, "SECURE", "EU-RO-1")
    assert (pod.container_disk_gb, pod.volume_gb, pod.ports) == (30, 5, "22/tcp")
    assert api.get_pod(pod.id).cost_per_hr == pytest.approx(0.54)


HOSTILE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=HOSTILE, value=HOSTILE, command=HOSTILE)
def test_pasted_values_reach_runpod_unchanged(tmp_path_factory, monkeypatch, name, value, command):
    """Quotes, backslashes, newlines, braces and unicode in any pasted value round-trip exactly."""
    root = tmp_path_factory.mktemp("rp")
    with RunPodEmulator(root, start_ssh=None, run_start_command=False) as emulator:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.url)
        api = RunPodAPI(emulator.api_key)
        pod_id = create(api, name=name, env={"V": value}, start_command=command)
        pod = emulator.pod(pod_id)
        assert (pod.name, pod.env, pod.docker_args) == (name, {"V": value}, command)
        assert api.get_pod(pod_id).name == name


def test_script_start_command_runs_the_script_verbatim(emu, api):
    script = 'set -e\nmsg="it\'s \\"quoted\\" $RUNPOD_POD_ID"\nprintf "%s\\n" "$msg" > boot.txt\nsleep 30\n'
    pod_id = create(api, start_command=script_start_command(script))
    boot = emu.pod(pod_id).workspace / "boot.txt"
    for _ in range(200):
        if boot.exists() and boot.read_text():
            break
        threading.Event().wait(0.02)
    assert boot.read_text() == f'it\'s "quoted" {pod_id}\n'


def test_graphql_string_escapes_what_would_end_or_break_a_literal():
    assert graphql_string('a"b\\c\nd\te\x01') == 'a\\"b\\\\c\\nd\\te\\u0001'


# ---- failures ------------------------------------------------------------------------------------


def test_capacity_is_a_capacity_error_and_the_next_choice_works(emu, api):
    emu.no_capacity(GPU)
    with pytest.raises(CapacityError, match="no longer any instances"):
        create(api)
    assert create(api, gpu_type_id=OTHER_GPU)
    assert emu.pods_created == 1


def test_resume_without_free_gpus_is_a_capacity_error(emu, api):
    pod_id = create(api)
    api.stop_pod(pod_id)
    emu.no_capacity(GPU)
    with pytest.raises(CapacityError, match="not enough free GPUs"):
        api.resume_pod(pod_id)


@pytest.mark.parametrize(("fault", "expected"), [
    (Fault.UNAUTHORIZED, AuthError),
    (Fault.SERVER_ERROR, TransientAPIError),
    (Fault.SERVER_ERROR_JSON, TransientAPIError),
    (Fault.RATE_LIMITED, TransientAPIError),
    (Fault.RATE_LIMITED_JSON, TransientAPIError),
    (Fault.GARBAGE, TransientAPIError),
    (Fault.NO_DATA, TransientAPIError),
    (Fault.NULL_DATA, TransientAPIError),
])
@pytest.mark.parametrize("call", ["gpu_types", "create", "get", "list", "terminate"])
def test_every_fault_becomes_ralphs_exception_without_the_key(emu, api, fault, expected, call):
    pod_id = create(api) if call in ("get", "terminate") else None
    emu.fail(fault, times=None)
    action = {
        "gpu_types": api.gpu_types,
        "create": lambda: create(api),
        "get": lambda: api.get_pod(pod_id),
        "list": api.list_pods,
        "terminate": lambda: api.terminate_pod(pod_id),
    }[call]
    key_before = runpod.api_key
    with pytest.raises(expected) as info:
        action()
    assert type(info.value) is expected
    shown = str(info.value) + repr(info.value) + "".join(traceback.format_exception(info.value))
    assert emu.api_key not in shown
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert runpod.api_key == key_before != emu.api_key  # the key does not linger in the SDK's global


def test_unknown_key_is_an_auth_error(emu):
    with pytest.raises(AuthError) as info:
        RunPodAPI("rp_not_a_real_key_123").list_pods()
    assert "rp_not_a_real_key_123" not in str(info.value) + repr(info.value)


def test_missing_key_and_from_env(emu, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(AuthError):
        RunPodAPI.from_env()
    monkeypatch.setenv("RUNPOD_API_KEY", emu.api_key)
    api = RunPodAPI.from_env()
    assert api.gpu_types() and emu.api_key not in repr(api)


def test_unknown_gpu_and_missing_pod_are_plain_api_errors(emu, api):
    with pytest.raises(APIError) as unknown:
        create(api, gpu_type_id="NVIDIA GeForce GTX 280")
    with pytest.raises(APIError, match="not found") as missing:
        api.terminate_pod("nosuchpod00000")
    for info in (unknown, missing):
        assert not isinstance(info.value, (CapacityError, TransientAPIError, AuthError))
    assert emu.pods_created == 0


def test_lost_create_response_is_transient_and_the_pod_is_findable_by_name(emu, api):
    emu.fail(Fault.GARBAGE, operation="podFindAndDeployOnDemand", after=True)
    with pytest.raises(TransientAPIError):
        create(api, name="ralph-run7-a")
    assert [p.name for p in api.list_pods()] == ["ralph-run7-a"]


def test_unreachable_api_is_transient(tmp_path, monkeypatch):
    with RunPodEmulator(tmp_path / "rp") as emulator:
        url, key = emulator.url, emulator.api_key
    monkeypatch.setenv("RUNPOD_API_BASE_URL", url)
    with pytest.raises(TransientAPIError, match="ConnectionError"):
        RunPodAPI(key).list_pods()


def test_bad_pod_ids_are_refused_before_any_request(emu, api):
    for bad in ['x" }) { id } }', "", "a b"]:
        with pytest.raises(ValueError):
            api.get_pod(bad)
    assert emu.requests == []


def test_concurrent_callers_keep_their_own_keys(emu, api):
    """The SDK's key is a module global; two keys used from two threads must never cross."""
    pod_id = create(api)
    pod_api = RunPodAPI(emu.pod(pod_id).pod_key)
    errors: list[BaseException] = []

    def loop(fn):
        try:
            for _ in range(150):
                fn()
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(api.list_pods,)),
               threading.Thread(target=loop, args=(lambda: pod_api.get_pod(pod_id),))]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unguarded global would be caught crossing
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    reads = emu.requests[2:]
    assert {r.principal for r in reads if r.fields == ("myself",)} == {"account"}
    assert {r.principal for r in reads if r.fields == ("pod",)} == {f"pod:{pod_id}"}
    assert all(r.status == 200 for r in reads) and len(reads) == 300

