"""The RunPod emulator answers REST v2 as RunPod's OpenAPI document says, over real sockets: pods that
become RUNNING with a real sshd, capacity and the catalog, faults, pod keys, retired APIs, network
volumes. Every fixture teardown also asserts that each response kept the contract."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.far.runpod_emulator import (
    CAPACITY_MESSAGE,
    RESUME_CAPACITY_MESSAGE,
    EmulatedPod,
    Fault,
    RunPodEmulator,
    emulated_runpod,
)
from tests.far.sshd import keygen
from tests.waiting import wait_for

GPU = "NVIDIA L4"  # 0.43/h on secure cloud, not sold on community cloud
OTHER_GPU = "NVIDIA GeForce RTX 4090"


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    yield from emulated_runpod(tmp_path / "runpod", monkeypatch, kill_grace_s=0.3)


@pytest.fixture
def api(emu: RunPodEmulator) -> Iterator[httpx.Client]:
    """What ralph's client is: httpx against RUNPOD_API_BASE_URL + /v2 with the account key."""
    with httpx.Client(base_url=emu.url + "/v2", headers={"Authorization": f"Bearer {emu.api_key}"},
                      timeout=20) as client:
        yield client


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "keys" / "id_ed25519")


def pod_body(**fields: Any) -> dict[str, Any]:
    body = {"name": "ralph-test", "image": "runpod/pytorch:2.4.0", "gpu": {"id": GPU, "count": 1},
            "ports": ["22/tcp"]}
    body.update(fields)
    return body


def create(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/pods", json=pod_body(**fields))
    assert response.status_code == 201, response.text
    return response.json()


def read_until(api: httpx.Client, pod_id: str, status: str, reads: int = 10) -> dict[str, Any]:
    """Read the pod (reads move it on) until it reports ``status``."""
    for _ in range(reads):
        pod = api.get(f"/pods/{pod_id}").json()
        if pod["status"] == status:
            return pod
    raise AssertionError(f"pod {pod_id} never reported {status}; last {pod['status']}")


def file_text(path: Path) -> str | None:
    return path.read_text() if path.exists() and path.read_text().endswith("\n") else None


def ssh(pod: EmulatedPod, key: Path, port: int, command: str) -> subprocess.CompletedProcess:
    known = pod.directory / "known_hosts"
    known.write_text(pod.sshd.known_hosts_line() + "\n")
    return subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
         "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5", "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=30,
    )


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def availability(api: httpx.Client, gpu: str = GPU, **params: Any) -> dict[str, Any]:
    response = api.get(f"/catalog/gpus/{gpu}", params={"include": "AVAILABILITY", "product": "POD", **params})
    assert response.status_code == 200, response.text
    return response.json()


def as_pod(emu: RunPodEmulator, pod_id: str) -> httpx.Client:
    return httpx.Client(base_url=emu.url + "/v2", timeout=20,
                        headers={"Authorization": f"Bearer {emu.pod(pod_id).pod_key}"})


# ---- life cycle ------------------------------------------------------------------------------------


