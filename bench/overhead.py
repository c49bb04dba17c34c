"""What a state save and a PNG stamp cost ralph, beside how they were done before issue 13.

* State save: ``RunState.save`` on a state shaped like a run of RALPH-001 with a sweep of
  ``--variants`` images (one ``comfyui.run`` and one ``images.evaluate`` record per variant), in
  an environment of ``--env`` variables, one of them secret. Before: every string of the state
  was redacted after reading the secret list again from the whole environment. A one-image run
  saves its state about 12 times.
* PNG stamp: setting the variant's parameters as a text chunk in an 832×1216 PNG saved the way
  ComfyUI saves one (zlib level 4, its prompt and workflow as text chunks). Before: the image was
  decoded and encoded again by Pillow.

Both ways run in this process on the same data; medians of ``-n`` repeats.

    .venv/bin/python bench/overhead.py [-n 15] [--variants 1 3 10] [--env 100]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from ralph.handlers.images import pngtext

from ralph import secrets
from ralph.state import RunState
from ralph.textfile import write_atomically

SAVES_PER_RUN = 12  # state saves in a one-image run of RALPH-001 (measured on a GPU machine, notes/gpu.md)
SECRET = "rp_bench_0123456789abcdef"


# -- before issue 13, kept here as the baseline ------------------------------------------------
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)


def _old_redact(text: str) -> str:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6}
    for value in sorted(values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, "***")
    return text


def _old_redact_data(data: Any) -> Any:
    if isinstance(data, str):
        return _old_redact(data)
    if isinstance(data, dict):
        return {_old_redact_data(k): _old_redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_old_redact_data(v) for v in data]
    return data


def old_save(state: RunState) -> None:
    state.directory.mkdir(parents=True, exist_ok=True)
    body = json.dumps(_old_redact_data(state.data), indent=1, ensure_ascii=False, sort_keys=True)
    write_atomically(state.path, body.encode("utf-8"))


def old_stamp(path: Path, key: str, text: str) -> None:
    with Image.open(path) as image:
        info = PngInfo()
        for name, value in image.text.items():  # type: ignore[attr-defined]  # a PNG's text chunks
            if name != key:
                info.add_text(name, value)
        info.add_text(key, text)
        image.load()
        image.save(path, pnginfo=info)


# -- the data --------------------------------------------------------------------------------
def run_like_state(directory: Path, variants: int) -> RunState:
    """A state.json like RALPH-001's after a sweep: tasks' memories, results and criteria verdicts."""
    state = RunState(directory)
    params = {"cfg": 7.0, "denoise": 0.8, "denoise2": 0.25, "sampler": "dpmpp_2m", "scheduler": "karras",
              "steps": 30, "steps2": 15, "width": 832, "height": 1216, "checkpoint": "bigLove_xl4.safetensors",
              "lora": "detail_tweaker_xl.safetensors", "face_image": "elena_face_ref.jpg"}
    images = []
    for v in range(variants):
        label = f"cfg{5 + v}-seed{42 + v}"
        images.append({"path": f"output/runpod-quality-tests/elena_refiner_{v:05d}_.png", "variant": label,
                       "server_path": f"output/quality_tests/elena_refiner_{v:05d}_.png", "prompt_id": f"{v:08x}-4b1d",
                       "params": {**params, "cfg": 5.0 + v, "seed": 42 + v}, "seed": 42 + v, "server_seconds": 5.4})
    for number, kind in enumerate(["runpod.create", "comfyui.setup", "comfyui.run", "images.evaluate",
                                   "pod.shell", "docs.session"], 1):
        task = state.task(number)
        task["handler"] = kind
        task["memory"] = {"variants": {i["variant"]: {"prompt_id": i["prompt_id"], "graph": "ab" * 32, "images": [i]}
                                       for i in images}} if kind == "comfyui.run" else {"note": kind}
        ranking = [{**i, "rank": r, "grain_index": 1.23, "verdict": "less grain", "ratio": 0.71,
                    "explanation": "fine grain fell from 2.31 to 1.64 on 412 flat blocks", "colour": {
                        "skin_hue": 31.2, "skin_chroma": 18.4, "verdict": "kept", "explanation": "hue moved 0.8°"}}
                   for r, i in enumerate(images, 1)]
        task["result"] = {"summary": f"{kind} done", "files": [i["path"] for i in images], "cost_usd": 0.01,
                          "data": ({"images": images, "ranking": ranking} if kind == "images.evaluate"
                                   else {"images": images})}
        task["verdicts"] = [{"criterion": f"criterion {c} of task {number}", "verified": True,
                             "detail": "evidence " * 8} for c in range(3)]
    return state


def comfyui_png(path: Path) -> None:
    """832×1216, a smooth picture with grain (about the 2.4 MB of a real SDXL image), as ComfyUI saves it."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1216, 0:832].astype(np.float32)
    base = np.stack([120 + 60 * np.sin(x / 90), 110 + 50 * np.cos(y / 70), 100 + 40 * np.sin((x + y) / 120)], -1)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    info = PngInfo()
    info.add_text("prompt", json.dumps({str(n): {"class_type": "KSampler", "inputs": {"seed": n}} for n in range(40)}))
    info.add_text("workflow", json.dumps({"nodes": [{"id": n, "type": "KSampler"} for n in range(40)]}))
    Image.fromarray(pixels).save(path, pnginfo=info, compress_level=4)


