"""A network volume as the model cache: time from "pod ready" to ComfyUI's first sampling step, for a
first experiment (the volume is new: ComfyUI installed, models uploaded) and a repeat one (a new pod
mounts the same volume), side by side, with the model bytes written to the volume each time.

    .venv/bin/python bench/volume_cache.py

Runs RALPH-001's tasks 1, 2, 3 and 5 (create, setup, generate, terminate) twice, as two task files,
with `ralph run` as a subprocess against the REST v2 RunPod emulator (tests/far/runpod_emulator.py):
each pod is a real sshd on loopback whose workspace is the volume's folder, ComfyUI is the real test
install on CPU (tests/far/install_comfyui.sh) with the tests' tiny random-weight models, so the
figures measure ralph's own steps and ComfyUI's start, not a GPU. The bytes are counted on the
emulator's side, in the volume's files, not taken from ralph's report.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from tests.far import tiny_models  # noqa: E402
from tests.far.comfyui_server import free_port, require_install  # noqa: E402
from tests.far.runpod_emulator import RunPodEmulator  # noqa: E402
from tests.repo_files import EXAMPLE  # noqa: E402
from tests.test_full_example import SHIPPED_CONFIG, example_params  # noqa: E402


def experiment_text(port: int) -> str:
    """RALPH-001 without task 4 (evaluate) and task 6 (the session document): what a pod does."""
    text = EXAMPLE.read_text("utf-8").replace("(port 8188)", f"(port {port})")
    text = re.sub(r"(?ms)^### 4\. .*?(?=^### 5\. )", "", text)
    return re.sub(r"(?ms)^### 6\. .*?(?=^## )", "", text)


def run(file: Path) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ralph", "run", file.name], cwd=file.parent, env=dict(os.environ),
                          capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    state = json.loads((file.parent / ".ralph" / file.stem / "state.json").read_text("utf-8"))
    if done.returncode not in (0, 3):
        sys.exit(f"{file.name}: ralph run exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, state


def model_bytes(emu: RunPodEmulator, volume_id: str, since: Any) -> int:
    now = emu.volume(volume_id).snapshot()
    return sum(size for path, (size, mtime) in now.files.items()
               if path.startswith("ComfyUI/models/") and since.files.get(path) != (size, mtime))


def main() -> None:
    home = require_install()
    models = tiny_models.ensure_models(home)
    with tempfile.TemporaryDirectory(prefix="ralph-volume-bench-") as scratch:
        tmp = Path(scratch)
        workspace = tmp / "pod-workspace"
        with RunPodEmulator(tmp / "runpod", workspace_link=workspace, kill_grace_s=0.3) as emu:
            emu.rate_limit_policy = (("minute", 100_000, 60),)
            os.environ.update(RUNPOD_API_BASE_URL=emu.url, RUNPOD_API_KEY=emu.api_key,
                              RALPH_STATE_HOME=str(tmp / "ralph-state"))
            port = free_port()
            params = example_params(tmp, home, models, workspace, port)
            params["runpod.create"]["remote_workspace"] = str(workspace)
            params["runpod.create"]["volume"] = {"name": "ralph-models", "size_gb": 20}
            params["comfyui.setup"]["workspace"] = ""  # the machine's: the volume
            root = tmp / "project"
            root.mkdir()
            config = yaml.safe_load(SHIPPED_CONFIG.read_text("utf-8"))
            config["params"] = params
            (root / "ralph.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
            rows = []
            empty = None
            for n, name in enumerate(("RALPH-101-first-experiment.md", "RALPH-102-repeat-experiment.md")):
                file = root / name
                file.write_text(experiment_text(port), encoding="utf-8")
                before = emu.volumes[0].snapshot() if emu.volumes else empty
                seconds, state = run(file)
                volume = emu.volumes[0]
                tasks = state["tasks"]
                create = tasks["1"]["memory"]
                ready = create["created_at"] + create["stages"]["ssh"]
                [image, *_] = tasks["3"]["result"]["data"]["images"]
                setup = tasks["2"]["result"]["data"]
                sent = sum(f.get("bytes_sent", 0) for f in setup["files"])
                written = model_bytes(emu, volume.id, before) if before else sum(
                    size for path, (size, _) in volume.snapshot().files.items() if path.startswith("ComfyUI/models/"))
                rows.append((("first" if n == 0 else "repeat"), image["first_step_at"] - ready,
                             tasks["2"]["seconds"], written, sent, seconds, setup["install"].get("skipped", False)))
    print("A network volume as the model cache (REST v2 emulator, test ComfyUI on CPU, tiny models)")
    print(f"{'experiment':<12}{'ready → first step':>20}{'setup task':>12}{'model bytes written':>22}"
          f"{'ralph sent':>12}{'whole run':>11}  ComfyUI install")
    for label, to_step, setup_s, written, sent, whole, skipped in rows:
        print(f"{label:<12}{to_step:>18.1f} s{setup_s:>10.1f} s{written:>22,}{sent:>12,}{whole:>9.1f} s  "
              f"{'already on the volume' if skipped else 'installed'}")


if __name__ == "__main__":
    main()