def test_a_pod_goes_to_running_with_direct_ssh_to_a_real_sshd(emu, api, client_key):
    public_key = client_key.with_name(client_key.name + ".pub").read_text().strip()
    created = create(api, env={"PUBLIC_KEY": public_key, "MODE": "test"}, ports=["8188/http", "22/tcp"])
    assert created["status"] == "PROVISIONING" and created["ssh"]["direct"] is None
    assert created["runtime"] is None and created["cloud"] == "SECURE" and created["gpu"] == {"id": GPU, "count": 1}
    reads = [api.get(f"/pods/{created['id']}").json() for _ in range(3)]  # reads_per_phase=1
    assert [r["status"] for r in reads] == ["PROVISIONING", "STARTING", "RUNNING"]
    assert reads[1]["ssh"]["direct"] is None and reads[1]["ssh"]["proxy"]["host"] == "ssh.runpod.io"
    running = reads[2]
    assert running["actions"] == ["stop", "restart", "terminate"] and running["startedAt"]
    assert running["cost"] == pytest.approx(0.43) and running["dataCenterId"] in ("EU-RO-1", "US-TX-3", "EU-SE-1")
    direct = running["ssh"]["direct"]
    assert direct["host"] == "127.0.0.1" and direct["username"] == "root"
    assert direct["command"] == f"ssh root@127.0.0.1 -p {direct['port']}"
    assert {"private": 22, "public": direct["port"], "type": "tcp", "ip": "127.0.0.1"} in running["runtime"]["ports"]
    pod = emu.pod(created["id"])
    result = ssh(pod, client_key, direct["port"], "echo $RUNPOD_POD_ID $MODE; pwd; true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [created["id"], "test", str(pod.workspace)]


def test_terminating_takes_every_process_of_the_pod_with_it(emu, api, client_key):
    """A daemon started over SSH with setsid leaves sshd's tree, but not the container."""
    public_key = client_key.with_name(client_key.name + ".pub").read_text().strip()
    pod = read_until(api, create(api, env={"PUBLIC_KEY": public_key})["id"], "RUNNING")
    started = ssh(emu.pod(pod["id"]), client_key, pod["ssh"]["direct"]["port"],
                  "setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' > /dev/null 2>&1 < /dev/null &")
    assert started.returncode == 0, started.stderr
    pid = int(wait_for(lambda: file_text(emu.pod(pod["id"]).workspace / "daemon.pid")))
    assert alive(pid)
    api.delete(f"/pods/{pod['id']}")
    wait_for(lambda: not alive(pid))  # SIGKILLed; a moment until init reaps it
    assert emu.leftover_processes() == []


def test_a_workspace_link_finds_the_pod_before_it_exists(tmp_path):
    link = tmp_path / "pod-workspace"
    with RunPodEmulator(tmp_path / "rp", workspace_link=link) as emulator:
        with httpx.Client(base_url=emulator.url + "/v2", timeout=20,
                          headers={"Authorization": f"Bearer {emulator.api_key}"}) as client:
            pod_id = create(client, ports=[])["id"]
        assert link.resolve() == emulator.pod(pod_id).workspace.resolve()


def test_phases_advance_on_reads_one_per_phase(emu, api):
    pod_id = create(api)["id"]
    assert [api.get(f"/pods/{pod_id}").json()["status"] for _ in range(4)] == \
        ["PROVISIONING", "STARTING", "RUNNING", "RUNNING"]
    emu.reads_per_phase = 0
    assert api.get(f"/pods/{create(api)['id']}").json()["status"] == "RUNNING"


def test_a_pod_that_never_finishes_starting(emu, api):
    emu.seconds_per_phase = float("inf")
    pod_id = create(api)["id"]
    assert {api.get(f"/pods/{pod_id}").json()["status"] for _ in range(10)} == {"PROVISIONING"}


def test_an_sshd_only_when_22_tcp_is_exposed(emu, api, client_key):
    pod = read_until(api, create(api, ports=["8188/http"])["id"], "RUNNING")
    assert pod["ssh"]["direct"] is None and emu.pod(pod["id"]).sshd is None
    assert pod["runtime"]["ports"] == [{"private": 8188, "public": None, "type": "http", "ip": None}]


def test_sshd_trusts_only_the_pods_public_key(emu, api, client_key, tmp_path):
    other = keygen(tmp_path / "other" / "id_ed25519")
    public_key = other.with_name(other.name + ".pub").read_text().strip()
    pod = read_until(api, create(api, env={"PUBLIC_KEY": public_key})["id"], "RUNNING")
    result = ssh(emu.pod(pod["id"]), client_key, pod["ssh"]["direct"]["port"], "true")
    assert result.returncode == 255 and "Permission denied" in result.stderr


def test_the_start_command_gets_the_pod_env_and_dies_with_the_pod(emu, api):
    pod_id = create(api, env={"MODE": "test"}, args="env > env.txt; echo done >> env.txt; exec sleep 60")["id"]
    pod = emu.pod(pod_id)
    lines = wait_for(lambda: file_text(pod.workspace / "env.txt")).splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["RUNPOD_POD_ID"] == pod_id and env["MODE"] == "test" and env["RUNPOD_API_BASE_URL"] == emu.url
    assert env["RUNPOD_API_KEY"] == pod.pod_key != emu.api_key
    assert emu.api_key not in "".join(lines) and env["RUNPOD_TCP_PORT_22"] == str(pod.sshd.port)
    pid, sshd_port = pod.process.pid, pod.sshd.port
    assert api.delete(f"/pods/{pod_id}").status_code == 204
    assert not Path(f"/proc/{pid}").exists() and refuses(sshd_port)
    gone = api.get(f"/pods/{pod_id}")
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
    assert api.get("/pods").json() == {"pods": []} and emu.live_pods() == []


def test_stop_start_and_actions_that_do_not_fit_the_status(emu, api):
    pod_id = create(api, args="exec sleep 60")["id"]
    running = read_until(api, pod_id, "RUNNING")
    old_port, old_pid = running["ssh"]["direct"]["port"], emu.pod(pod_id).process.pid
    stopped = api.post(f"/pods/{pod_id}/action", json={"action": "stop"})
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "EXITED" and stopped.json()["cost"] == 0
    assert stopped.json()["ssh"]["direct"] is None and stopped.json()["actions"] == ["start", "terminate"]
    assert refuses(old_port) and not Path(f"/proc/{old_pid}").exists()
    conflict = api.post(f"/pods/{pod_id}/action", json={"action": "stop"})
    assert conflict.status_code == 409 and "EXITED" in conflict.json()["detail"]
    assert api.post(f"/pods/{pod_id}/action", json={"action": "start"}).json()["status"] == "PROVISIONING"
    again = read_until(api, pod_id, "RUNNING")
    assert again["ssh"]["direct"]["port"] and again["cost"] == pytest.approx(0.43)
    assert api.post(f"/pods/{pod_id}/action", json={"action": "terminate"}).status_code == 204
    assert api.get(f"/pods/{pod_id}").status_code == 404


def test_start_needs_free_gpus_on_its_data_centre(emu, api):
    pod = create(api)
    api.post(f"/pods/{pod['id']}/action", json={"action": "stop"})
    emu.no_capacity(GPU, pod["dataCenterId"])
    refused = api.post(f"/pods/{pod['id']}/action", json={"action": "start"})
    assert refused.status_code == 400 and refused.json()["detail"] == RESUME_CAPACITY_MESSAGE


def test_the_emulator_leaves_no_process_behind(tmp_path):
    with RunPodEmulator(tmp_path / "rp", kill_grace_s=0.2) as emulator:
        with httpx.Client(base_url=emulator.url + "/v2", timeout=20,
                          headers={"Authorization": f"Bearer {emulator.api_key}"}) as client:
            create(client, args="exec sleep 60")
        pod = emulator.all_pods[0]
        pids = [pod.process.pid, pod.sshd.process.pid]
    assert emulator.leftover_processes() == [] and not any(Path(f"/proc/{pid}").exists() for pid in pids)


# ---- create: the contract and the rules behind it ----------------------------------------------------


def test_an_unknown_field_is_422_naming_it_and_nothing_is_created(emu, api):
    response = api.post("/pods", json=pod_body(gpuTypeId=GPU))
    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422 and problem["errors"] == ["body $: additional properties 'gpuTypeId' not allowed"]
    assert response.headers["x-request-id"] == emu.requests[-1].request_id
    assert emu.pods_created == 0
    assert [v.message for v in emu.request_violations] == problem["errors"]


def test_exactly_one_of_gpu_or_cpu(emu, api):
    both = api.post("/pods", json=pod_body(cpu={"id": "cpu3c", "vcpuCount": 2}))
    neither = api.post("/pods", json={"name": "n", "image": "i"})
    assert both.status_code == neither.status_code == 400
    cpu = api.post("/pods", json={"name": "c", "image": "i", "cpu": {"id": "cpu3c", "vcpuCount": 4}})
    assert cpu.status_code == 201 and cpu.json()["cpu"] == {"id": "cpu3c", "vcpuCount": 4, "memory": 8}
    assert "gpu" not in cpu.json() and cpu.json()["cudaVersion"] is None


def test_cloud_and_cuda_constraints_place_or_refuse(emu, api):
    assert api.post("/pods", json=pod_body(cloud="COMMUNITY")).json()["detail"] == CAPACITY_MESSAGE
    community = create(api, cloud="COMMUNITY", gpu={"id": OTHER_GPU, "count": 2})
    assert community["cost"] == pytest.approx(0.34 * 2)
    assert create(api, gpu={"id": GPU, "allowedCudaVersions": ["12.4"]})["cudaVersion"] == "12.4"
    assert api.post("/pods", json=pod_body(gpu={"id": GPU, "allowedCudaVersions": ["12.1"]})).status_code == 400
    both = api.post("/pods", json=pod_body(gpu={"id": GPU, "allowedCudaVersions": ["12.4"], "minCudaVersion": "12.4"}))
    assert both.status_code == 400 and "mutually exclusive" in both.json()["detail"]
    assert api.post("/pods", json=pod_body(gpu={"id": "NVIDIA GTX 280"})).status_code == 400


# ---- capacity and the catalog ----------------------------------------------------------------------------


def test_creates_take_capacity_and_the_catalog_follows_it(emu, api):
    emu.no_capacity(GPU)
    emu.set_capacity(1, GPU, "US-TX-3")
    before = availability(api)
    assert before["availability"] == "LOW"
    assert before["dataCenters"] == [{"id": "US-TX-3", "name": "US Texas 3", "availability": "LOW"}]
    first = create(api)
    assert first["dataCenterId"] == "US-TX-3" and emu.capacity(GPU, "US-TX-3") == 0
    refused = api.post("/pods", json=pod_body())
    assert refused.status_code == 400 and refused.json()["detail"] == CAPACITY_MESSAGE
    assert refused.headers["content-type"] == "application/problem+json"
    after = availability(api)
    assert after["availability"] == "NONE" and "dataCenters" not in after
    assert all(not v["available"] for v in after["cudaVersions"])
    api.delete(f"/pods/{first['id']}")
    assert availability(api)["availability"] == "LOW"


def test_data_center_ids_are_enforced(emu, api):
    emu.no_capacity(GPU)
    emu.set_capacity(8, GPU, "EU-SE-1")
    assert api.post("/pods", json=pod_body(dataCenterIds=["EU-RO-1", "US-TX-3"])).status_code == 400
    assert create(api, dataCenterIds=["EU-RO-1", "EU-SE-1"])["dataCenterId"] == "EU-SE-1"
    assert api.post("/pods", json=pod_body(dataCenterIds=["MARS-1"])).status_code == 400


def test_a_lying_catalog_says_high_while_creates_fail(emu, api):
    emu.no_capacity(GPU)
    emu.advertise("HIGH", GPU)
    assert availability(api)["availability"] == "HIGH"
    centres = api.get("/catalog/datacenters", params={"include": "GPU_AVAILABILITY"}).json()["dataCenters"]
    assert {dc["id"]: next(g["availability"] for g in dc["gpuAvailability"] if g["id"] == GPU)
            for dc in centres} == {"EU-RO-1": "HIGH", "US-TX-3": "HIGH", "EU-SE-1": "HIGH"}
    refused = api.post("/pods", json=pod_body())
    assert refused.status_code == 400 and refused.json()["detail"] == CAPACITY_MESSAGE
    emu.advertise(None)
    assert availability(api)["availability"] == "NONE"


def test_catalog_queries_and_their_rules(emu, api):
    plain = api.get("/catalog/gpus").json()["gpus"]
    assert {g["id"] for g in plain} >= {GPU, OTHER_GPU, "NVIDIA RTX A5000", "NVIDIA A100 80GB PCIe"}
    assert all("availability" not in g for g in plain)
    assert api.get("/catalog/gpus", params={"include": "AVAILABILITY"}).status_code == 400  # product needed
    assert api.get("/catalog/gpus", params={"minCudaVersion": "12.4"}).status_code == 400  # include needed
    bad = api.get("/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD", "count": "two"})
    assert bad.status_code == 422
    assert bad.json()["errors"] == ["query parameter count $: 'two' is not of type 'integer'"]
    assert availability(api, count=8)["availability"] == "MEDIUM"  # 16 free: two pods of 8
    assert availability(api, count=9)["availability"] == "NONE"  # above the per-pod ceiling
    assert availability(api, cloud="COMMUNITY")["availability"] == "NONE"  # L4: secure cloud only
    assert [v["version"] for v in availability(api, minCudaVersion="12.6")["cudaVersions"]] == ["12.6", "12.8"]
    swedish = api.get("/catalog/gpus", params={"include": "AVAILABILITY", "product": "POD", "countryCodes": "SE"})
    assert {dc["id"] for g in swedish.json()["gpus"] for dc in g["dataCenters"]} == {"EU-SE-1"}
    assert api.get("/catalog/gpus/NVIDIA GTX 280").status_code == 404
    fast = api.get("/catalog/datacenters", params={"networkVolumeTypes": "HIGH_PERFORMANCE"}).json()
    assert [dc["id"] for dc in fast["dataCenters"]] == ["EU-RO-1"]
    assert "gpuAvailability" not in fast["dataCenters"][0]
    request_violations = [v.message for v in emu.request_violations]
    assert request_violations == ["query parameter count $: 'two' is not of type 'integer'"]


