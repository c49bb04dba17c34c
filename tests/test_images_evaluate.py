"""images.evaluate through the engine: tasks 4 and 6 of the real example, after a stand-in
for the ComfyUI task that writes real PNGs with known grain and records what comfyui.run does."""

from __future__ import annotations

import io
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from ralph.handlers.facts import ComfyServer, Images, MachineHandle
from ralph.handlers.images import face
from ralph.handlers.machines.local import LocalMachine
from rich.console import Console
from scipy.ndimage import gaussian_filter
from skimage import data

from ralph.console import ConsoleReporter
from ralph.context import Context
from ralph.handler import Evidence, Handler, Param, Result, TaskFailed, criterion
from ralph.parser import parse_file
from ralph.registry import Registry
from ralph.runner import Runner, RunSummary
from tests.repo_files import EXAMPLE

POD: dict[str, Any] = {"id": "pod-test-1", "gpu": "NVIDIA RTX A5000", "cost_per_hr": 0.27}
WORKFLOW = {"cfg": 7.0, "denoise": 0.8, "denoise2": 0.25, "sampler": "dpmpp_2m", "scheduler": "karras", "seed": 42,
            "face_image": "elena_face_ref.jpg"}


def scene(seed: int = 1, grain: float = 0.0, blur: float = 0.0) -> np.ndarray:
    """A portrait photograph (scikit-image's astronaut: a face, an orange suit, flags, texture a blur
    would remove) with film-like grain (noise blurred 0.8 px) of luma std ``grain``."""
    img = data.astronaut().astype(np.float32)
    h, w = img.shape[:2]
    noise = gaussian_filter(np.random.default_rng(seed + 1000).normal(0, 1, (h, w)), 0.8)
    img += (grain * noise / noise.std())[..., None]
    if blur:
        img = gaussian_filter(img, (blur, blur, 0))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return path


