"""The same sweep on one pod and on serverless workers: wall time side by side, and what each costs.

Runs RALPH-001's refiner task (tiny random models, CPU, 64x64) as a 6-variant CFG sweep with ralph,
twice: on one emulated pod (a ComfyUI server started for it: its start is the pod's setup) and as jobs
on an emulated RunPod Serverless endpoint with 3 workers (tests/far/serverless_emulator.py; each worker
a ComfyUI server, cold-started by its first job). Then the cost model: a pod bills its price × its whole
life (setup included); serverless bills the worker price × each job's execution time.

    .venv/bin/python bench/serverless.py [--workers 3] [--pod-usd-per-hour 0.69] [--worker-usd-per-hour 1.33]

The default prices are examples (an RTX 4090 pod; a 24 GB serverless flex worker): pass today's.
On a machine with few CPU cores the workers share them, so the wall times here say what the
plumbing costs, not how a GPU fleet scales. Needs the test ComfyUI (tests/far/install_comfyui.sh)
and the serverless extra.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.far
from ralph.units import usd  # noqa: E402
from tests.far.comfyui_server import start_server  # noqa: E402
from tests.far.serverless_emulator import ServerlessEmulator  # noqa: E402
from tests.far.tiny_models import comfyui_home, ensure_models  # noqa: E402
from tests.repo_files import EXAMPLE  # noqa: E402

TASK_3 = "Générer avec workflow optimisé (Refiner Pass)"
TINY = {"width": 64, "height": 64, "steps": 3, "steps2": 2}
SWEEP = {"cfg": [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]}


def project(root: Path, params: dict[str, Any]) -> Path:
    root.mkdir(parents=True)
    file = root / EXAMPLE.name
    file.write_bytes(EXAMPLE.read_bytes())
    (root / "face.jpg").write_bytes((ensure_models(comfyui_home()) / "input" / "elena_face_ref.jpg").read_bytes())
    config = {"tasks": {TASK_3: {"handler": "comfyui.run", "params": {
        "template": "refiner", "overrides": TINY, "sweep": SWEEP, **params}}}}
    (root / "ralph.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return file


def ralph_run(file: Path, env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ralph", "run", "--only", "3", file.name], cwd=file.parent,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ralph failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    state = json.loads((file.parent / ".ralph" / file.stem / "state.json").read_text())
    return seconds, state["tasks"]["3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--pod-usd-per-hour", type=float, default=0.69)
    parser.add_argument("--worker-usd-per-hour", type=float, default=1.33)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ralph-bench-serverless-") as tmp:
        root = Path(tmp)

        started = time.perf_counter()
        server = start_server(root / "pod")
        setup_s = time.perf_counter() - started
        try:
            pod_s, _ = ralph_run(project(root / "on-pod", {"server": server.url}))
        finally:
            server.stop()

        with ServerlessEmulator(root / "serverless", workers=args.workers) as emu:
            file = project(root / "on-serverless", {
                "executor": "serverless", "endpoint": emu.endpoint_id, "concurrency": args.workers,
                "inputs": {"elena_face_ref.jpg": "face.jpg"}, "worker_usd_per_hour": args.worker_usd_per_hour})
            serverless_s, task = ralph_run(file, {"RUNPOD_ENDPOINT_BASE_URL": emu.base_url,
                                                  "RUNPOD_API_KEY": emu.api_key})
            peak = emu.peak_running
        billed_s = sum(job["execution_s"] for job in task["memory"]["jobs"].values())

    variants = len(SWEEP["cfg"])
    pod_life = setup_s + pod_s
    print(f"{variants}-variant CFG sweep of the refiner template (64x64, CPU, {os.cpu_count()} cores)")
    print(f"{'':28}{'wall time':>12}{'billed time':>14}{'price/h':>10}{'cost':>12}")
    print(f"{'one pod':28}{pod_life:>10.1f} s{pod_life:>12.1f} s{usd(args.pod_usd_per_hour):>10}"
          f"{usd(pod_life / 3600 * args.pod_usd_per_hour):>12}")
    print(f"{'  of which setup (ComfyUI)':28}{setup_s:>10.1f} s")
    print(f"{f'serverless, {args.workers} workers':28}{serverless_s:>10.1f} s{billed_s:>12.1f} s"
          f"{usd(args.worker_usd_per_hour):>10}{usd(billed_s / 3600 * args.worker_usd_per_hour):>12}")
    print(f"  (at most {peak} jobs ran at once; a pod bills setup and idle time, a worker its execution only)")


if __name__ == "__main__":
    main()