# ---- faults -------------------------------------------------------------------------------------------------


def test_every_authenticated_answer_carries_rate_limit_headers(emu, api):
    first, second = api.get("/pods"), api.get("/pods")
    policy = re.fullmatch(r'"minute";q=(\d+);w=60, "hour";q=(\d+);w=3600, "day";q=(\d+);w=86400',
                          first.headers["RateLimit-Policy"])
    remaining = [re.match(r'"minute";r=(\d+);t=(\d+), "hour";r=\d+;t=\d+, "day";r=\d+;t=\d+', r.headers["RateLimit"])
                 for r in (first, second)]
    assert policy and all(remaining)
    assert int(remaining[1].group(1)) == int(remaining[0].group(1)) - 1 < int(policy.group(1))
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_429_with_retry_after_and_rate_limit_exhausted(emu, api):
    emu.fail(Fault.RATE_LIMITED, method="POST", path="/v2/pods", retry_after=7)
    assert api.get("/pods").status_code == 200  # other operations are untouched
    limited = api.post("/pods", json=pod_body())
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.headers["RateLimit"].startswith('"minute";r=0;t=7, ')
    assert limited.json()["status"] == 429 and emu.pods_created == 0
    assert api.post("/pods", json=pod_body()).status_code == 201


@pytest.mark.parametrize(("fault", "status", "content_type"), [
    (Fault.SERVER_ERROR, 500, "application/problem+json"),
    (Fault.BAD_GATEWAY, 502, "text/html"),
    (Fault.UNAVAILABLE, 503, "application/problem+json"),
    (Fault.GARBAGE, 200, "text/html"),
    (Fault.WRONG_SHAPE, 200, "application/json"),
    (Fault.INSUFFICIENT_BALANCE, 402, "application/problem+json"),
    (Fault.FORBIDDEN, 403, "application/problem+json"),
])
def test_faults_answer_as_a_failing_api_would_then_stop(emu, api, fault, status, content_type):
    emu.fail(fault, times=2, method="GET", path="/v2/pods")
    for _ in range(2):
        response = api.get("/pods")
        assert response.status_code == status and response.headers["content-type"] == content_type
        assert "x-request-id" in response.headers
    if fault is Fault.WRONG_SHAPE:
        assert "pods" not in response.json()
    if fault is Fault.GARBAGE:
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert api.get("/pods").json() == {"pods": []}
    assert [r.fault for r in emu.calls("GET", "/v2/pods")] == [fault, fault, None]