# -- timing ----------------------------------------------------------------------------------
def median_ms(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=15, help="repeats of each measurement")
    parser.add_argument("--variants", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--env", type=int, default=100, help="environment variables (padded up to this many)")
    args = parser.parse_args()

    for i in range(max(0, args.env - len(os.environ) - 1)):
        os.environ[f"BENCH_PADDING_{i}"] = f"/usr/local/lib/value-{i}"
    os.environ["BENCH_API_KEY"] = SECRET
    secrets.refresh()
    print(f"{len(os.environ)} environment variables, 1 secret; medians of {args.n}")
    print(f"{'state save':<34}{'before':>12}{'now':>12}{'per run (x12) before → now':>34}")
    with tempfile.TemporaryDirectory() as tmp:
        for variants in args.variants:
            state = run_like_state(Path(tmp) / f"s{variants}", variants)
            state.task(1)["memory"]["login"] = f"--key {SECRET}"
            before, now = median_ms(lambda: old_save(state), args.n), median_ms(state.save, args.n)  # noqa: B023 (called at once)
            assert SECRET not in state.path.read_text("utf-8")
            size = state.path.stat().st_size / 1000
            print(f"  {variants:>2} variant(s), {size:5.0f} kB{'':<8}{before:>9.1f} ms{now:>9.1f} ms"
                  f"{before * SAVES_PER_RUN / 1000:>19.2f} s → {now * SAVES_PER_RUN / 1000:.3f} s")

        original = Path(tmp) / "original.png"
        comfyui_png(original)
        work = Path(tmp) / "stamped.png"
        values = json.dumps({"cfg": 7.0, "seed": 42, "denoise2": 0.25}, sort_keys=True)

        def fresh(stamp: Callable[[Path, str, str], None]) -> Callable[[], None]:
            def action() -> None:
                shutil.copyfile(original, work)
                stamp(work, "ralph", values)
            return action

        copy_only = median_ms(lambda: shutil.copyfile(original, work), args.n)
        before = median_ms(fresh(old_stamp), args.n) - copy_only
        now = median_ms(fresh(pngtext.set_text), args.n) - copy_only
        with Image.open(work) as image:
            assert json.loads(image.info["ralph"])["seed"] == 42 and "prompt" in image.info
        print(f"{'PNG stamp':<34}{'before':>12}{'now':>12}")
        print(f"  832x1216, {original.stat().st_size / 1e6:.1f} MB{'':<15}{before:>9.1f} ms{now:>9.1f} ms")


if __name__ == "__main__":
    main()
