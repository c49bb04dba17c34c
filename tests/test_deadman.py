"""The dead-man's switch on emulated pods: the start script really runs as the pod's process with the
pod's own RUNPOD_POD_ID and pod-scoped key, and the pod really goes (podTerminate by the pod's key)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ralph.handlers.machines import session
from ralph.handlers.runpod import deadman
from ralph.handlers.runpod.api import RunPodAPI
from tests.far.runpod_emulator import RunPodEmulator
from tests.test_pod_handlers import A5000, emu, wait_for  # noqa: F401 (emu is a fixture)

SCRIPT_TOOLS = ("sh", "base64", "tr", "sed", "head", "tail", "mkdir", "rm", "date", "cat", "sleep", "mv")


def create(api: RunPodAPI, switch: deadman.Switch, **kwargs) -> str:
    return api.create_pod(name="ralph-0000aaaa-t1-test", image="runpod/pytorch:test", gpu_type_id=A5000,
                          start_command=deadman.start_command(switch, "sleep infinity"), **kwargs)


def test_the_start_script_is_posix_sh_and_carries_no_account_secret(emu: RunPodEmulator) -> None:  # noqa: F811
    text = deadman.script(deadman.Switch(600, 1500, 10800), "/start.sh")
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            subprocess.run([shell, "-n"], input=text.encode(), check=True)
    assert text.rstrip().endswith("exec /start.sh") and emu.api_key not in text
    assert deadman.start_command(deadman.Switch(600, 1500, 10800), "/start.sh").startswith("sh -c 'echo ")


def test_no_heartbeat_within_the_grace_period_the_pod_deletes_itself(emu: RunPodEmulator, tmp_path: Path) -> None:  # noqa: F811
    api = RunPodAPI(emu.api_key)
    started = time.monotonic()
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=2, grace_s=2, max_lifetime_s=600,
                                        state_base=str(tmp_path / "pod-tmp")))
    wait_for(lambda: api.get_pod(pod_id) is None, timeout=8)
    took = time.monotonic() - started
    assert 1.5 <= took <= 6
    [call] = wait_for(lambda: emu.calls("podTerminate"))  # recorded once answered
    assert call.principal == f"pod:{pod_id}" and call.status == 200
    log = Path(deadman.log_path(str(tmp_path / "pod-tmp"), pod_id)).read_text()
    assert "firing: no heartbeat within 2s of start" in log  # (its termination killed it before it logged more)


def test_heartbeats_keep_the_pod_and_their_silence_kills_it(emu: RunPodEmulator, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_pod_handlers import sshd_trusting_public_key  # the emulator fixture uses it already
    assert emu.start_ssh is sshd_trusting_public_key
    api = RunPodAPI(emu.api_key)
    key = session.ensure_client_key(tmp_path / "ssh")
    base = str(tmp_path / "pod-tmp")
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=2, grace_s=2, max_lifetime_s=600, state_base=base),
                    env={"PUBLIC_KEY": session.public_key(key)})
    ssh = wait_for(lambda: api.get_pod(pod_id).ssh)
    handle = session.MachineHandle(id=pod_id, name="t", host=ssh.host, port=ssh.port, user=ssh.user, key_file=str(key),
                               known_hosts=str(tmp_path / "known_hosts"), workspace="", state_base=base,
                               heartbeat_interval_s=0.5)
    beat = session.Heartbeat(handle)
    beat.start()
    try:
        time.sleep(4.5)  # past the grace period and two heartbeat timeouts
        assert api.get_pod(pod_id) is not None and beat.beats >= 5 and beat.failures == 0
    finally:
        beat.stop()
    stopped = time.monotonic()
    wait_for(lambda: api.get_pod(pod_id) is None, timeout=8)
    assert time.monotonic() - stopped <= 2 + 1 + 1.5  # timeout + the switch's poll + slack
    assert "firing: heartbeat stale" in Path(deadman.log_path(base, pod_id)).read_text()


def test_the_max_lifetime_fires_whatever_else(emu: RunPodEmulator, tmp_path: Path) -> None:  # noqa: F811
    api = RunPodAPI(emu.api_key)
    base = str(tmp_path / "pod-tmp")
    pod_id = create(api, deadman.Switch(heartbeat_timeout_s=60, grace_s=60, max_lifetime_s=2, state_base=base))
    Path(deadman.heartbeat_path(base, pod_id)).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sh", "-c", deadman.heartbeat_command(base, pod_id)], check=True)  # a fresh beat, as over SSH
    wait_for(lambda: api.get_pod(pod_id) is None, timeout=8)
    assert "firing: max lifetime of 2s reached" in Path(deadman.log_path(base, pod_id)).read_text()


def test_an_image_without_curl_wget_or_python_falls_back_to_runpodctl(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in SCRIPT_TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    with RunPodEmulator(tmp_path / "runpod", start_ssh=None, kill_grace_s=0.3) as emulator:
        monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.url)
        monkeypatch.setenv("PATH", str(tools))  # what the emulated container inherits (plus its runpodctl)
        api = RunPodAPI(emulator.api_key)
        base = str(tmp_path / "pod-tmp")
        pod_id = create(api, deadman.Switch(heartbeat_timeout_s=1, grace_s=1, max_lifetime_s=600, state_base=base))
        wait_for(lambda: emulator.pod(pod_id).terminated, timeout=8)
        [call] = wait_for(lambda: emulator.calls("podTerminate"))  # recorded once answered
        assert call.principal == f"pod:{pod_id}"
        log = Path(deadman.log_path(base, pod_id)).read_text()
        assert "podTerminate over HTTP failed" in log  # no curl, wget nor python3: runpodctl did it