def test_a_fault_aimed_at_a_template_spares_other_paths(emu, api):
    pod_id = create(api)["id"]
    emu.fail(Fault.UNAVAILABLE, times=None, path="/v2/pods/{id}")
    assert api.get(f"/pods/{pod_id}").status_code == 503 and api.delete(f"/pods/{pod_id}").status_code == 503
    assert api.get("/pods").status_code == 200
    emu.clear_faults()
    assert api.delete(f"/pods/{pod_id}").status_code == 204


def test_a_lost_answer_still_creates_the_pod(emu, api):
    emu.fail(Fault.LOST_ANSWER, method="POST", path="/v2/pods")
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/pods", json=pod_body(name="ralph-lost"))
    [sent] = emu.creates_sent
    assert not sent.answered and sent.status == 201
    assert [p["name"] for p in api.get("/pods").json()["pods"]] == ["ralph-lost"]


def test_a_gpu_pool_the_account_cannot_use_is_403(emu, api):
    emu.forbid_gpu(GPU)
    forbidden = api.post("/pods", json=pod_body())
    assert forbidden.status_code == 403 and forbidden.json()["title"] == "Forbidden"
    assert create(api, gpu={"id": OTHER_GPU})["gpu"]["id"] == OTHER_GPU


def test_pods_that_go_to_error(emu, api):
    emu.error_next_pods(1)
    doomed = create(api, args="exec sleep 60")["id"]
    fine = create(api)["id"]
    statuses = [api.get(f"/pods/{doomed}").json()["status"] for _ in range(3)]
    assert statuses == ["PROVISIONING", "STARTING", "ERROR"]
    error = api.get(f"/pods/{doomed}").json()
    assert error["actions"] == ["start", "terminate"] and error["ssh"]["direct"] is None
    assert emu.pod(doomed).process.poll() is not None
    assert read_until(api, fine, "RUNNING")
    emu.error_pod(fine)
    assert api.get(f"/pods/{fine}").json()["status"] == "ERROR"
    assert api.post(f"/pods/{fine}/action", json={"action": "start"}).json()["status"] == "PROVISIONING"
    assert read_until(api, fine, "RUNNING")["ssh"]["direct"]


