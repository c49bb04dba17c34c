"""ralph on a GPU box: what ComfyUI takes alone, what ralph adds per image, and where it goes.

Starts ComfyUI (its own base folder, the tests' stand-in InstantID nodes), builds an SDXL-sized
random checkpoint with ComfyUI's own classes (bench/sdxl_checkpoint.py; nothing downloaded) and
the tests' small models for the rest, then in one process tree, one server:

1. ComfyUI alone: a minimal client (POST /prompt, poll /history every 10 ms, GET /view) runs
   RALPH-001's task 3 graph (832×1216, 30 + 15 steps): one cold image, then ``-n`` warm ones;
2. ``ralph run`` of RALPH-001's tasks 1, 3 and 4 on ``machine.local`` (this machine, the server's
   port), one image, ``-n`` times, each a fresh project;
3. the same with a 3-variant sweep (``cfg: [5, 7, 9]``).

A new seed for every image, so ComfyUI's cache never skips the samplers. GPU busy time and
peak memory come from ``nvidia-smi`` sampled every 50 ms. Prints a table (medians) and writes
every figure to ``--out``/gpu-bench.json.

    python bench/gpu.py --comfyui PATH/TO/ComfyUI [--python PY] [-n 3] [--out DIR]

``--tiny`` uses the tests' tiny SD1.5 checkpoint at 64×64 on the CPU: a dry run of the script.

On a GPU machine with no network (what the README's H200 figures were measured with): ComfyUI's
source without its tests as a tarball; wheels for what the machine's Python lacks or has in a
version ralph does not take (ralph's own, mistune 3.4, websockets, tenacity, torchsde, trampoline,
PyWavelets, and opencv-python-headless 4.x where the machine's OpenCV is 5, which has no face
cascades), installed with ``pip install --no-index --no-deps --target DIR`` and then compiled
(``python -m compileall DIR``: ``--no-compile`` would leave every run compiling sources); ComfyUI
without its frontend (``-- --front-end-root DIR`` holding a one-line index.html); and, where PyAV
is absent, a stub package ``av`` on PYTHONPATH whose modules answer any name with an empty class
(v0.3.75 imports ``av``, ``av.container`` and ``av.subtitles.stream`` at start; this graph never
uses them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))  # for tests.far (the stand-in nodes, the tiny models, the graph); ralph as installed
from tests.far import tiny_models  # noqa: E402
from tests.far.comfyui_server import prepare_base, refiner_graph  # noqa: E402

EXAMPLE = REPO / "roadmap" / "ralph" / "RALPH-001-grain-reduction.md"
TASKS = {"Créer pod RunPod": "machine.local", "Générer avec workflow optimisé (Refiner Pass)": "comfyui.run",
         "Télécharger et évaluer résultat": "images.evaluate"}


# -- the GPU, sampled ------------------------------------------------------------------------
class GpuSampler(threading.Thread):
    """``nvidia-smi`` every 50 ms: (time, utilisation %, memory used MiB); nothing without one."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []
        self.name_of_card = ""
        self.process: subprocess.Popen[str] | None = None
        if shutil.which("nvidia-smi"):
            query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
            self.name_of_card = subprocess.run(query, capture_output=True, text=True).stdout.strip()
            self.process = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "50"],
                stdout=subprocess.PIPE, text=True)

    def run(self) -> None:
        if self.process is None or self.process.stdout is None:
            return
        for line in self.process.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue
            self.samples.append((time.monotonic(), util, mem))

    def between(self, start: float, end: float) -> tuple[float | None, float | None]:
        """GPU busy seconds (utilisation × time) and peak memory (GiB) in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return None, None
        return statistics.fmean(s[1] for s in inside) / 100 * (end - start), max(s[2] for s in inside) / 1024

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()


# -- ComfyUI ---------------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    base: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def build_models(python: str, comfyui: Path, work: Path, tiny: bool) -> Path:
    """The tests' small models (LoRA, ControlNet, InstantID, face) and, unless tiny, the SDXL-sized checkpoint."""
    root = work / "models-root"
    started = time.monotonic()
    subprocess.run([python, str(Path(tiny_models.__file__)), "--comfyui", str(comfyui), "--dest", str(root)],
                   check=True)
    if not tiny:
        checkpoint = root / tiny_models.FILES[tiny_models.CHECKPOINT]
        subprocess.run([python, str(REPO / "bench" / "sdxl_checkpoint.py"), "--comfyui", str(comfyui),
                        "--out", str(checkpoint)], check=True)
    print(f"models built in {time.monotonic() - started:.0f} s", flush=True)
    return root


