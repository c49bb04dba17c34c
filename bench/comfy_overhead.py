"""How much time ralph's ComfyUI client adds on top of the server's own execution time.

Runs RALPH-001's refiner graph (tiny random models, CPU, 64x64) N times on the test
ComfyUI server and prints, per image: the server's execution time (execution_start →
execution_success, by its own clock), the time from submit until ``run()`` returns, until
the PNG is on local disk, and the tail: from the server's execution_success stamp to the PNG
on disk (same machine, same wall clock; negative when the file came before the prompt ended).
Beside it, in the same process on the same server, a reference client that does the least
possible (POST, poll /history every 10 ms, GET /view).

On a GPU box ComfyUI's process holds millions of Python objects, and the ``gc.collect()`` it runs
after a prompt (at most every 10 s) stalls it for 0.25-0.35 s just when a client wants its
result. ``--gc-ballast`` gives the CPU test server a heap that size (a test node's list of live
objects), and ``--gap`` waits between images so that every prompt is followed by a collection.

    .venv/bin/python bench/comfy_overhead.py [-n 8] [--size 64] [--gc-ballast 1000000] [--gap 10.5]

Needs tests/far/install_comfyui.sh to have run (RALPH_COMFYUI_HOME or the default place).
"""
from __future__ import annotations

import argparse
import os
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

Timings = tuple[float, float, float, float]  # server execution, done, on disk, tail


def _timings(entry: dict, t0: float, t_done: float) -> Timings:
    on_disk_at, t_disk = time.time(), time.perf_counter() - t0
    stamps = {ev: d.get("timestamp") for ev, d in entry["status"]["messages"]}
    server = (stamps["execution_success"] - stamps["execution_start"]) / 1000
    return server, t_done, t_disk, on_disk_at - stamps["execution_success"] / 1000


def ralph_client(url: str, graph: dict, dest: Path) -> Timings:
    with ComfyClient(url) as client:
        t0 = time.perf_counter()
        result = client.run(graph, dest=dest)  # as comfyui.run calls it
        t_done = time.perf_counter() - t0
        client.download(result, dest)
        return _timings(result.history, t0, t_done)


def reference_client(url: str, graph: dict, dest: Path) -> Timings:
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
        return _timings(entry, t0, t_done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="images per client")
    parser.add_argument("--size", type=int, default=64, help="image width and height")
    parser.add_argument("--gc-ballast", type=int, default=1_000_000, help="live objects the server holds")
    parser.add_argument("--gap", type=float, default=10.5, help="seconds between images (ComfyUI collects "
                        "at most every 10 s)")
    args = parser.parse_args()
    home = tiny_models.comfyui_home()
    os.environ["RALPH_TEST_GC_BALLAST"] = str(args.gc_ballast)  # the server inherits it
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp) / "base", home)
        try:
            # Warm-up: the first prompt loads the models.
            ralph_client(server.url, refiner_graph(seed=0), Path(tmp))
            print(f"{'client':<10} {'img':>3} {'server s':>9} {'done s':>8} {'on disk s':>10} {'overhead ms':>12} "
                  f"{'tail ms':>8}")
            summary, tails = {}, {}
            for name, fn in (("reference", reference_client), ("ralph", ralph_client)):
                rows, tail_rows = [], []
                for i in range(args.n):
                    # A new seed each time, so ComfyUI's cache cannot skip the samplers.
                    graph = refiner_graph(args.size, args.size, seed=1000 + i + (args.n if name == "ralph" else 0))
                    time.sleep(args.gap)
                    server_s, done_s, disk_s, tail_s = fn(server.url, graph, Path(tmp))
                    rows.append(disk_s - server_s)
                    tail_rows.append(tail_s)
                    print(f"{name:<10} {i:>3} {server_s:>9.3f} {done_s:>8.3f} {disk_s:>10.3f} "
                          f"{1000 * (disk_s - server_s):>12.1f} {1000 * tail_s:>8.1f}")
                summary[name], tails[name] = statistics.median(rows), statistics.median(tail_rows)
            print("median overhead (on disk - server execution): "
                  + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in summary.items()))
            print("median tail (server's execution_success stamp -> on disk): "
                  + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in tails.items()))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