def test_acknowledged_terminations_that_do_not_happen(emu, api):
    pod_id = create(api)["id"]
    emu.ignore_terminations(times=1)
    assert api.delete(f"/pods/{pod_id}").status_code == 204
    assert api.get(f"/pods/{pod_id}").status_code == 200
    assert api.delete(f"/pods/{pod_id}").status_code == 204
    assert api.get(f"/pods/{pod_id}").status_code == 404
    assert emu.pod(pod_id).terminate_requests == ["account", "account"]


# ---- keys --------------------------------------------------------------------------------------------------


def test_missing_or_unknown_keys_are_401_without_rate_limit_headers(emu):
    with httpx.Client(base_url=emu.url + "/v2", timeout=20) as anonymous:
        missing = anonymous.get("/pods")
        wrong = anonymous.get("/pods", headers={"Authorization": "Bearer rpa_wrong"})
    assert (missing.status_code, missing.json()["detail"]) == (401, "missing bearer token")
    assert wrong.status_code == 401 and "RateLimit" not in wrong.headers and "x-request-id" in wrong.headers
    assert [r.principal for r in emu.requests] == [None, None]


def test_a_pod_key_reads_and_deletes_its_own_pod_only(emu, api):
    mine, other = create(api, name="a")["id"], create(api, name="b")["id"]
    with as_pod(emu, mine) as pod_api:
        assert pod_api.get(f"/pods/{mine}").status_code == 200
        for response in (pod_api.get(f"/pods/{other}"), pod_api.get("/pods"), pod_api.get("/catalog/gpus"),
                         pod_api.delete(f"/pods/{other}"),
                         pod_api.post(f"/pods/{mine}/action", json={"action": "stop"})):
            assert response.status_code == 403, response.request.url
        assert pod_api.delete(f"/pods/{mine}").status_code == 204
        assert pod_api.get(f"/pods/{mine}").status_code == 401  # a terminated pod's key is dead
    assert emu.pod(mine).terminate_requests == [f"pod:{mine}"] and emu.pod(other).status != "TERMINATED"