class Generate(Handler):
    """Stands in for comfyui.run: writes each variant's PNG and publishes them as Images, and the
    pod as a MachineHandle (with no host unless hold_pod gives one: no machine to reach, as after
    a pod handler that could not start one)."""

    name = "test.generate"
    provides = (Images, MachineHandle)
    params = {
        "variants": Param(list, [], "{label, grain, blur, params}"),
        "lint": Param(list, []),
        "folder": Param(str, "output/quality_tests"),
        "hold_pod": Param((dict, type(None)), None, "a MachineHandle record to publish, as runpod.create does"),
        "fail": Param((str, type(None)), None, "fail with this before making anything (as without an API key)"),
    }

    def run(self, ctx: Context) -> Result:
        if ctx.params["fail"] == "Ctrl-C":
            signal.raise_signal(signal.SIGINT)  # a person presses Ctrl-C before anything is made
        if ctx.params["fail"]:
            raise TaskFailed(ctx.params["fail"])
        images = []
        for v in ctx.params["variants"]:
            path = save(ctx.path(f"{ctx.params['folder']}/{v['label']}_00001_.png"),
                        scene(grain=v["grain"], blur=v.get("blur", 0)))
            params = {**WORKFLOW, **v.get("params", {})}
            images.append(
                {
                    "path": path.relative_to(ctx.workdir).as_posix(),
                    "server_path": f"output/quality_tests/{path.name}",
                    "params": params,
                    "variant": " ".join(f"{k}={val}" for k, val in v.get("params", {}).items()) or v["label"],
                    "prompt_id": f"prompt-{v['label']}",
                    "seed": params["seed"],
                }
            )
        held = MachineHandle.from_record(ctx.params["hold_pod"]) if ctx.params["hold_pod"] else None
        ctx.publish(held or MachineHandle(POD["id"], "", "", 0, "", "", "", "", "", 0.0, POD["gpu"],
                                          POD["cost_per_hr"]))
        ctx.publish(Images(images, WORKFLOW, ctx.params["lint"]))
        # What comfyui.setup publishes: the versions that ran.
        ctx.publish(ComfyServer(POD["id"], 8188, "/workspace/ComfyUI", "0.3.40", torch="2.5.1",
                                sha256={"bigLove_xl1.safetensors": "ab" * 32}, commit="c0" * 20, tag="v0.3.40",
                                custom_nodes={"ComfyUI_InstantID": "1e" * 20}))
        return Result(
            summary=f"{len(images)} image(s)",
            data={"images": images, "workflow": WORKFLOW, "lint": ctx.params["lint"], "pod": POD},
            cost_usd=0.0125,
        )

    @criterion(r"images written")
    def written(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(all(ctx.path(i["path"]).is_file() for i in result.data["images"]), "PNGs on disk")


def _section(text: str, start: str, stop: str) -> str:
    return text[text.index(start) : text.index(stop)]


def task_file(variants: list[dict[str, Any]], *, previous: str | None = None, lint: list[str] | None = None,
              session_doc: str | None = None, pod: dict[str, Any] | None = None) -> str:
    """The example's header, criteria and exit conditions with task 3 replaced by the stand-in
    and its tasks 4 and 6 verbatim (plus optional **Previous**/**Session doc** lines)."""
    example = EXAMPLE.read_text("utf-8")
    head = example[: example.index("### 1.")]
    task4 = _section(example, "### 4.", "### 5.")
    task6 = _section(example, "### 6.", "## Constraints")
    tail = example[example.index("## Constraints") :]
    if previous:
        task4 = task4.replace("**Status**: PENDING\n", f"**Status**: PENDING\n**Previous**: `{previous}`\n")
    if session_doc:
        task6 = task6.replace("**Status**: PENDING\n", f"**Status**: PENDING\n**Session doc**: `{session_doc}`\n")
    params = yaml.safe_dump({"variants": variants, "lint": lint or [], "hold_pod": pod}, sort_keys=True).strip()
    task3 = (
        "### 3. Générer avec workflow optimisé (Refiner Pass)\n**Priority**: HIGH\n**Status**: PENDING\n"
        "**Handler**: gen\n**Acceptance Criteria**:\n- [ ] Images written\n\n"
        f"```yaml\n{params}\n```\n\n---\n\n"
    )
    return head + task3 + task4 + task6 + tail


class Project:
    def __init__(self, root: Path, evaluate: dict[str, Any] | None = None) -> None:
        self.root = root
        self.file = root / "RALPH-001-grain-reduction.md"
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "handlers": {"gen": "tests.test_images_evaluate:Generate"},
            "tasks": {4: {"handler": "images.evaluate", "params": evaluate or {}}, 6: "docs.session"},
        }
        (root / "ralph.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    def write(self, *args: Any, **kwargs: Any) -> None:
        self.file.write_text(task_file(*args, **kwargs), encoding="utf-8")

    def run(self) -> RunSummary:
        output = io.StringIO()
        reporter = ConsoleReporter(Console(file=output, width=200, color_system=None))
        summary = Runner(self.file, reporter, retry_wait=0).run()
        self.output = output.getvalue()
        return summary

    def result(self, number: int) -> dict[str, Any]:
        state = json.loads((self.root / ".ralph" / self.file.stem / "state.json").read_text("utf-8"))
        return state["tasks"][str(number)]["result"]

    def parsed(self):
        return parse_file(self.file)[0]

    def checks(self, number: int) -> dict[str, bool]:
        return {c.text: c.checked for c in self.parsed().task(number).criteria}


def verdicts(summary: RunSummary, number: int) -> dict[str, Any]:
    outcome = next(o for o in summary.outcomes if o.number == number)
    return {v.criterion: v.evidence for v in outcome.verdicts}


def final(summary: RunSummary) -> dict[str, Any]:
    return {v.criterion: v.evidence for v in summary.final}


def crit(mapping: dict[str, Any], start: str) -> Any:
    return next(v for k, v in mapping.items() if k.startswith(start))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    save(p.root / "output/previous/elena_before.png", scene(grain=7))
    return p


def test_handlers_are_registered_as_entry_points() -> None:
    registry = Registry()
    assert registry.load("images.evaluate").__name__ == "EvaluateImages"
    assert registry.load("docs.session").__name__ == "SessionDoc"


def test_reduced_grain_ticks_boxes_draws_the_comparison_and_documents_it(project: Project) -> None:
    project.write([{"label": "refined", "grain": 2.5}], previous="output/previous/elena_before.png")
    summary = project.run()
    statuses = {t.number: t.status for t in project.parsed().tasks}
    assert statuses == {3: "DONE", 4: "NEEDS_REVIEW", 6: "DONE"}, project.output

    ticks = project.checks(4)
    assert crit(ticks, "Image téléchargée") and crit(ticks, "Comparaison visuelle")
    assert not crit(ticks, "Qualité visage"), "never ticked without a face identity measure"
    four = verdicts(summary, 4)
    run_folder = f"output/runpod-quality-tests/{project.file.stem}/"
    assert re.search(rf"{run_folder}\d{{8}}-\d{{6}}-\w{{6}}/refined_00001_\.png",
                     crit(four, "Image téléchargée").detail)
    assert "grain ratio 0.4" in crit(four, "Comparaison visuelle").detail
    face_evidence = crit(four, "Qualité visage")
    assert face_evidence.verified is None and "no machine is held" in face_evidence.detail

    data = project.result(4)["data"]
    copy = project.root / data["images"][0]["path"]
    assert copy.parent.parent == project.root / run_folder and copy.is_file(), "a folder of this file's run"
    assert copy.read_bytes() == (project.root / "output/quality_tests/refined_00001_.png").read_bytes()
    assert data["grain"]["verdict"] == "less grain" and data["grain"]["ratio"] < 0.5
    assert data["grain"]["detail_ratio"] > 0.9 and data["success"] is True
    assert data["previous"]["source"] == "the **Previous** line"
    picture = project.root / data["comparison"]
    assert picture.parent == copy.parent and data["comparison"] in project.result(4)["files"]
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width == 2 * 400 + 3 * 16

    assert all(project.checks(6).values()), project.checks(6)
    doc = (project.root / "docs/sessions/RALPH-001-grain-reduction.md").read_text("utf-8")
    assert "NVIDIA RTX A5000, $0.27/h" in doc and "`cfg=7`" in doc and "$0.0125" in doc
    assert ("- **Versions**: ComfyUI 0.3.40 (v0.3.40, commit `c0c0c0c0c0c0`), ComfyUI_InstantID commit "
            "`1e1e1e1e1e1e`, torch 2.5.1, `bigLove_xl1.safetensors` sha256 `abababababab…`") in doc
    link = re.search(r"\]\((RALPH-001-grain-reduction/[\w-]+/refined_00001_-comparison\.png)\)", doc)
    assert link and (project.root / "docs/sessions" / link.group(1)).is_file(), "the picture lives beside the doc"
    assert "**Success**: grain reduced. **Optimal parameters**: `cfg=7`, `denoise=0.8`" in doc

    ends = final(summary)
    assert crit(ends, "Image générée sans grain").verified is True
    assert crit(ends, "Couleurs naturelles").verified is True
    assert crit(ends, "Qualité visage").verified is None
    assert crit(ends, "Documentation").verified is True
    either = crit(ends, "Image générée avec grain")  # merged with its "OU …" alternative
    assert either.verified is True
    assert "OU identification claire de la prochaine piste si échec: success: no lead needed" in either.detail
    assert ("✔ verified: Image générée avec grain significativement réduit / OU identification"
            in project.file.read_text("utf-8"))
    file = project.parsed()
    assert [c.checked for c in file.success_criteria] == [True, False, True]


def test_a_blurred_after_is_not_less_grain_and_the_doc_names_the_next_lead(project: Project) -> None:
    project.write([{"label": "smoothed", "grain": 7, "blur": 1.5}], previous="output/previous/elena_before.png")
    summary = project.run()
    statuses = {t.number: t.status for t in project.parsed().tasks}
    assert statuses[4] == "FAILED" and statuses[6] == "DONE", project.output
    evidence = crit(verdicts(summary, 4), "Comparaison visuelle")
    assert evidence.verified is False and "detail lost" in evidence.detail
    assert not crit(project.checks(4), "Comparaison visuelle")
    assert project.result(4)["data"]["success"] is False

    doc = (project.root / "docs/sessions/RALPH-001-grain-reduction.md").read_text("utf-8")
    assert "**Next lead**: the image was smoothed, not de-grained" in doc
    six = verdicts(summary, 6)
    assert crit(six, "Paramètres optimaux").verified is True
    assert "not applicable, next lead noted" in crit(six, "Paramètres optimaux").detail
    ends = final(summary)
    assert not project.parsed().success_criteria[0].checked
    assert crit(ends, "Image générée sans grain").verified is False, "the failed task's measure is evidence"
    either = crit(ends, "Image générée avec grain")
    assert either.verified is True, "no less grain, but the next lead is written: the alternative holds"
    assert "detail lost" in either.detail and "lead written" in either.detail
    assert ("✔ verified: Image générée avec grain significativement réduit / OU identification"
            in project.file.read_text("utf-8"))


def test_a_sweep_is_ranked_and_the_best_variant_marked(project: Project) -> None:
    variants = [
        {"label": "cfg5", "grain": 6.0, "params": {"cfg": 5}},
        {"label": "cfg7", "grain": 2.5, "params": {"cfg": 7}},
        {"label": "cfg9", "grain": 4.0, "params": {"cfg": 9}},
    ]
    project.write(variants, previous="output/previous/elena_before.png")
    project.run()
    data = project.result(4)["data"]
    assert [r["variant"] for r in data["ranking"]] == ["cfg=7", "cfg=9", "cfg=5"]
    ratios = [r["ratio"] for r in data["ranking"]]
    assert ratios == sorted(ratios) and [r["rank"] for r in data["ranking"]] == [1, 2, 3]
    assert data["best"]["variant"] == "cfg=7" and data["best"]["params"]["cfg"] == 7
    assert data["comparison"].endswith("cfg7_00001_-comparison.png")
    doc = (project.root / "docs/sessions/RALPH-001-grain-reduction.md").read_text("utf-8")
    rows = [line for line in doc[doc.index("### Variants"):].splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Rank | Variant | cfg |")
    assert rows[1].startswith("| 1 **best** | cfg=7 | 7 | 2.") and "**best**" not in "".join(rows[2:])


def test_without_a_previous_image_grain_goes_to_review_with_its_numbers(project: Project) -> None:
    project.write([{"label": "first", "grain": 3.0}])
    summary = project.run()
    evidence = crit(verdicts(summary, 4), "Comparaison visuelle")
    assert evidence.verified is None
    assert re.search(r"grain index \d+\.\d\d", evidence.detail) and "no previous image" in evidence.detail
    assert crit(final(summary), "Couleurs naturelles").verified is None
    assert project.result(4)["data"]["success"] is None


def fake_insightface(site: Path) -> None:
    """The pod's insightface, stood in for (its antelopev2 weights cannot be had here): the
    embedding of a "face" is the image's own sparse pixels, so identical images read 1.0 and
    a black image has no face."""
    fake = site / "insightface"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "app.py").write_text(
        "import numpy as np\n"
        "class Face:\n"
        "    def __init__(self, v): self.bbox = [0, 0, 10, 10]; self.normed_embedding = v / np.linalg.norm(v)\n"
        "class FaceAnalysis:\n"
        "    def __init__(self, name, root, providers): assert name == 'antelopev2'\n"
        "    def prepare(self, ctx_id, det_size): pass\n"
        "    def get(self, bgr):\n"
        "        if bgr.mean() < 5: return []\n"
        "        small = bgr[::16, ::16].astype(float).ravel()\n"
        "        return [Face(small - small.mean())]\n"
    )


def test_face_measure_runs_the_script_on_the_pod_side(tmp_path: Path) -> None:
    """The pod is a LocalMachine here; see the sshd test below for the real route."""
    pod = tmp_path / "pod"
    fake_insightface(pod / "site")
    save(pod / "ref.png", scene(seed=3))
    local = [save(tmp_path / "same.png", scene(seed=3)), save(tmp_path / "other.png", scene(seed=9)[::-1].copy()),
             save(tmp_path / "black.png", np.zeros((512, 384, 3), np.uint8))]
    with LocalMachine(pod, hash_cache=tmp_path / "cache.json") as provider:
        placed = face.upload_images(provider, local, "faces")
        named = {Path(k).name: v for k, v in placed.items()}
        env = {"PYTHONPATH": str(pod / "site")}
        measure = face.measure_faces(provider, named, "ref.png", insightface_root="models", python=sys.executable,
                                     env=env)
        assert measure.available, measure.reason
        data = measure.as_data()
        assert data["similarities"]["same.png"] == pytest.approx(1.0, abs=1e-3)
        assert data["similarities"]["other.png"] < face.MIN_SIMILARITY
        assert face.judge(data, "same.png", None).verified is True
        assert face.judge(data, "other.png", None).verified is False
        black = face.judge(data, "black.png", None)
        assert black.verified is False and "no face detected" in black.detail
        assert face.judge(data, "same.png", "other.png").verified is True

        without = face.measure_faces(provider, named, "ref.png", insightface_root="models", python=sys.executable)
        assert not without.available and "insightface not importable" in without.reason
        verdict = face.judge(without.as_data(), "same.png", None)
        assert verdict.verified is None and "insightface not importable" in verdict.detail


def test_whether_insightface_is_there_is_probed_once_per_machine_and_python(tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    fake_insightface(pod / "site")
    calls = tmp_path / "calls"
    python = {}
    for name, path in (("with", pod / "site"), ("without", tmp_path / "empty")):
        python[name] = tmp_path / f"python-{name}"
        python[name].write_text(f'#!/bin/sh\necho "$@" >> {calls}\nPYTHONPATH={path} exec {sys.executable} "$@"\n')
        python[name].chmod(0o755)
    with LocalMachine(pod, hash_cache=tmp_path / "cache.json") as provider:
        for _ in range(2):
            assert face.missing_insightface(provider, "machine-a", str(python["with"])) == ""
            missing = face.missing_insightface(provider, "machine-a", str(python["without"]))
            assert missing == f"insightface not importable by {python['without']} on the machine"
        assert face.missing_insightface(provider, "machine-b", str(python["without"])) == missing
        assert face.missing_insightface(provider, "machine-b", str(tmp_path / "nope")).startswith(
            f"{tmp_path / 'nope'} did not run on the machine (exit 127)")
    assert len(calls.read_text().splitlines()) == 3, "one probe per machine and Python"


def test_copying_never_overwrites_a_different_file_of_the_same_name(tmp_path: Path) -> None:
    from ralph.handlers.images import evaluate

    folder = tmp_path / "dest"
    a = save(tmp_path / "a" / "img.png", scene(grain=2))
    b = save(tmp_path / "b" / "img.png", scene(grain=5))
    first, second, again = evaluate._bring(a, folder), evaluate._bring(b, folder), evaluate._bring(a, folder)
    assert first.name == "img.png" and second.name == "img-1.png" and again == first
    assert first.read_bytes() == a.read_bytes() and second.read_bytes() == b.read_bytes()
    assert evaluate._bring(second, folder) == second.resolve(), "an image already there is left in place"


def test_face_identity_is_measured_on_the_held_pod_over_ssh(tmp_path: Path, sshd: Any) -> None:
    """The whole route: a held pod resource, pods/session's SSH connection to a real sshd,
    images uploaded, the script run by the pod's Python (with the stand-in insightface)."""
    from ralph.handlers.machines import session

    pod_dir = sshd.start_dir
    fake_insightface(pod_dir / "site")
    save(pod_dir / "ref.png", scene())
    python = pod_dir / "python-with-insightface"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={pod_dir / "site"} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    handle = session.MachineHandle(
        id="pod-ssh-test", name="ralph-test", host=sshd.host, port=sshd.port, user=sshd.user,
        key_file=str(sshd.client_key), known_hosts=str(tmp_path / "known_hosts"), workspace=str(pod_dir),
        state_base=str(pod_dir / "deadman"), heartbeat_interval_s=30.0, gpu="NVIDIA RTX A5000", cost_per_hr=0.27,
    )
    project = Project(tmp_path / "proj", {"python": str(python), "face_reference": str(pod_dir / "ref.png"),
                                          "face_remote_dir": str(pod_dir / "faces")})
    save(project.root / "before.png", scene(grain=7))
    project.write([{"label": "refined", "grain": 2.5}], previous="before.png", pod=handle.record())
    try:
        summary = project.run()
    finally:
        session.detach_all()
    evidence = crit(verdicts(summary, 4), "Qualité visage")
    assert evidence.verified is True, evidence.detail
    assert re.search(r"ArcFace similarity to the reference (0\.9|1\.0).*previous image (0\.9|1\.0)", evidence.detail)
    assert (pod_dir / "faces" / "refined_00001_.png").is_file(), "the image went to the pod"
    assert {t.number: t.status for t in project.parsed().tasks}[4] == "DONE"
    state = json.loads((project.root / ".ralph" / project.file.stem / "state.json").read_text("utf-8"))
    assert 4 in state["resources"]["machine"]["users"], "the evaluation is recorded as a user of the pod"


def test_an_images_parameter_takes_globs_instead_of_the_earlier_task(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", {"images": ["elsewhere/*.png"], "dir": "kept"})
    for name, grain in (("b", 4.0), ("a", 2.0)):
        save(project.root / "elsewhere" / f"{name}.png", scene(grain=grain))
    save(project.root / "before.png", scene(grain=7))
    project.write([{"label": "ignored", "grain": 7}], previous="before.png")
    project.run()
    data = project.result(4)["data"]
    run = f"kept/{project.file.stem}/{project.result(4)['run_id']}" if "run_id" in project.result(4) else None
    paths = [i["path"] for i in data["images"]]
    assert [Path(p).name for p in paths] == ["a.png", "b.png"] and all(p.startswith("kept/") for p in paths)
    assert run is None or paths[0] == f"{run}/a.png"
    assert data["best"]["path"] == paths[0] and data["grain"]["verdict"] == "less grain"


def landscape(seed: int, grain: float) -> np.ndarray:
    """A photograph with no face (scikit-image's rocket on its pad, sky and trees) with film grain."""
    img = data.rocket().astype(np.float32)
    noise = gaussian_filter(np.random.default_rng(seed).normal(0, 1, img.shape[:2]), 0.8)
    return np.clip(np.round(img + (grain * noise / noise.std())[..., None]), 0, 255).astype(np.uint8)


def test_a_landscape_without_a_face_gets_no_colour_tick(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", {"images": ["shots/after.png"], "dir": "kept"})
    save(project.root / "shots" / "after.png", landscape(2, 2.5))
    save(project.root / "before.png", landscape(1, 8.0))
    project.write([{"label": "ignored", "grain": 7}], previous="before.png")
    summary = project.run()
    four = verdicts(summary, 4)
    assert crit(four, "Comparaison visuelle").verified is True, crit(four, "Comparaison visuelle").detail
    colours = crit(final(summary), "Couleurs naturelles")
    assert colours.verified is None and "no face found" in colours.detail, colours.detail
    assert "mean chroma" in colours.detail
    assert not project.parsed().success_criteria[2].checked  # "Couleurs naturelles préservées"


def test_a_blurred_copy_is_never_ticked_as_less_grain(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", {"images": ["shots/after.png"], "dir": "kept"})
    save(project.root / "shots" / "after.png", scene(grain=7, blur=2.5))
    save(project.root / "before.png", scene(grain=7))
    project.write([{"label": "ignored", "grain": 7}], previous="before.png")
    summary = project.run()
    evidence = crit(verdicts(summary, 4), "Comparaison visuelle")
    assert evidence.verified is False and "detail lost" in evidence.detail, evidence.detail
    assert not crit(project.checks(4), "Comparaison visuelle")


def test_a_sweep_gets_a_gallery_of_every_variant_and_seed(project: Project) -> None:
    variants = [
        {"label": f"cfg{c}-s{seed}", "grain": g + seed / 2, "params": {"cfg": c, "seed": seed}}
        for c, g in ((5, 6.0), (7, 2.0), (9, 4.0)) for seed in (1, 2)
    ]
    project.write(variants, previous="output/previous/elena_before.png")
    project.run()
    data = project.result(4)["data"]
    assert data["ranked"] is True and data["best"]["variant"] == "cfg=7 seed=1"
    png, page = (project.root / data["gallery"][kind] for kind in ("png", "html"))
    assert png.parent == (project.root / data["images"][0]["path"]).parent, "in this run's folder"
    with Image.open(png) as sheet:
        sheet_pixels = np.asarray(sheet.convert("RGB"))
    from ralph.handlers.images.gallery import BEST, CAPTION_LINES, HEADER, LINE, PAD, THUMB

    assert sheet_pixels.shape[1] >= 2 * (THUMB + PAD), "one column per seed"
    assert sheet_pixels.shape[0] == HEADER + 3 * (THUMB + CAPTION_LINES * LINE + PAD) + PAD, "one row per cfg"
    cell = THUMB + CAPTION_LINES * LINE + PAD
    rows, cols = np.nonzero(np.all(sheet_pixels == BEST, axis=2))
    # Rows follow the sweep (cfg 5, 7, 9), columns the seeds: the best, cfg 7 seed 1, is row 2, column 1.
    assert HEADER + cell - 4 <= rows.min() and rows.max() < HEADER + 2 * cell, (rows.min(), rows.max())
    assert cols.max() < PAD + THUMB + PAD
    text = page.read_text("utf-8")
    assert text.count("data:image/jpeg;base64,") == 6 and text.count("<b>BEST</b>") == 1
    assert "src=\"http" not in text and "cfg=7 seed=1" in text
    doc = (project.root / "docs/sessions/RALPH-001-grain-reduction.md").read_text("utf-8")
    link = re.search(r"\[!\[every variant × seed\]\(([^)]+gallery\.png)\)\]\(([^)]+gallery\.html)\)", doc)
    assert link and all((project.root / "docs/sessions" / part).is_file() for part in link.groups())


def test_no_variant_is_marked_best_when_nothing_could_be_measured(tmp_path: Path) -> None:
    from ralph.handlers.images.gallery import BEST, write_gallery

    rng = np.random.default_rng(5)
    rows = []
    for rank, cfg in enumerate((5, 7, 9), 1):
        save(tmp_path / f"cfg{cfg}.png", rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
        rows.append({"path": f"cfg{cfg}.png", "variant": f"cfg={cfg}", "params": {"cfg": cfg}, "seed": 1,
                     "rank": rank, "verdict": "not measurable"})
    written = write_gallery(rows, lambda p: tmp_path / p, tmp_path / "gallery", "noise")
    with Image.open(written["png"]) as sheet:
        assert not np.all(np.asarray(sheet.convert("RGB")) == BEST, axis=2).any()
    assert "BEST" not in written["html"].read_text("utf-8").replace("no variant marked best", "")


def test_a_blur_that_cannot_be_checked_goes_to_review_not_a_tick(tmp_path: Path) -> None:
    """The issue's case: a smooth picture blurred 2.5 px reads ratio ~0.1 with no texture to check
    for blur: the grain box stays open for a person, and the run is not called a success."""
    y, x = np.mgrid[0:512, 0:384].astype(np.float32)
    smooth = np.stack([70 + 100 * x / 384, 60 + 110 * y / 512, 90 + 40 * (x + y) / 896], axis=-1)
    grainy = smooth + (gaussian_filter(np.random.default_rng(3).normal(0, 1, (512, 384)), 0.8) * 20)[..., None]
    before = np.clip(np.round(grainy), 0, 255).astype(np.uint8)
    blurred = np.clip(np.round(gaussian_filter(before.astype(np.float32), (2.5, 2.5, 0))), 0, 255).astype(np.uint8)
    project = Project(tmp_path / "proj", {"images": ["shots/after.png"], "dir": "kept"})
    save(project.root / "shots" / "after.png", blurred)
    save(project.root / "before.png", before)
    project.write([{"label": "ignored", "grain": 7}], previous="before.png")
    summary = project.run()
    evidence = crit(verdicts(summary, 4), "Comparaison visuelle")
    assert evidence.verified is None and "blur not checked" in evidence.detail, evidence.detail
    assert not crit(project.checks(4), "Comparaison visuelle")
    assert project.result(4)["data"]["success"] is None
