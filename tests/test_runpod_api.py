"""ralph's RunPod client (handlers/runpod/api.py) against the REST v2 emulator over real sockets: every
verb, every fault turned into ralph's own error with RunPod's detail and request id (never the key), rate
limits honoured, and every request ralph sends valid against RunPod's OpenAPI document."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ralph.handlers.runpod.api import (
    APIError,
    AuthError,
    BadRequest,
    BalanceError,
    CapacityError,
    NoAccess,
    PodSpec,
    RunPodAPI,
    TransientAPIError,
)

from tests.far.runpod_emulator import Fault, RunPodEmulator, emulated_runpod

A5000, L4 = "NVIDIA RTX A5000", "NVIDIA L4"


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    emulator: RunPodEmulator
    for emulator in emulated_runpod(tmp_path / "runpod", monkeypatch, kill_grace_s=0.3, reads_per_phase=0):
        yield emulator
        assert emulator.request_violations == [], "ralph sent a request off RunPod's contract"


@pytest.fixture
def api(emu: RunPodEmulator) -> Iterator[RunPodAPI]:
    client = RunPodAPI.from_env()
    yield client
    client.close()


def spec(**fields: object) -> PodSpec:
    values: dict[str, object] = {"name": "ralph-test", "image": "runpod/pytorch:test", "gpu_id": A5000, "ports": ()}
    values.update(fields)
    return PodSpec(**values)  # type: ignore[arg-type]


def test_from_env_reads_the_key_and_the_host_and_never_shows_the_key(emu: RunPodEmulator, api: RunPodAPI) -> None:
    assert api.base_url == emu.url + "/v2"
    assert emu.api_key not in repr(api)


def test_the_catalog_gives_prices_availability_data_centres_and_cuda(emu: RunPodEmulator, api: RunPodAPI) -> None:
    offers = {o.id: o for o in api.gpu_offers()}
    a5000 = offers[A5000]
    assert a5000.prices == {"SECURE": 0.27, "COMMUNITY": 0.16} and a5000.memory_gb == 24
    assert a5000.availability == "HIGH" and set(a5000.data_centers) == {"EU-RO-1", "US-TX-3", "EU-SE-1"}
    assert "COMMUNITY" not in offers[L4].prices  # not sold there
    assert a5000.price_per_hr("SECURE", 2) == pytest.approx(0.54)
    emu.no_capacity(A5000, data_center="EU-RO-1")
    emu.no_capacity(A5000, data_center="US-TX-3")
    a5000 = {o.id: o for o in api.gpu_offers()}[A5000]
    assert a5000.data_centers.get("EU-RO-1", "NONE") == "NONE" and a5000.data_centers["EU-SE-1"] != "NONE"
    [call] = [c for c in emu.calls("GET", "/v2/catalog/gpus")][:1]
    assert call.query["include"] == ["AVAILABILITY"] and call.query["product"] == ["POD"]
    assert {dc.id: dc.volume_types for dc in api.data_centers()}["US-TX-3"] == ("STANDARD",)


def test_a_pod_is_created_read_listed_and_terminated(emu: RunPodEmulator, api: RunPodAPI) -> None:
    made = api.create_pod(spec(cloud="COMMUNITY", data_centers=("EU-SE-1",), env={"A": "1"}, args="sleep 60",
                               persistent_gb=20, min_cuda="12.4"))
    assert made.status == "PROVISIONING" and made.name == "ralph-test"
    pod = emu.pod(made.id)
    assert pod.data_center_id == "EU-SE-1" and pod.container_env["A"] == "1"
    [create] = emu.calls("POST", "/v2/pods")
    assert create.body["gpu"] == {"id": A5000, "count": 1, "minCudaVersion": "12.4"}
    assert create.body["mounts"] == {"persistent": {"size": 20, "path": "/workspace"}}
    read = api.get_pod(made.id)
    assert read is not None and read.running and read.cost_per_hr == pytest.approx(0.16)
    assert read.ssh is None  # no 22/tcp asked: no direct SSH
    assert [p.id for p in api.list_pods()] == [made.id]
    api.terminate_pod(made.id)
    assert api.get_pod(made.id) is None and api.list_pods() == []


def test_a_running_pod_with_22_tcp_has_a_direct_ssh_endpoint(emu: RunPodEmulator, api: RunPodAPI) -> None:
    made = api.create_pod(spec(ports=("22/tcp",), env={"PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE ralph"}))
    deadline = time.monotonic() + 20
    while (pod := api.get_pod(made.id)) is not None and pod.ssh is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pod is not None and pod.ssh is not None
    assert (pod.ssh.host, pod.ssh.port, pod.ssh.user) == ("127.0.0.1", emu.pod(made.id).sshd.port, "root")


def test_a_network_volume_is_created_listed_and_pins_the_pod(emu: RunPodEmulator, api: RunPodAPI) -> None:
    volume = api.create_network_volume(name="models", size_gb=20, data_center="US-TX-3", type="STANDARD")
    assert [v.id for v in api.network_volumes()] == [volume.id] and volume.data_center == "US-TX-3"
    made = api.create_pod(spec(volume_id=volume.id))
    assert emu.pod(made.id).data_center_id == "US-TX-3"
    assert emu.pod(made.id).workspace.resolve() == emu.volume(volume.id).directory.resolve()


def test_every_page_of_the_pod_list_is_read(emu: RunPodEmulator, api: RunPodAPI) -> None:
    emu.page_size = 2
    made = {api.create_pod(spec(name=f"ralph-page-{i}")).id for i in range(5)}
    assert {p.id for p in api.list_pods()} == made
    assert len(emu.calls("GET", "/v2/pods")) == 3


@pytest.mark.parametrize("fault, expected, status", [
    (Fault.SERVER_ERROR, TransientAPIError, 500),
    (Fault.BAD_GATEWAY, TransientAPIError, 502),
    (Fault.UNAVAILABLE, TransientAPIError, 503),
    (Fault.GARBAGE, TransientAPIError, 200),
    (Fault.INSUFFICIENT_BALANCE, BalanceError, 402),
    (Fault.FORBIDDEN, NoAccess, 403),
])
def test_each_fault_is_ralphs_error_with_runpods_detail_and_request_id_never_the_key(
        emu: RunPodEmulator, api: RunPodAPI, fault: Fault, expected: type[APIError], status: int) -> None:
    emu.fail(fault, method="POST", path="/v2/pods")
    with pytest.raises(expected) as caught:
        api.create_pod(spec())
    message = str(caught.value)
    [call] = emu.calls("POST", "/v2/pods")
    assert message.startswith("create_pod: ") and call.request_id in message and "\n" not in message
    assert emu.api_key not in message and caught.value.request_id == call.request_id
    if status != 200:
        assert f"HTTP {status}" in message
    assert emu.pods_created == 0


def test_no_capacity_is_a_capacity_error_with_runpods_words(emu: RunPodEmulator, api: RunPodAPI) -> None:
    emu.no_capacity(A5000)
    with pytest.raises(CapacityError, match="no longer any instances available"):
        api.create_pod(spec())


def test_a_body_off_the_contract_is_a_bad_request_naming_the_field(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for emu in emulated_runpod(tmp_path / "runpod", monkeypatch):  # this test breaks the contract on purpose
        with pytest.raises(BadRequest, match=r"HTTP 422 .*mounts.persistent.size: 5 is less than the minimum of 10"):
            RunPodAPI.from_env().create_pod(spec(persistent_gb=5))
        [violation] = emu.request_violations
        assert violation.status == 422 and emu.pods_created == 0


def test_a_wrong_key_is_an_auth_error_and_a_missing_one_is_refused_before_any_request(
        emu: RunPodEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AuthError) as caught:
        RunPodAPI("rpa_not-a-key-of-this-account", emu.url).list_pods()
    assert "rpa_not-a-key" not in str(caught.value)
    monkeypatch.delenv("RUNPOD_API_KEY")
    with pytest.raises(AuthError, match="set RUNPOD_API_KEY"):
        RunPodAPI.from_env()
    assert len(emu.requests) == 1


def test_429_waits_retry_after_and_sends_the_same_request_again(emu: RunPodEmulator, api: RunPodAPI) -> None:
    emu.fail(Fault.RATE_LIMITED, method="GET", path="/v2/pods", retry_after=1)
    assert api.list_pods() == []
    first, second = emu.calls("GET", "/v2/pods")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95


def test_a_used_up_window_makes_the_next_call_wait_for_its_reset(emu: RunPodEmulator, api: RunPodAPI) -> None:
    emu.rate_limit_policy = (("burst", 3, 2),)  # 3 requests per 2 s window
    for _ in range(7):
        api.list_pods()
    calls = emu.calls("GET", "/v2/pods")
    said = [c.at for c in calls]
    # Each answer's RateLimit told the client how many were left; at r=0 it waited for the reset.
    assert max(b - a for a, b in zip(said, said[1:], strict=False)) >= 0.9


def test_a_lost_create_answer_is_transient_and_the_pod_is_findable_by_its_name(emu: RunPodEmulator,
                                                                             api: RunPodAPI) -> None:
    emu.fail(Fault.LOST_ANSWER, method="POST", path="/v2/pods")
    with pytest.raises(TransientAPIError):
        api.create_pod(spec(name="ralph-lost-answer"))
    assert [p.name for p in api.list_pods()] == ["ralph-lost-answer"] and emu.pods_created == 1


def test_an_unreachable_api_is_transient(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(TransientAPIError, match="talking to RunPod"):
        RunPodAPI("rpa_key", f"http://127.0.0.1:{port}", timeout_s=2).list_pods()


def test_ids_that_are_not_runpod_ids_are_refused_before_any_request(emu: RunPodEmulator, api: RunPodAPI) -> None:
    for bad in ("../account", "a b", "", "x" * 65):
        with pytest.raises(ValueError):
            api.get_pod(bad)
    assert emu.requests == []


def test_terminating_a_pod_that_is_gone_is_not_found(emu: RunPodEmulator, api: RunPodAPI) -> None:
    made = api.create_pod(spec())
    api.terminate_pod(made.id)
    with pytest.raises(APIError) as caught:
        api.terminate_pod(made.id)
    assert caught.value.status == 404