def test_a_pod_key_can_be_refused_termination(emu, api):
    pod_id = create(api)["id"]
    emu.pod_keys_may_terminate = False
    with as_pod(emu, pod_id) as pod_api:
        assert pod_api.delete(f"/pods/{pod_id}").status_code == 403
        assert pod_api.post(f"/pods/{pod_id}/action", json={"action": "terminate"}).status_code == 403
        assert pod_api.get(f"/pods/{pod_id}").status_code == 200
    assert emu.pod(pod_id).terminate_requests == []


def test_a_pod_terminates_itself_from_inside_with_its_own_key(emu, api):
    """What a dead-man's switch does: REST v2 DELETE with RUNPOD_API_KEY, no SSH involved."""
    args = ('curl -s -o /dev/null -w "%{http_code}\\n" -X DELETE -H "Authorization: Bearer $RUNPOD_API_KEY" '
            '"$RUNPOD_API_BASE_URL/v2/pods/$RUNPOD_POD_ID"; sleep 60')
    pod_id = create(api, args=args)["id"]
    [call] = wait_for(lambda: emu.calls("DELETE", f"/v2/pods/{pod_id}"))  # recorded once answered
    assert call.principal == f"pod:{pod_id}" and call.status == 204 and emu.pod(pod_id).terminated
    assert api.get(f"/pods/{pod_id}").status_code == 404


# ---- retired APIs ---------------------------------------------------------------------------------------------


