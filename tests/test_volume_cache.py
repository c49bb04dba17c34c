"""A network volume as the model cache: the first experiment creates the volume where the GPUs have
room and uploads the models onto it; a second experiment (another task file, another pod) finds the
volume by name, is placed in its data centre, and uploads nothing — counted on the emulator's side, in
the bytes written to the volume, not taken from ralph's own report."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from ralph.console import ConsoleReporter
from ralph.runner import Runner, RunSummary
from tests.far.comfyui_server import free_port
from tests.far.runpod_emulator import RunPodEmulator, emulated_for_ralph
from tests.test_comfyui_setup import STAND_IN_MAIN, fake_torch, write
from tests.test_pod_handlers import A5000, RTX4090

EXPERIMENT = """# RALPH-TASK: Volume cache, experiment {n}

## Tasks

### 1. Créer pod RunPod
**Priority**: HIGH
**Status**: PENDING
**Handler**: runpod.create
**Acceptance Criteria**:
- [ ] SSH accessible

### 2. Setup ComfyUI + modèles
**Priority**: HIGH
**Status**: PENDING
**Handler**: comfyui.setup
**Acceptance Criteria**:
- [ ] ComfyUI installé et running

### 3. Terminer pod
**Priority**: HIGH
**Status**: PENDING
**Handler**: runpod.terminate
**Acceptance Criteria**:
- [ ] Pod terminé (pas juste pause)
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tmp_path / "pod-workspace"  # the pod's /workspace: the emulator points it at the volume


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workspace: Path) -> Iterator[RunPodEmulator]:
    yield from emulated_for_ralph(tmp_path, monkeypatch, workspace_link=workspace)


def project(root: Path, tmp_path: Path, workspace: Path) -> dict[str, Any]:
    release = write(tmp_path / "comfyui-release" / "main.py", STAND_IN_MAIN.encode()).parent
    checkpoint = tmp_path / "disk" / "bigLove_xl1.safetensors"
    if not checkpoint.exists():
        write(checkpoint, os.urandom(3 * 1024 * 1024 + 7))
    params = {
        "runpod.create": {
            "gpu_types": [A5000, RTX4090], "image": "runpod/pytorch:test", "base_start_command": "sleep infinity",
            "remote_workspace": str(workspace), "pod_state_dir": str(tmp_path / "pod-tmp"),
            "volume": {"name": "ralph-models", "size_gb": 20}, "ready_timeout_s": 20, "heartbeat_timeout_s": 60,
            "create_budget_s": 5, "poll_s": 0.1,
        },
        "comfyui.setup": {"python": str(fake_torch(tmp_path / "pypod", "2.14.1+cu124")),
                          "install_command": f"cp -r {release} {{dir}}", "start_timeout": 30, "port": free_port(),
                          "models": {"checkpoints": [{"path": str(checkpoint)}]}},
        "runpod.terminate": {"terminate_timeout_s": 10, "poll_s": 0.1},
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "ralph.yaml").write_text(yaml.safe_dump({"params": params}), encoding="utf-8")
    return params


def run(file: Path) -> tuple[RunSummary, str]:
    output = io.StringIO()
    summary = Runner(file, ConsoleReporter(Console(file=output, width=200, color_system=None)), retry_wait=0).run()
    return summary, output.getvalue()


def setup_files(file: Path) -> list[dict[str, Any]]:
    import json

    state = json.loads((file.parent / ".ralph" / file.stem / "state.json").read_text("utf-8"))
    return list(state["tasks"]["2"]["result"]["data"]["files"])


def test_a_second_experiment_on_the_volume_uploads_nothing(emu: RunPodEmulator, tmp_path: Path,
                                                            workspace: Path) -> None:
    root = tmp_path / "project"
    project(root, tmp_path, workspace)
    first = root / "RALPH-101-first.md"
    first.write_text(EXPERIMENT.format(n=1), encoding="utf-8")
    summary, output = run(first)
    assert summary.exit_code == 0, output
    [volume] = emu.volumes
    assert len(emu.calls("POST", "/v2/network-volumes")) == 1 and volume.name == "ralph-models"
    [uploaded] = setup_files(first)
    assert uploaded["bytes_sent"] >= 3 * 1024 * 1024 + 7
    before = volume.snapshot()

    second = root / "RALPH-102-second.md"
    second.write_text(EXPERIMENT.format(n=2), encoding="utf-8")
    summary, output = run(second)
    assert summary.exit_code == 0, output
    assert len(emu.calls("POST", "/v2/network-volumes")) == 1, "the volume was found by name, not made again"
    first_pod, second_pod = emu.all_pods
    assert first_pod.volume_id == second_pod.volume_id == volume.id
    assert first_pod.data_center_id == second_pod.data_center_id == volume.data_center
    after = volume.snapshot()
    models = {p: v for p, v in after.files.items() if p.startswith("ComfyUI/models/")}
    assert models and volume.snapshot().bytes_written_since(before) < 64 * 1024, "only the service's pid, log, markers"
    assert all(before.files.get(p) == v for p, v in models.items()), "no model byte written again"
    [again] = setup_files(second)
    assert again["bytes_sent"] == 0 and again["skipped"]
    assert emu.live_pods() == []
