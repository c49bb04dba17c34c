"""How much time ralph's ComfyUI client adds on top of the server's own execution time.

Runs RALPH-001's refiner graph (tiny random models, CPU, 64x64) N times on the test
ComfyUI server and prints, per image: the server's execution time (execution_start →
execution_success, by its own clock), the time from submit until ``run()`` returns, and
until the PNG is on local disk. Beside it, in the same process on the same server, a
reference client that does the least possible (POST, poll /history every 10 ms, GET /view).

    .venv/bin/python bench/comfy_overhead.py [-n 8] [--size 64]

Needs tests/far/install_comfyui.sh to have run (RALPH_COMFYUI_HOME or the default place).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.far
from ralph.handlers.comfyui.client import ComfyClient  # noqa: E402

from tests.far import tiny_models  # noqa: E402
from tests.far.comfyui_server import refiner_graph, start_server  # noqa: E402


def _server_seconds(entry: dict) -> float:
    stamps = {ev: d.get("timestamp") for ev, d in entry["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000


def ralph_client(url: str, graph: dict, dest: Path) -> tuple[float, float, float]:
    with ComfyClient(url) as client:
        t0 = time.perf_counter()
        result = client.run(graph)
        t_done = time.perf_counter() - t0
        client.download(result, dest)
        t_disk = time.perf_counter() - t0
    return result.server_seconds or 0.0, t_done, t_disk


def reference_client(url: str, graph: dict, dest: Path) -> tuple[float, float, float]:
    """No socket, no checks: the floor a client can reach by polling hard."""
    with httpx.Client(base_url=url) as http:
        pid = str(uuid.uuid4())
        t0 = time.perf_counter()
        http.post("/prompt", json={"prompt": graph, "prompt_id": pid}).raise_for_status()
        while not (entry := http.get(f"/history/{pid}").json().get(pid)):
            time.sleep(0.01)
        t_done = time.perf_counter() - t0
        for out in entry["outputs"].values():
            for img in out.get("images", []):
                (dest / img["filename"]).write_bytes(http.get("/view", params=img).content)
        t_disk = time.perf_counter() - t0
    return _server_seconds(entry), t_done, t_disk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="images per client")
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    args = parser.parse_args()
    home = tiny_models.comfyui_home()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "base", home)
        try:
            # Warm-up: the first prompt loads the models.
            ralph_client(server.url, refiner_graph(seed=0), Path(tmp))
            print(f"{'client':<10} {'img':>3} {'server s':>9} {'done s':>8} {'on disk s':>10} {'overhead ms':>12}")
            summary = {}
            for name, fn in (("reference", reference_client), ("ralph", ralph_client)):
                rows = []
                for i in range(args.n):
                    # A new seed each time, so ComfyUI's cache cannot skip the samplers.
                    graph = refiner_graph(args.size, args.size, seed=1000 + i + (args.n if name == "ralph" else 0))
                    server_s, done_s, disk_s = fn(server.url, graph, Path(tmp))
                    rows.append(disk_s - server_s)
                    print(f"{name:<10} {i:>3} {server_s:>9.3f} {done_s:>8.3f} {disk_s:>10.3f} "
                          f"{1000 * (disk_s - server_s):>12.1f}")
                summary[name] = statistics.median(rows)
            print("median overhead (on disk - server execution): "
                  + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in summary.items()))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