def test_graphql_is_gone_until_a_test_enables_the_last_resort(emu, api):
    pod_id, other = create(api)["id"], create(api)["id"]
    mutation = {"query": f'mutation {{ podTerminate(input: {{podId: "{pod_id}"}}) }}'}
    pod_headers = {"Authorization": f"Bearer {emu.pod(pod_id).pod_key}"}
    gone = httpx.post(emu.url + "/graphql", json=mutation, headers=pod_headers, timeout=20)
    assert gone.status_code == 410 and gone.json()["status"] == 410
    emu.enable_graphql()
    foreign = {"query": f'mutation {{ podTerminate(input: {{podId: "{other}"}}) }}'}
    assert httpx.post(emu.url + "/graphql", json=foreign, headers=pod_headers, timeout=20).status_code == 403
    query = httpx.post(emu.url + "/graphql", json={"query": "query { myself { id } }"}, headers=pod_headers, timeout=20)
    assert query.status_code == 400
    done = httpx.post(emu.url + "/graphql", json=mutation, headers=pod_headers, timeout=20)
    assert done.json() == {"data": {"podTerminate": None}}
    assert api.get(f"/pods/{pod_id}").status_code == 404 and api.get(f"/pods/{other}").status_code == 200


def test_rest_v1_is_gone_and_runpodctl_reports_it(emu, api):
    pod_id = create(api, args="runpodctl remove pod $RUNPOD_POD_ID; echo rc=$? > rc.txt; sleep 60")["id"]
    pod = emu.pod(pod_id)
    assert wait_for(lambda: file_text(pod.workspace / "rc.txt")) == "rc=1\n"
    assert f"runpodctl: DELETE /v1/pods/{pod_id} -> 410" in pod.log_path.read_text()
    [call] = emu.calls("DELETE", "/v1/")
    assert call.status == 410 and call.principal == f"pod:{pod_id}"
    assert api.get(f"/pods/{pod_id}").status_code == 200


def test_paths_the_contract_lacks_and_operations_not_emulated(emu, api):
    assert api.get("/nothing").status_code == 404
    not_allowed = api.put("/pods/abc", json={})
    assert not_allowed.status_code == 405 and not_allowed.headers["Allow"] == "GET, PATCH, DELETE"
    assert api.get("/templates").status_code == 501


# ---- network volumes ------------------------------------------------------------------------------------------


def test_network_volume_files_outlive_the_pods_that_mount_them(emu, api):
    volume = api.post("/network-volumes", json={"name": "models", "size": 50, "dataCenter": "EU-SE-1"}).json()
    assert volume == {"id": volume["id"], "name": "models", "size": 50, "dataCenter": "EU-SE-1", "type": "STANDARD"}
    mount = {"network": [{"volumeId": volume["id"], "path": "/workspace"}]}
    excluded = api.post("/pods", json=pod_body(mounts=mount, dataCenterIds=["EU-RO-1"]))
    assert excluded.status_code == 400 and "EU-SE-1" in excluded.json()["detail"]

    writer = create(api, mounts=mount, args="head -c 4096 /dev/zero > model.bin; echo ok > done.txt; sleep 60")
    assert writer["dataCenterId"] == "EU-SE-1" and writer["mounts"] == mount
    stored = emu.volume(volume["id"])
    assert wait_for(lambda: file_text(stored.directory / "done.txt"))
    in_use = api.delete(f"/network-volumes/{volume['id']}")
    assert in_use.status_code == 400 and writer["id"] in in_use.json()["detail"]
    api.delete(f"/pods/{writer['id']}")

    before = stored.snapshot()
    assert before.files["model.bin"][0] == 4096
    reader = create(api, mounts=mount, args="wc -c < model.bin > size.txt; sleep 60")
    assert wait_for(lambda: file_text(stored.directory / "size.txt")).strip() == "4096"
    assert stored.snapshot().bytes_written_since(before) == len("4096\n")  # size.txt only
    unchanged = stored.snapshot()
    assert stored.snapshot().bytes_written_since(unchanged) == 0
    api.delete(f"/pods/{reader['id']}")
    assert api.delete(f"/network-volumes/{volume['id']}").status_code == 204
    assert not stored.directory.exists() and api.get(f"/network-volumes/{volume['id']}").status_code == 404


