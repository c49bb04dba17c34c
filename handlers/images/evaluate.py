"""``images.evaluate``: bring generated images home, compare them with the previous one, rank a sweep.

The images come from the latest earlier task that recorded ``images`` (``comfyui.run``) or
from an ``images`` parameter. Each is measured against the previous image — a ``previous``
parameter, a ``**Previous**:``/``**Baseline**:`` line in the task, else the best image of
the last run (a history in ``images-history.json`` in ralph's state folder) — for grain on
the same blocks, detail (blur guard) and colour (skin read on a detected face). A sweep is
ranked on those numbers; the best variant is drawn beside the previous image in a comparison
PNG, and every image in a gallery (gallery.py). Each run writes into a folder of its own
(``<dir>/<task file>/<run id>/``). Face identity is only measured on the pod (see face.py);
without it that criterion goes to a person.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ralph.handlers.facts import ComfyServer, Evaluation, Images, MachineHandle
from ralph.handlers.machines.base import MachineError

from ralph.context import Context, EstimateContext
from ralph.facts import Need
from ralph.handler import BACKTICKED, Estimate, Evidence, Handler, Param, Result, TaskBlocked, criterion
from ralph.model import Task
from ralph.parser import normalise
from ralph.paths import run_folder
from ralph.state import now
from ralph.textfile import write_atomically

from . import face

HISTORY = "images-history.json"
DEFAULT_DIR = "output"
DEFAULT_COMFYUI_DIR = "/workspace/ComfyUI"  # a RunPod ComfyUI image's
MARKDOWN_LINK = re.compile(r"\]\(<?([^)>]+)>?\)")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class EvaluateImages(Handler):
    """Copy the generated images locally, measure grain, detail and colour against the previous
    image, rank a sweep, draw a before/after PNG, measure face identity on the pod if possible.

    Previous image: `previous` parameter, a `**Previous**:` or `**Baseline**:` line, else the
    best image of the last run. Data: images, previous, ranking, best, grain, colour, face,
    comparison, success.
    """

    name = "images.evaluate"
    needs = (Need(Images, unless=("images",)),)
    provides = (Evaluation,)
    # numpy, Pillow and OpenCV: loaded while the images are being made
    warm_imports = ("ralph.handlers.images.assessment", "ralph.handlers.images.compare",
                    "ralph.handlers.images.gallery", "cv2")
    params = {
        "images": Param((str, list, type(None)), None, "image paths or globs; default: the earlier task's images"),
        "dir": Param((str, type(None)), None, "local folder for the images; default: the one the criterion names"),
        "previous": Param((str, type(None)), None, "the image to compare with (relative to the task file)"),
        "face_reference": Param((str, type(None)), None,
                                "face reference on the pod; default: <comfyui_dir>/input/<face_image>"),
        "comfyui_dir": Param((str, type(None)), None, "ComfyUI's folder on the pod; default: the one "
                             "comfyui.setup set up, else /workspace/ComfyUI"),
        "python": Param(str, "python3", "the pod's Python that has insightface (ComfyUI's)"),
        "face_remote_dir": Param(str, "ralph-face", "where images are copied on the machine for the face measure "
                                 "(relative: in its working folder)"),
    }

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        images = params["images"] or "the images of the task before"
        if isinstance(images, list):
            images = ", ".join(images)
        previous = params["previous"] or next(
            (_field_path(f.value) for key in ("previous", "baseline")
             if (f := task.fields.get(key)) and f.value.strip()),
            "the best image of the last run")
        return Estimate((f"measures grain, detail and colour of {images} against {previous}; "
                         "face identity on the machine if it has insightface",))

    def run(self, ctx: Context) -> Result:
        base = ctx.path(ctx.params["dir"] or _named_folder(ctx) or DEFAULT_DIR)
        folder = run_folder(base, ctx.file.path, ctx.run_id)  # a later run never overwrites this one's
        folder.mkdir(parents=True, exist_ok=True)
        records = [dict(r, path=ctx.display_path(_bring(ctx.path(r["path"]), folder))) for r in _sources(ctx)]
        for record in records:
            record["size"] = ctx.path(record["path"]).stat().st_size
        previous, previous_note = _previous(ctx, records)
        # numpy, Pillow and OpenCV only now: planning a run never waits for them
        from .assessment import Assessed, assess, grain_data, rgb, rounded
        from .compare import render_comparison
        from .gallery import ranked_on_measures, write_gallery

        measure_faces = self._face_measure(ctx, records, previous)
        with ThreadPoolExecutor(max_workers=1) as pool:
            faces = pool.submit(measure_faces)  # on the machine, while the pixels are measured here
            prev_pixels = rgb(ctx.path(previous["path"])) if previous else None
            assessed = assess([ctx.path(r["path"]) for r in records], records, prev_pixels, previous)
            ranking = sorted(assessed, key=Assessed.key)
            best = ranking[0]
            if previous:
                previous["grain_index"] = rounded(best.grain.prev.index) if best.grain else None

            files = [r["path"] for r in records]
            comparison = None
            reference = prev_pixels if prev_pixels is not None else (assessed[0].pixels if len(assessed) > 1 else None)
            if reference is not None and best.grain is not None:
                path = folder / f"{Path(best.record['path']).stem}-comparison.png"
                render_comparison(reference, best.pixels, best.grain, best.colour).save(path)
                comparison = ctx.display_path(path)
                files.append(comparison)
            face_data = faces.result()

        rows = []
        for rank, item in enumerate(ranking, 1):
            rows.append({**item.as_data(), "rank": rank})
        for row in rows:
            row["face_similarity"] = face_data.get("similarities", {}).get(row["path"])
        gallery = None
        if len(records) > 1:
            order = {r["path"]: i for i, r in enumerate(records)}  # the sweep's order, not the ranking's
            in_order = sorted(rows, key=lambda r: order[r["path"]])
            written = write_gallery(in_order, ctx.path, folder / "gallery", f"{ctx.file.path.stem}: {len(rows)} images")
            gallery = {kind: ctx.display_path(path) for kind, path in written.items()}
            files += list(gallery.values())
        grain = grain_data(best, previous, previous_note, len(ranking), ranked_on_measures(rows))
        undecided = ("not measurable", "blur not checked")  # a person decides: no success, no failure
        success = grain.get("reduced") if previous and grain["verdict"] not in undecided else None
        _remember(ctx, records, rows[0])
        best_row = rows[0]
        summary = f"{len(records)} image(s) in {ctx.display_path(folder)}; {grain['explanation']}"
        found = Evaluation(
            ranking=rows,
            previous=previous,
            grain=grain,
            colour=best_row["colour"] if previous else {**best_row["colour"], "verdict": None},
            face={**face_data, "image": best_row["path"], "previous": previous["path"] if previous else None},
            comparison=comparison,
            success=success,
            gallery=gallery,
            ranked=ranked_on_measures(rows),
        )
        ctx.publish(found)
        return Result(summary=summary, files=files, data={"images": records, "best": best_row, **found.record()})

    def _face_measure(self, ctx: Context, records: list[dict[str, Any]],
                      previous: dict[str, Any] | None) -> Callable[[], dict[str, Any]]:
        """The face measure to run: what it needs from the task is read here, on the run's
        thread; the work it returns happens on the machine, and may run beside other work."""
        reference = ctx.params["face_reference"] or _face_reference(ctx)
        if reference is None:
            reason = "no face reference: set `face_reference` or a face_image in the workflow"
            return lambda: face.unavailable(reason).as_data()
        handle, why_not = held_machine(ctx)
        if handle is None:
            return lambda: face.unavailable(why_not).as_data()
        local = [ctx.path(r["path"]) for r in records] + ([ctx.path(previous["path"])] if previous else [])
        names = {str(path): ctx.display_path(path) for path in local}
        root = _comfyui_dir(ctx) + "/models/insightface"
        python, remote_dir = ctx.params["python"], ctx.params["face_remote_dir"]
        shown = ctx.display_path(python)

        def measure() -> dict[str, Any]:
            from ralph.handlers.machines import session

            try:
                provider = session.attach(handle)
                if missing := face.missing_insightface(provider, handle.id, python, shown):
                    return face.unavailable(missing).as_data()
                placed = face.upload_images(provider, local, remote_dir)
                by_name = {names[k]: v for k, v in placed.items()}
                return face.measure_faces(provider, by_name, reference, insightface_root=root,
                                          python=python).as_data()
            except (MachineError, OSError) as error:  # the face measure is optional: no verdict, no failure
                return face.unavailable(f"the pod could not be reached for the face measure: {error}").as_data()

        return measure

    # -- checks ---------------------------------------------------------------------------

    @criterion(r"(image|fichier)s?.*(telecharge|download)")
    def downloaded(self, ctx: Context, result: Result, text: str) -> Evidence:
        images = result.data.get("images") or []
        if not images:
            return Evidence(False, "no image was evaluated")
        named = BACKTICKED.search(text)
        folder = ctx.path(named.group(1)) if named else None
        found, missing, elsewhere = [], [], []
        for image in images:
            path = ctx.path(image["path"])
            if not path.is_file():
                missing.append(image["path"])
            elif folder is not None and folder not in path.parents:
                elsewhere.append(image["path"])
            else:
                found.append(f"{image['path']} ({_size(path.stat().st_size)})")
        if missing or elsewhere:
            problems = [f"missing: {', '.join(missing)}"] * bool(missing)
            problems += [f"not in {named.group(1) if named else ''}: {', '.join(elsewhere)}"] * bool(elsewhere)
            return Evidence(False, "; ".join(problems))
        return Evidence(True, ", ".join(found))

    @criterion(r"visage|\bface\b|identit")
    def face_kept(self, ctx: Context, result: Result, text: str) -> Evidence:
        data = result.data.get("face")
        if not data:
            return Evidence(None, "no face measure recorded")
        verdict = face.judge(data, data.get("image"), data.get("previous"))
        return Evidence(verdict.verified, verdict.detail)

    @criterion(r"couleur|colou?r")
    def colours(self, ctx: Context, result: Result, text: str) -> Evidence:
        colour = result.data.get("colour")
        if not colour:
            return Evidence(None, "no colour measure recorded")
        if colour.get("verdict") is None:
            skin = "no face found" if colour.get("face") is None else (
                f"face skin hue {colour['skin_hue']}°, chroma {colour['skin_chroma']} "
                f"({'natural' if colour.get('natural') else 'UNNATURAL'})")
            return Evidence(
                None, f"no previous image to compare colours with: mean chroma {colour['mean_chroma']}, {skin}; "
                      "a person must judge")
        return Evidence(colour.get("verified"), colour["explanation"])

    @criterion(r"grain|comparaison visuelle|visual comparison")
    def grain_reduced(self, ctx: Context, result: Result, text: str) -> Evidence:
        grain = result.data.get("grain")
        if not grain:
            return Evidence(None, "no grain measure recorded")
        verdict = grain["verdict"]
        if verdict == "less grain":
            return Evidence(True, grain["explanation"])
        if verdict in ("no previous image", "not measurable", "blur not checked"):
            return Evidence(None, grain["explanation"])
        return Evidence(False, grain["explanation"])


# -- helpers ------------------------------------------------------------------------------


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


def _named_folder(ctx: Context) -> str | None:
    """The folder a "image téléchargée … dans `X`" criterion names."""
    for criterion_ in ctx.task.criteria:
        if re.search(r"telecharge|download", normalise(criterion_.text)):
            found = BACKTICKED.search(criterion_.text)
            if found:
                return found.group(1)
    return None


def _sources(ctx: Context) -> list[dict[str, Any]]:
    given = ctx.params["images"]
    if given:
        patterns = [given] if isinstance(given, str) else [str(p) for p in given]
        records = []
        for pattern in patterns:
            matches = sorted(glob.glob(str(ctx.workdir / pattern)))
            if not matches:
                raise TaskBlocked(f"no image matches `{pattern}` (relative to the task file's folder)")
            records += [{"path": ctx.display_path(Path(m)), "variant": Path(m).stem, "params": {}} for m in matches]
        return records
    made = ctx.fact(Images)
    images = made.images if made is not None else None
    if not images:
        raise TaskBlocked("no images to evaluate: no earlier task recorded any and no `images` parameter was given")
    missing = [i["path"] for i in images if not ctx.path(i["path"]).is_file()]
    if missing:
        raise TaskBlocked(f"images recorded by an earlier task are not on disk: {', '.join(missing)}")
    return [dict(i) for i in images]


def _bring(source: Path, folder: Path) -> Path:
    """``source`` copied into ``folder`` unless it is there already. A different file of the
    same name (ComfyUI counters restart on a new pod) is never overwritten: the copy gets
    a suffix, so the previous run's image stays comparable."""
    source = source.resolve()
    if folder.resolve() in source.parents:
        return source
    folder.mkdir(parents=True, exist_ok=True)
    digest = None
    target = folder / source.name
    n = 1
    while target.exists():
        digest = digest or sha256(source)
        if sha256(target) == digest:
            return target
        target = folder / f"{source.stem}-{n}{source.suffix}"
        n += 1
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target


