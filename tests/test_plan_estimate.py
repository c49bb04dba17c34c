"""The plan a person reads before paying (``ralph run --dry-run``, and the start of a real run): what
each task will do, bytes, images, machine time, cost and how each was estimated, the worst case;
the question asked on a terminal before a machine is rented."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ralph.handlers.comfyui.setup import upload_speed
from ralph.handlers.runpod import estimate
from ralph.handlers.runpod.api import GpuOffer

from ralph.context import EstimateContext
from ralph.handler import Figure
from ralph.measures import SECONDS_PER_IMAGE, UPLOAD_SPEED, Measures
from ralph.parser import parse_file
from tests.engine.project import Project, make_project, task
from tests.test_needs_env import example_project, nowhere

GB = 1_000_000_000


def example_with_big_models(root: Path) -> Project:
    """The example, its local model files as large as the real ones (sparse: no disk used)."""
    project = example_project(root)
    models = project.root / "home" / "models"
    for name, size in (("bigLove_xl1.safetensors", int(6.5 * GB)), ("elena_v4_cloud.safetensors", 228_000_000)):
        with open(models / name, "wb") as out:
            out.truncate(size)
    return project


def dry_run(project: Project, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {"HOME": str(project.root / "home"), "RUNPOD_API_KEY": "dummy-key", "RUNPOD_API_BASE_URL": nowhere(),
                   **env}
    return project.cli("run", "--dry-run", *args, project.file.name, env=environment)


def test_the_examples_plan_reads_as_sizes_images_time_and_how_each_was_estimated(tmp_path: Path) -> None:
    project = example_with_big_models(tmp_path / "project")
    before = project.file.read_bytes()
    done = dry_run(project)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr and "{'" not in out and "': " not in out, out
    assert "Elena Grain Reduction - Refiner Pass — 6 tasks would run:" in out
    assert "  2. Setup ComfyUI + modèles → comfyui.setup\n" in out
    assert ("     uploads 3 files, 6.7 GB: bigLove_xl1.safetensors 6.5 GB, elena_v4_cloud.safetensors 228.0 MB, "
            "elena_face_ref.jpg 1.0 KB") in out
    assert "the machine downloads 7 files itself: 7 of unknown size (no size: given)" in out
    assert "at 5.0 MB/s (default: no upload measured yet; set upload_mb_per_s in comfyui.setup's params)" in out
    assert "     1 image, into output/\n" in out
    assert "1 image × 1 min (default: no image measured yet; set seconds_per_image in comfyui.run's params)" in out
    assert "  5. Terminer pod → runpod.terminate (clean-up: runs even after a failure)\n" in out
    totals = out[out.index("Totals:"):]
    assert "  upload: 6.7 GB from this machine\n" in totals
    assert "  downloads on the machine: 7 files of unknown size\n" in totals
    assert "  images: 1\n" in totals
    # 5 min to reach the pod + 6.7 GB at 5 MB/s (22 min) + 5 min to install + 1 image: the setup dominates.
    assert re.search(r"  machine time: ~3\d min \(task 1 5 min, task 2 2\d min, task 3 1 min; how: under each task\)",
                     totals), totals
    assert project.file.read_bytes() == before and not (project.root / ".ralph").exists()


def test_a_sweep_counts_variants_times_seeds_and_a_measured_pace_is_named(tmp_path: Path) -> None:
    project = example_with_big_models(tmp_path / "project")
    config = project.root / "ralph.yaml"
    config.write_text(config.read_text().replace(
        '"Générer avec workflow optimisé (Refiner Pass)": {handler: comfyui.run}',
        '"Générer avec workflow optimisé (Refiner Pass)": {handler: comfyui.run, params: '
        '{overrides: {denoise2: 0.3}, sweep: {cfg: [5, 7, 9]}, seeds: [1, 2]}}'))
    Measures().record(SECONDS_PER_IMAGE, 42.0, "4 image(s) on NVIDIA RTX A5000")
    Measures().record(UPLOAD_SPEED, 20e6, "6.5 GB of bigLove_xl1.safetensors over rsync")
    done = dry_run(project)
    assert done.returncode == 0, done.stdout + done.stderr
    at = Measures().get(SECONDS_PER_IMAGE).at
    assert "     overrides: denoise2=0.3\n" in done.stdout
    assert "     6 images: 6 variants (cfg 5, 7, 9 × seeds 1, 2), into output/\n" in done.stdout
    assert f"6 images × 42 s (measured on {at}: 4 image(s) on NVIDIA RTX A5000)" in done.stdout
    assert f"at 20.0 MB/s (measured on {at}: 6.5 GB of bigLove_xl1.safetensors over rsync)" in done.stdout
    assert "  images: 6\n" in done.stdout


def test_upload_speed_is_configured_else_measured_else_a_stated_default(tmp_path: Path) -> None:
    measures = Measures(tmp_path / "measures.json")
    assert upload_speed({}, measures) == Figure(5e6, "default: no upload measured yet; set upload_mb_per_s "
                                                     "in comfyui.setup's params")
    assert measures.record(UPLOAD_SPEED, 12.5e6, "1.0 GB of a.safetensors over rsync")
    measured = upload_speed({}, measures)
    assert measured.value == 12.5e6 and re.fullmatch(r"measured on \d{4}-\d\d-\d\d: 1\.0 GB of a\.safetensors "
                                                     r"over rsync", measured.basis)
    assert upload_speed({"upload_mb_per_s": 2}, measures) == Figure(2e6, "upload_mb_per_s")
    (tmp_path / "measures.json").write_text("{torn")  # a torn file counts as never measured
    assert measures.get(UPLOAD_SPEED) is None


# -- runpod.create's estimate, from offers shaped as the REST v2 catalog gives them ---------------
OFFERS = [
    GpuOffer("NVIDIA RTX A5000", "RTX A5000", 24, {"SECURE": 0.27, "COMMUNITY": 0.16}, "NONE",
             {"EU-RO-1": "NONE", "US-TX-3": "NONE"}, {}),
    GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, {"SECURE": 0.69}, "HIGH",
             {"EU-RO-1": "LOW", "US-TX-3": "HIGH"}, {}),
]
PARAMS = {"gpu_types": ["NVIDIA RTX A5000", "NVIDIA Imaginary 9000", "NVIDIA GeForce RTX 4090"],
          "cloud_types": ["ALL"], "data_centers": [], "gpu_count": 2, "max_lifetime_s": 10800,
          "heartbeat_timeout_s": 600, "image": "runpod/pytorch:2.4.0", "container_disk_gb": 40, "volume_gb": 50}


def context(tmp_path: Path) -> EstimateContext:
    file, _ = parse_file(Path(__file__).resolve().parents[1] / "roadmap" / "ralph" / "RALPH-001-grain-reduction.md")
    return EstimateContext(file, tmp_path, tmp_path / ".ralph", Measures(tmp_path / "measures.json"))


def test_each_candidate_has_its_price_and_availability_and_the_worst_case_the_dearest(tmp_path: Path) -> None:
    asked = []
    result = estimate.create_estimate(PARAMS, context(tmp_path), gpu_offers=lambda n: asked.append(n) or OFFERS)  # type: ignore[func-returns-value]
    assert asked == [2]
    assert result.lines[2:] == (
        "RTX A5000 (24 GB), SECURE: $0.540/h, availability NONE",
        "RTX A5000 (24 GB), COMMUNITY: $0.320/h, availability NONE",
        "RTX 4090 (24 GB), SECURE: $1.380/h, availability HIGH",
        "RTX 4090 (24 GB), COMMUNITY: not offered",
        "NVIDIA Imaginary 9000: not in RunPod's catalog; the create will not find it",
    )
    assert result.lines[0].startswith("creates a pod of 2 GPU(s): the first of 3 GPU type(s) × ALL with capacity")
    assert result.lines[1] == ("deletes itself after 3 h whatever happens (max_lifetime_s), "
                               "or 10 min after ralph goes silent")
    rental = result.rental
    assert rental is not None and rental.per_hour is not None
    assert rental.per_hour.value == pytest.approx(1.38)  # the first candidate with capacity now
    assert rental.per_hour.basis == "RTX 4090 on SECURE, the first candidate with capacity now"
    assert rental.worst_case_usd == pytest.approx(3 * 1.38)
    assert result.machine_seconds == Figure(300.0, "create to SSH, image pull included (default)")


def test_data_centres_narrow_availability_to_where_the_pod_may_go(tmp_path: Path) -> None:
    params = {**PARAMS, "gpu_types": ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A5000"], "cloud_types": ["SECURE"],
              "data_centers": ["EU-RO-1"], "gpu_count": 1}
    result = estimate.create_estimate(params, context(tmp_path), gpu_offers=lambda n: OFFERS)
    assert result.lines[2:] == ("RTX 4090 (24 GB), SECURE in EU-RO-1: $0.690/h, availability LOW",
                                "RTX A5000 (24 GB), SECURE in EU-RO-1: $0.270/h, availability NONE")
    none_free = {**params, "gpu_types": ["NVIDIA RTX A5000"]}
    rental = estimate.create_estimate(none_free, context(tmp_path), gpu_offers=lambda n: OFFERS).rental
    assert rental is not None and rental.per_hour is not None
    assert rental.per_hour.basis == "RTX A5000 on SECURE, no candidate has capacity now: priced as the first"


def test_prices_that_cannot_be_read_are_a_readable_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "dummy-key")
    monkeypatch.setenv("RUNPOD_API_BASE_URL", nowhere())
    result = estimate.create_estimate(PARAMS, context(tmp_path))  # the real client, to a closed port
    assert result.lines[-1].startswith("prices could not be read from RunPod (")
    assert result.lines[-1].endswith("): cost unknown") and "\n" not in result.lines[-1]
    assert "dummy-key" not in result.lines[-1]
    assert result.rental is not None and result.rental.per_hour is None and result.rental.worst_case_usd is None


# -- a plan that rents a machine: cost, worst case, limit; asked on a terminal only -----------------
def renting_project(root: Path, config: str = "") -> Project:
    return make_project(root, task(1, "Rent a machine", handler="rent", params={"cost_per_hr": 3.6},
                                   criteria=("Machine rented",)),
                        task(2, "Work on it", params={"uses": "machine"}),
                        task(3, "Give it back", handler="release", params={"resource": "machine"},
                             criteria=("Machine released",)), config=config)


def test_a_plan_that_rents_prices_its_time_and_states_the_worst_case_and_the_limit(tmp_path: Path) -> None:
    project = renting_project(tmp_path, config="max_cost_usd: 5\n")
    done = project.cli("run", "--dry-run", project.file.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith(
        "Totals:\n"
        "  machine time: ~10 min (task 1 10 min; how: under each task)\n"
        "  cost: ~$0.60 at $3.600/h (the test's rate)\n"
        "  worst case: $14.40: the machine's whole lifetime, 2 h (max_lifetime_s), at $7.200/h, the dearest candidate\n"
        "  cost limit: $5.00 (max_cost_usd): past it ralph stops the work and the clean-up tasks delete the machine\n"
    ), done.stdout
    assert "     time on the machine: ~10 min — the test's guess\n" in done.stdout
    flag = project.cli("run", "--dry-run", "--max-cost-usd", "1.5", project.file.name)
    assert "  cost limit: $1.50 (max_cost_usd)" in flag.stdout


def in_a_terminal(project: Project, *args: str, answer: str | None = None,
                  deadline_s: float = 60) -> tuple[int, str]:
    """``ralph ARGS`` with a pty for stdin and stdout, answering ``answer`` when it asks."""
    main, child = pty.openpty()
    env = {**os.environ, "RALPH_TEST_LEDGER": str(project.ledger), "COLUMNS": "160"}
    process = subprocess.Popen([sys.executable, "-m", "ralph", *args], cwd=project.root, env=env,
                               stdin=child, stdout=child, stderr=child, close_fds=True)
    os.close(child)
    seen, answered = b"", False
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ready, _, _ = select.select([main], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed its side: it exited
                break
            if not chunk:
                break
            seen += chunk
        if answer is not None and not answered and b"Proceed? [y/N] " in seen:
            os.write(main, answer.encode() + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    code = process.wait(timeout=max(1.0, end - time.monotonic()))
    os.close(main)
    return code, seen.decode("utf-8", "replace")


def test_a_run_that_rents_asks_on_a_terminal_and_no_leaves_everything_untouched(tmp_path: Path) -> None:
    project = renting_project(tmp_path)
    before = project.file.read_bytes()
    code, output = in_a_terminal(project, "run", project.file.name, answer="n")
    assert "cost: ~$0.60 at $3.600/h" in output and "Proceed? [y/N] " in output
    assert code == 1 and "not confirmed: nothing was run or written" in output
    assert project.file.read_bytes() == before and not (tmp_path / ".ralph").exists()

    code, output = in_a_terminal(project, "run", project.file.name, answer="y")
    assert code == 0, output
    assert project.statuses() == {1: "DONE", 2: "DONE", 3: "DONE"}


def test_yes_or_no_terminal_never_asks(tmp_path: Path) -> None:
    project = renting_project(tmp_path)
    code, output = in_a_terminal(project, "run", "--yes", project.file.name)
    assert code == 0, output
    assert "cost: ~$0.60" in output and "Proceed?" not in output
    other = renting_project(tmp_path / "piped")
    piped = other.cli("run", other.file.name)  # stdin and stdout are pipes: a script, nobody to ask
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "cost: ~$0.60" in piped.stdout and "Proceed?" not in piped.stdout


def test_a_plan_that_rents_nothing_does_not_ask(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Plain work"))
    code, output = in_a_terminal(project, "run", project.file.name)
    assert code == 0, output
    assert "cost: none (no machine that bills in this plan)" in output and "Proceed?" not in output