def start_server(python: str, comfyui: Path, work: Path, models: Path, port: int, extra: list[str]) -> Server:
    base = work / "base"
    prepare_base(base, models)
    log = work / "comfyui.log"
    command = [python, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base),
               "--disable-auto-launch", "--disable-api-nodes", "--dont-print-server",
               "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(command, cwd=comfyui, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", base, process, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"ComfyUI exited {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{server.url}/system_stats", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise SystemExit(f"ComfyUI did not answer in 300 s:\n{log.read_text(errors='replace')[-3000:]}")


# -- 1. ComfyUI alone ------------------------------------------------------------------------
@dataclass
class Image_:
    execution: float  # the server's own clock: execution_start → execution_success
    wall: float  # submit → PNG on disk
    gpu_busy: float | None = None
    peak_gib: float | None = None

    @property
    def overhead(self) -> float:
        return self.wall - self.execution


def execution_seconds(entry: dict[str, Any]) -> float:
    stamps = {event: data.get("timestamp") for event, data in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def minimal_client(url: str, graph: dict[str, Any], dest: Path, gpu: GpuSampler) -> Image_:
    with httpx.Client(base_url=url, timeout=600) as http:
        pid = str(uuid.uuid4())
        t0 = time.monotonic()
        http.post("/prompt", json={"prompt": graph, "prompt_id": pid}).raise_for_status()
        while not (entry := http.get(f"/history/{pid}").json().get(pid)):
            time.sleep(0.01)
        for output in entry["outputs"].values():
            for image in output.get("images", []):
                (dest / image["filename"]).write_bytes(http.get("/view", params=image).content)
        t1 = time.monotonic()
    return Image_(execution_seconds(entry), t1 - t0, *gpu.between(t0, t1))


# -- 2 and 3. ralph --------------------------------------------------------------------------
@dataclass
class RalphRun:
    images: int
    wall: float
    execution: float  # ComfyUI's own, summed over the run's images
    tasks: dict[str, float] = field(default_factory=dict)  # handler → seconds
    gpu_busy: float | None = None
    peak_gib: float | None = None

    def per_image(self, seconds: float) -> float:
        return seconds / self.images


def task_file() -> str:
    """RALPH-001 with tasks 1, 3 and 4 (machine, generation, evaluation): no setup, no pod to end, no document."""
    text = EXAMPLE.read_text("utf-8")
    head, tail = text[: text.index("### 1.")], text[text.index("## Constraints") :]
    sections = [text[text.index(f"### {n}.") : text.index(f"### {n + 1}.")] for n in (1, 3, 4)]
    return head + "".join(sections) + tail


def ralph_run(work: Path, name: str, comfyui_base: Path, size: tuple[int, int], steps: tuple[int, int], seed: int,
              sweep: list[float] | None, gpu: GpuSampler, profile: Path | None = None) -> RalphRun:
    project = work / name
    project.mkdir()
    file = project / EXAMPLE.name
    file.write_text(task_file(), encoding="utf-8")
    overrides = {"width": size[0], "height": size[1], "steps": steps[0], "steps2": steps[1], "seed": seed}
    run_params: dict[str, Any] = {"overrides": overrides, "output_dir": "output"}
    if sweep:
        run_params["sweep"] = {"cfg": sweep}
    config = {"tasks": TASKS, "params": {
        "machine.local": {"workspace": str(comfyui_base)},
        "comfyui.run": run_params,
        "images.evaluate": {"comfyui_dir": str(comfyui_base), "python": sys.executable},
    }}
    (project / "ralph.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    # A person's next run: the node schemas the last run cached are there (a file's first run asks
    # the server for every node class, later runs only for the workflow's own).
    state_dir = project / ".ralph" / file.stem
    schemas = work / "object_info.json"
    if schemas.is_file():
        state_dir.mkdir(parents=True)
        shutil.copy(schemas, state_dir)
    t0 = time.monotonic()
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    done = subprocess.run([sys.executable, *profiler, "-m", "ralph", "run", file.name], cwd=project,
                          capture_output=True, text=True)
    t1 = time.monotonic()
    if done.returncode not in (0, 3):  # 3: criteria left for a person's review
        raise SystemExit(f"ralph run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    shutil.copy(state_dir / "object_info.json", schemas)
    events = [json.loads(line) for line in (state_dir / "events.jsonl").read_text("utf-8").splitlines()]
    handlers = {e["task"]: e["handler"] for e in events if e["event"] == "task_started"}
    tasks = {handlers[e["task"]]: e["seconds"] for e in events if e["event"] == "task_finished"}
    state = json.loads((state_dir / "state.json").read_text("utf-8"))
    images = next(t["result"]["data"]["images"] for t in state["tasks"].values()
                  if t.get("result", {}).get("data", {}).get("images") and "ranking" not in t["result"]["data"])
    execution = sum(i["server_seconds"] for i in images)
    return RalphRun(len(images), t1 - t0, execution, tasks, *gpu.between(t0, t1))


def import_seconds(cwd: Path) -> tuple[float, float]:
    """``python -c pass`` and the same importing what a run on machine.local imports (medians of 5)."""
    modules = ("ralph.cli, ralph.handlers.machines.owned, ralph.handlers.machines.pod_shell, "
               "ralph.handlers.comfyui.run, ralph.handlers.comfyui.client, ralph.handlers.images.evaluate")

    def timed(code: str) -> float:
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)  # not beside a ralph/ source folder
            times.append(time.monotonic() - t0)
        return statistics.median(times)

    return timed("pass"), timed(f"import {modules}")


def grain_seconds(png: Path) -> dict[str, float]:
    """ralph's grain measure beside skimage's estimate_sigma on the luma of the same image (medians of 5)."""
    import numpy as np
    from PIL import Image
    from ralph.handlers.images.grain import measure_grain

    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"))
    size = f"{rgb.shape[1]}×{rgb.shape[0]}"
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    measures = {"ralph measure_grain": lambda: measure_grain(rgb)}
    try:
        import pywt  # noqa: F401 (estimate_sigma needs it, and says so only when called)
        from skimage.restoration import estimate_sigma

        measures["skimage estimate_sigma (luma)"] = lambda: estimate_sigma(luma)
    except ImportError:
        pass
    result = {}
    for name, measure in measures.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            measure()
            times.append(time.perf_counter() - t0)
        result[f"{name}, {size}"] = statistics.median(times)
    return result


def profile_summary(path: Path, out: Path) -> None:
    """The profiled run's functions by own time and by cumulative time, as text."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(80)
    out.write_text(text.getvalue())
    shutil.copy(path, out.with_suffix(".pstats"))  # for a closer look: python -m pstats


# -- the report ------------------------------------------------------------------------------
def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def fmt(value: float | None, unit: str = "s", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f} {unit}"


def report(card: str, cold: Image_, alone: list[Image_], single: list[RalphRun], sweep: list[RalphRun],
           imports: tuple[float, float], grain: dict[str, float]) -> tuple[str, dict[str, Any]]:
    exec_alone = median([i.execution for i in alone])
    alone_overhead = median([i.overhead for i in alone])

    def comfy_overhead(runs: list[RalphRun]) -> float | None:
        return median([r.per_image(r.tasks.get("comfyui.run", 0) - r.execution) for r in runs])

    def percent(part: float | None, of: float | None) -> float | None:
        return None if part is None or not of else 100 * part / of

    def whole(runs: list[RalphRun], without_evaluate: bool) -> float | None:
        return median([r.per_image(r.wall - r.execution
                                   - (r.tasks.get("images.evaluate", 0) if without_evaluate else 0))
                       for r in runs])

    rows = [
        ("card", card or "no NVIDIA GPU (nvidia-smi absent)"),
        ("ComfyUI alone, cold first image (wall)", fmt(cold.wall)),
        ("ComfyUI alone, warm, per image: execution", fmt(exec_alone)),
        ("  minimal client's overhead (wall − execution)", fmt(alone_overhead, digits=3)),
        ("  GPU busy (nvidia-smi); peak GPU memory", f"{fmt(median([i.gpu_busy for i in alone]))}; "
                                                     f"{fmt(median([i.peak_gib for i in alone]), 'GiB', 1)}"),
        ("ralph, one image: ComfyUI execution", fmt(median([r.execution for r in single]))),
        ("  comfyui.run overhead (task − execution)", fmt(comfy_overhead(single), digits=3)),
        ("    as a share of the execution", fmt(percent(comfy_overhead(single), median([r.execution for r in single])),
                                                "%", 1)),
        ("  whole `ralph run` overhead, without images.evaluate", fmt(whole(single, True), digits=3)),
        ("  images.evaluate", fmt(median([r.tasks.get("images.evaluate") for r in single]), digits=3)),
        ("  machine.local", fmt(median([r.tasks.get("machine.local") for r in single]), digits=3)),
        ("  outside the tasks (start, imports, plan, writes)",
         fmt(median([r.wall - sum(r.tasks.values()) for r in single]), digits=3)),
        ("ralph, 3-variant sweep, per image: comfyui.run overhead", fmt(comfy_overhead(sweep), digits=3)),
        ("  whole run overhead without images.evaluate", fmt(whole(sweep, True), digits=3)),
        ("  images.evaluate", fmt(median([r.per_image(r.tasks.get("images.evaluate", 0)) for r in sweep]), digits=3)),
        ("python -c pass; + the imports of a machine.local run", f"{fmt(imports[0], digits=3)}; "
                                                                 f"{fmt(imports[1], digits=3)}"),
        *[(f"grain: {name}", fmt(1000 * seconds, "ms", 0)) for name, seconds in grain.items()],
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
    figures = {"card": card, "cold": cold.__dict__, "alone": [i.__dict__ for i in alone],
               "single": [r.__dict__ for r in single], "sweep": [r.__dict__ for r in sweep],
               "imports": imports, "grain": grain}
    return table, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI's source folder (v0.3.75 tested)")
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI (has torch)")
    parser.add_argument("-n", type=int, default=3, help="warm images alone, and one-image ralph runs")
    parser.add_argument("--sweeps", type=int, default=1, help="3-variant ralph runs")
    parser.add_argument("--port", type=int, default=8188, help="the server's port (machine.local reaches 8188)")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path, default=Path("."), help="where gpu-bench.json and comfyui.log go")
    parser.add_argument("--tiny", action="store_true", help="tiny SD1.5 checkpoint, 64×64, CPU: a dry run")
    parser.add_argument("comfyui_args", nargs="*", help="more arguments for ComfyUI's main.py (after --)")
    args = parser.parse_args()

    size, steps = ((64, 64), (3, 2)) if args.tiny else ((832, 1216), (30, 15))
    work = args.work or Path(tempfile.mkdtemp(prefix="ralph-gpu-bench-"))
    comfyui = args.comfyui.resolve()
    gpu = GpuSampler()
    gpu.start()
    models = build_models(args.python, comfyui, work, args.tiny)
    server = start_server(args.python, comfyui, work, models, args.port, [*(["--cpu"] if args.tiny else []),
                                                                          *args.comfyui_args])
    try:
        scratch = work / "alone"
        scratch.mkdir()
        seed = iter(range(1000, 2000))
        graph = lambda: refiner_graph(*size, steps=steps, seed=next(seed))  # noqa: E731
        cold = minimal_client(server.url, graph(), scratch, gpu)
        print(f"cold image: {cold.wall:.1f} s", flush=True)
        alone = [minimal_client(server.url, graph(), scratch, gpu) for _ in range(args.n)]
        print(f"alone: {[round(i.execution, 2) for i in alone]} s execution", flush=True)
        single = [ralph_run(work, f"single{i}", server.base, size, steps, next(seed), None, gpu) for i in range(args.n)]
        print(f"ralph single: {[round(r.wall, 2) for r in single]} s wall", flush=True)
        sweep = [ralph_run(work, f"sweep{i}", server.base, size, steps, next(seed), [5.0, 7.0, 9.0], gpu)
                 for i in range(args.sweeps)]
        print(f"ralph sweep: {[round(r.wall, 2) for r in sweep]} s wall", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        ralph_run(work, "profiled", server.base, size, steps, next(seed), None, gpu, work / "run.pstats")
        profile_summary(work / "run.pstats", args.out / "ralph-run-profile.txt")
    finally:
        server.stop()
        gpu.stop()
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(server.log, args.out / "comfyui.log")
    png = next((work / "single0" / "output").rglob("*.png"))
    table, figures = report(gpu.name_of_card, cold, alone, single, sweep, import_seconds(work), grain_seconds(png))
    (args.out / "gpu-bench.json").write_text(json.dumps(figures, indent=1, default=str))
    print(table)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