def _field_path(value: str) -> str:
    for pattern in (BACKTICKED, MARKDOWN_LINK):
        found = pattern.search(value)
        if found:
            return found.group(1).strip()
    return value.strip()


def _previous(ctx: Context, records: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The image to compare with and where it came from; or None and why not."""
    named, source = ctx.params["previous"], "the `previous` parameter"
    if not named:
        for key in ("previous", "baseline"):
            found = ctx.task.fields.get(key)
            if found and found.value.strip():
                named, source = _field_path(found.value), f"the **{found.key}** line"
                break
    if named:
        path = ctx.path(named)
        if not path.is_file():
            return None, f"the previous image `{named}` named by {source} was not found"
        return {"path": ctx.display_path(path), "source": source}, ""
    current = {sha256(ctx.path(r["path"])) for r in records}
    for entry in reversed(_history(ctx)):
        best = entry["best"]
        if entry.get("run") == ctx.run_id or best["sha256"] in current:
            continue  # this run, or the same image evaluated again: compare with the one before
        path = ctx.path(best["path"])
        if path.is_file() and sha256(path) == best["sha256"]:
            return {"path": best["path"], "source": f"the best image of run {entry['run']} ({entry['time']})"}, ""
        return None, f"the last run's image {best['path']} is gone or was overwritten"
    return None, "no previous image: none named (**Previous**: line or `previous` parameter) and no earlier run"


def _face_reference(ctx: Context) -> str | None:
    made = ctx.fact(Images)
    name = made.workflow.get("face_image") if made is not None else None
    if not isinstance(name, str) or not name:
        return None
    return name if name.startswith("/") else f"{_comfyui_dir(ctx)}/input/{name}"


def _comfyui_dir(ctx: Context) -> str:
    """The ``comfyui_dir`` parameter, else the folder of the ComfyUI an earlier task set up."""
    server = ctx.fact(ComfyServer)
    chosen = ctx.params["comfyui_dir"] or (server.folder if server is not None else DEFAULT_COMFYUI_DIR)
    return chosen.rstrip("/")


def held_machine(ctx: Context) -> tuple[MachineHandle | None, str]:
    """The machine an earlier task holds (reading it records that this task used it), or None
    and why not. The face measure is the only step here that needs the machine."""
    from ralph.handlers.machines import session

    if (handle := session.held(ctx)) is None:
        return None, "no machine is held; the face measure runs on the machine, where insightface is"
    return handle, ""


# -- history: what a later run compares against ------------------------------------------


def _history(ctx: Context) -> list[dict[str, Any]]:
    path = ctx.state_dir / HISTORY
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text("utf-8"))
    except ValueError:
        return []
    return data if isinstance(data, list) else []


def _remember(ctx: Context, records: list[dict[str, Any]], best: dict[str, Any]) -> None:
    entries = [e for e in _history(ctx) if e.get("run") != ctx.run_id]
    entries.append(
        {
            "run": ctx.run_id,
            "time": now(),
            "task": ctx.task.number,
            "images": [{"path": r["path"], "variant": r.get("variant")} for r in records],
            "best": {"path": best["path"], "sha256": sha256(ctx.path(best["path"])),
                     "grain_index": best["grain_index"]},
        }
    )
    path = ctx.state_dir / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(entries, indent=1, ensure_ascii=False).encode("utf-8"))
