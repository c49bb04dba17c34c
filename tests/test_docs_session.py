"""docs.session: the session document is only ever appended to, and names the next lead."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import yaml
from ralph.handlers.docs import SessionDoc, next_lead

from ralph.context import Context
from ralph.handler import Handler, Result
from ralph.state import RunState
from tests.test_images_evaluate import Project, crit, save, scene, verdicts

DOC = "notes/sessions.md"
PERSON = "# Elena sessions\n\nWritten by a person; ralph must never change these bytes.\n"


def _run_with_doc(project: Project, grain: float, **kwargs: object) -> None:
    project.write([{"label": "img", "grain": grain}], session_doc=DOC, **kwargs)
    project.run()


def test_a_second_run_appends_a_section_and_leaves_everything_before_it_byte_identical(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj")
    doc = project.root / DOC
    doc.parent.mkdir(parents=True)
    doc.write_bytes(PERSON.encode())  # no blank line at the end: the section still starts on its own

    _run_with_doc(project, grain=6.0)
    first = doc.read_bytes()
    assert first.startswith(PERSON.encode()) and first.count(b"<!-- ralph:session") == 1
    first_data = project.result(4)["data"]
    assert first_data["previous"] is None and first_data["success"] is None
    assert "no previous image to compare with" in first.decode()

    # The next experiment: a person rewrites the task file (all PENDING) and runs it again.
    _run_with_doc(project, grain=2.5)
    second = doc.read_bytes()
    assert second.startswith(first), "the first section and the person's text are unchanged"
    assert second.count(b"<!-- ralph:session") == 2
    data = project.result(4)["data"]
    assert data["previous"]["path"] == first_data["images"][0]["path"], "compared with the last run's best image"
    assert data["previous"]["source"].startswith("the best image of run")
    first_image, second_image = (project.root / d["images"][0]["path"] for d in (first_data, data))
    assert first_image != second_image and first_image.parent.parent == second_image.parent.parent
    assert first_image.is_file() and second_image.is_file(), "each run keeps its own images"
    assert data["grain"]["verdict"] == "less grain"
    added = second[len(first) :].decode()
    assert re.search(r"## Session .*\n<!-- ralph:session .*-->\n\n\*\*Verdict\*\*: grain reduced\n", added), added
    assert "**Success**: grain reduced" in added
    assert re.search(r"\]\(sessions/\d{8}-\d{6}-\w{6}/img_00001_-comparison\.png\)", added), added
    for link in re.findall(r"\]\(([^)]+\.png)\)", second.decode()):  # both sessions' pictures, beside the doc
        assert (doc.parent / link).is_file() and "output/" not in link, link
    assert all(project.checks(6).values())


@pytest.mark.parametrize("why", ["no API key", "Ctrl-C"])
def test_a_run_where_nothing_ran_writes_no_session(tmp_path: Path, why: str) -> None:
    """Without an API key, or interrupted before anything is made: no empty session is appended."""
    project = Project(tmp_path / "proj")
    project.write([{"label": "img", "grain": 3.0}], session_doc=DOC)
    text = project.file.read_text("utf-8").replace("hold_pod: null", f"hold_pod: null\nfail: {why}")
    project.file.write_text(text, "utf-8")
    summary = project.run()
    assert not (project.root / DOC).exists(), project.output
    if why == "Ctrl-C":
        assert {t.number: t.status for t in project.parsed().tasks}[3] == "IN_PROGRESS", project.output
    evidence = crit(verdicts(summary, 6), "Session doc")
    assert evidence.verified is not True and "nothing ran" in evidence.detail


def test_the_checks_notice_a_rewritten_doc(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj")
    doc = project.root / DOC
    doc.parent.mkdir(parents=True)
    doc.write_bytes(PERSON.encode())
    _run_with_doc(project, grain=3.0)
    record = project.result(6)
    state = RunState(project.root / ".ralph" / project.file.stem)
    file = project.parsed()
    ctx = Context(file, state.resources, project.root, state.directory, "check", reporter=None, events=None,
                  task=file.task(6), params={"path": None}, memory=state.memory(6))
    handler, result = SessionDoc(), Result(**record)
    assert handler.updated(ctx, result, "Session doc mise à jour").verified is True
    doc.write_bytes(doc.read_bytes().replace(b"never change", b"never alter", 1))
    evidence = handler.updated(ctx, result, "Session doc mise à jour")
    assert evidence.verified is False and "bytes before the section changed" in evidence.detail
    doc.write_bytes(PERSON.encode())
    assert handler.updated(ctx, result, "Session doc mise à jour").verified is False, "section gone"


def test_a_doc_task_resumed_after_a_crash_does_not_append_twice(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj")
    _run_with_doc(project, grain=3.0)
    doc = project.root / DOC
    written = doc.read_bytes()
    status = {t.number: t.status for t in project.parsed().tasks}[6]
    assert status == "NEEDS_REVIEW", "no previous image: success not established, a person decides"
    # As if ralph died after the append, before recording the task as done.
    text = project.file.read_text("utf-8")
    head, six = text.split("### 6.", 1)
    six = re.sub(r"\*\*Status\*\*: \w+", "**Status**: IN_PROGRESS", six, count=1)
    project.file.write_text(head + "### 6." + six, "utf-8")
    project.run()
    assert doc.read_bytes() == written
    assert {t.number: t.status for t in project.parsed().tasks}[6] == status
    assert project.result(6)["summary"].startswith("section already appended")


def test_grain_flat_across_a_cfg_sweep_points_at_the_sampler(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj")
    save(project.root / "before.png", scene(grain=7))
    variants = [{"label": f"cfg{c}", "grain": 7.0, "params": {"cfg": c}} for c in (5, 7, 9)]
    project.write(variants, previous="before.png")
    summary = project.run()
    assert {t.number: t.status for t in project.parsed().tasks}[4] == "FAILED"
    doc = (project.root / "docs/sessions/RALPH-001-grain-reduction.md").read_text("utf-8")
    assert re.search(r"\*\*Next lead\*\*: grain unchanged across cfg 5–9 \(ratios 1\.0\d–1\.0\d\): look at the "
                     r"sampler/scheduler", doc)
    assert doc.count("**best**") == 1
    assert crit(verdicts(summary, 6), "Paramètres optimaux").verified is True


def test_next_lead_prefers_a_lint_finding_and_explains_failures_before_any_measure() -> None:
    grain = {"verdict": "not less grain", "ratio": 0.98}
    lint = ["denoise 0.8 on an empty latent from node 10 (EmptyLatentImage): ...", "other"]
    assert next_lead(grain, [], lint, [], None) == (f"fix what the workflow check found first: {lint[0]} "
                                                   "(and 1 more lint finding(s))")
    assert "sweep cfg" in (next_lead(grain, [], [], [], None) or "")
    moved = [
        {"ratio": 0.80, "params": {"cfg": 9}, "against": "p"},
        {"ratio": 0.95, "params": {"cfg": 5}, "against": "p"},
    ]
    assert "extend the sweep" in (next_lead(grain, moved, [], [], None) or "")
    failed = next_lead(None, [], [], ["task 2 (Setup) failed: torch too old"], None)
    assert failed and "task 2 (Setup) failed" in failed
    assert next_lead({"verdict": "less grain"}, [], lint, [], {"ok": True}) is None


class StopHere(Handler):
    """A person presses Ctrl-C while this task runs (after the images were made)."""

    name = "test.stop"

    def run(self, ctx: Context) -> Result:
        signal.raise_signal(signal.SIGINT)
        return Result(summary="not reached")


def test_an_interrupted_run_is_documented_as_incomplete_never_as_not_met(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj")
    config = {"handlers": {"gen": "tests.test_images_evaluate:Generate", "stop": "tests.test_docs_session:StopHere"},
              "tasks": {4: "stop", 6: "docs.session"}}
    (project.root / "ralph.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    project.write([{"label": "img", "grain": 3.0}], session_doc=DOC)
    project.run()
    assert {t.number: t.status for t in project.parsed().tasks}[4] == "IN_PROGRESS", project.output
    added = (project.root / DOC).read_text("utf-8")
    assert re.search(r"\*\*Verdict\*\*: incomplete: task 4 \(.*\) was interrupted; run again to finish", added), added
    assert "**Result**: incomplete." in added and "not a success" not in added


def test_grain_that_fell_without_a_blur_check_is_left_to_a_person() -> None:
    lead = next_lead({"verdict": "blur not checked", "ratio": 0.14}, [], [], [], None)
    assert lead and "ratio 0.14" in lead and "blur is not ruled out" in lead