def test_network_volumes_grow_only_and_live_in_known_data_centres(emu, api):
    made = api.post("/network-volumes", json={"name": "m", "size": 20, "dataCenter": "EU-RO-1",
                                              "type": "HIGH_PERFORMANCE"})
    assert made.status_code == 201 and made.json()["type"] == "HIGH_PERFORMANCE"
    volume_id = made.json()["id"]
    assert api.patch(f"/network-volumes/{volume_id}", json={"size": 10}).status_code == 400
    assert api.patch(f"/network-volumes/{volume_id}", json={"size": 40, "name": "n"}).json()["size"] == 40
    assert api.post("/network-volumes", json={"name": "m", "size": 20, "dataCenter": "US-TX-3",
                                              "type": "HIGH_PERFORMANCE"}).status_code == 400
    assert api.post("/network-volumes", json={"name": "m", "size": 5, "dataCenter": "US-TX-3"}).status_code == 422
    assert [v["id"] for v in api.get("/network-volumes").json()["networkVolumes"]] == [volume_id]


# ---- listing -----------------------------------------------------------------------------------------------------


def test_list_pages_follow_the_cursor(emu, api):
    ids = [create(api, name=f"p{i}", ports=[])["id"] for i in range(5)]
    emu.page_size = 2
    seen, cursor, pages = [], None, 0
    while True:
        params = {"cursor": cursor, "unknownFilter": "ignored"} if cursor else {"unknownFilter": "ignored"}
        page = api.get("/pods", params=params).json()
        seen += [p["id"] for p in page["pods"]]
        pages += 1
        if not page["pagination"]["hasNextPage"]:
            assert page["pagination"]["nextCursor"] is None
            break
        cursor = page["pagination"]["nextCursor"]
    assert seen == ids and pages == 3
    emu.page_size = None
    assert "pagination" not in api.get("/pods").json()


# ---- the contract, both ways --------------------------------------------------------------------------------------


def test_every_answer_was_checked_and_a_broken_one_would_be_caught(tmp_path, monkeypatch):
    original = RunPodEmulator._record

    def without_cost(self, pod):
        record = original(self, pod)
        del record["cost"]
        return record

    with RunPodEmulator(tmp_path / "rp", kill_grace_s=0.2) as emulator:
        with httpx.Client(base_url=emulator.url + "/v2", timeout=20,
                          headers={"Authorization": f"Bearer {emulator.api_key}"}) as client:
            pod_id = create(client)["id"]
            read_until(client, pod_id, "RUNNING")
            client.get("/catalog/datacenters", params={"include": "GPU_AVAILABILITY"})
            assert emulator.violations == []
            monkeypatch.setattr(RunPodEmulator, "_record", without_cost)
            client.get(f"/pods/{pod_id}")
    [violation] = emulator.response_violations
    assert (violation.kind, violation.status, violation.message) == \
        ("response", 200, "body $: 'cost' is a required property")


# ---- serverless endpoints (management) ------------------------------------------------------------------------


def test_a_serverless_endpoint_is_created_read_and_deleted_as_the_contract_says(emu, api):
    volume = emu.create_volume("models", 50, "EU-RO-1")
    body = {"name": "ralph-sweep", "type": "QUEUE", "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4},
            "image": "runpod/worker-comfyui:5.5.0-base", "gpu": {"pools": ["ADA_24"]},
            "workers": {"min": 0, "max": 2}, "networkVolumes": [volume.id], "dataCenterIds": ["EU-RO-1"]}
    created = api.post("/serverless", json=body)
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["workers"]["max"] == 2 and endpoint["networkVolumes"] == [volume.id]
    assert api.get(f"/serverless/{endpoint['id']}").json()["name"] == "ralph-sweep"
    assert [e["id"] for e in api.get("/serverless").json()["endpoints"]] == [endpoint["id"]]
    assert api.delete(f"/serverless/{endpoint['id']}").status_code == 204
    assert api.get(f"/serverless/{endpoint['id']}").status_code == 404
    assert emu.request_violations == []


def test_an_endpoint_off_the_contract_or_on_a_missing_volume_is_refused(emu, api):
    no_scaling = api.post("/serverless", json={"name": "x", "type": "QUEUE", "image": "i"})
    assert no_scaling.status_code == 422 and "scaling" in no_scaling.text
    missing = api.post("/serverless", json={"name": "x", "type": "QUEUE", "image": "i", "networkVolumes": ["nope"],
                                            "scaling": {"type": "QUEUE_DELAY", "queueDelay": 4}})
    assert missing.status_code == 404
    assert emu.endpoints() == []
