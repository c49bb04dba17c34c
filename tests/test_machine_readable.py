"""``--json`` on run, status and check, ``ralph status DIR``, and ``-q``/``-v``: as a script runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ralph.state import RunLock, state_dir_for
from tests.test_review import QUICKSTART, ROADMAP, quickstart, ralph


def test_run_json_gives_outcomes_evidence_and_what_is_open_for_review(tmp_path: Path) -> None:
    quickstart(tmp_path)
    done = ralph(tmp_path, "run", "--json", QUICKSTART)
    assert done.returncode == 3
    report = json.loads(done.stdout)  # stdout is the JSON alone: the plan and the table went to stderr
    assert report["exit_code"] == 3 and "ralph run" in done.stderr
    [run] = report["runs"]
    assert [(o["task"], o["status"]) for o in run["outcomes"]] == [(1, "DONE"), (2, "NEEDS_REVIEW")]
    made = run["outcomes"][0]["criteria"][1]
    assert (made["criterion"], made["verified"], made["by"]) == ("`output/quickstart/hello.txt` exists", True, "ralph")
    assert made["detail"].startswith("output/quickstart/hello.txt exists (")
    assert run["outcomes"][0]["seconds"] > 0 and run["cost_usd"] == 0
    [item] = run["review"]
    assert item["task"] == 2 and item["criterion"] == "The greeting reads well"
    assert item["evidence"].startswith("needs a person's review")


def test_status_json_gives_times_cost_and_lock_state(tmp_path: Path) -> None:
    file = quickstart(tmp_path)
    ralph(tmp_path, "run", QUICKSTART)
    report = json.loads(ralph(tmp_path, "status", "--json", QUICKSTART).stdout)
    first = report["tasks"][0]
    assert first["status"] == "DONE" and first["attempts"] == 1 and first["seconds"] > 0
    assert first["started"].endswith("UTC") and first["finished"].endswith("UTC")
    assert report["cost_usd"] == 0 and report["locked"] is False and report["lock_holder"] is None
    assert [i["criterion"] for i in report["review"]] == ["The greeting reads well"]
    lock = RunLock(state_dir_for(file), file)
    lock.acquire()
    try:
        held = json.loads(ralph(tmp_path, "status", "--json", QUICKSTART).stdout)
    finally:
        lock.release()
    assert held["locked"] is True and isinstance(held["lock_holder"]["pid"], int)


def test_status_of_a_folder_summarises_every_task_file_below_it(tmp_path: Path) -> None:
    quickstart(tmp_path / "done")
    ralph(tmp_path / "done", "run", QUICKSTART)
    (tmp_path / "later").mkdir()
    shutil.copy(ROADMAP / QUICKSTART, tmp_path / "later" / "RALPH-009-later.md")
    broken = "# RALPH-TASK: x\n\n## Tasks\n\n### 1. X\n**Status**: NOPE\n"
    (tmp_path / "later" / "RALPH-010-broken.md").write_text(broken)
    report = json.loads(ralph(tmp_path, "status", "--json", ".").stdout)
    files = {Path(f["file"]).name: f for f in report["files"]}
    assert set(files) == {QUICKSTART, "RALPH-009-later.md", "RALPH-010-broken.md"}
    assert [t["status"] for t in files[QUICKSTART]["tasks"]] == ["DONE", "NEEDS_REVIEW"]
    assert [t["status"] for t in files["RALPH-009-later.md"]["tasks"]] == ["PENDING", "PENDING"]
    assert "NOPE" in files["RALPH-010-broken.md"]["error"]
    table = ralph(tmp_path, "status", ".")
    assert table.returncode == 0 and "1 DONE, 1 NEEDS_REVIEW" in table.stdout and "2 PENDING" in table.stdout


def test_check_json_lists_each_files_problems(tmp_path: Path) -> None:
    quickstart(tmp_path)
    (tmp_path / "BAD.md").write_text(
        (ROADMAP / QUICKSTART).read_text().replace("**Handler**: manual", "**Handler**: nonesuch"))
    done = ralph(tmp_path, "check", "--json", QUICKSTART, "BAD.md")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    good, bad = report["files"]
    assert good == {"file": QUICKSTART, "ok": True, "tasks": 2, "problems": []}
    assert not bad["ok"] and bad["problems"][0]["severity"] == "error" and "nonesuch" in bad["problems"][0]["message"]


def test_quiet_leaves_the_summary_and_the_review_verbose_adds_the_evidence(tmp_path: Path) -> None:
    quickstart(tmp_path / "quiet")
    quiet = ralph(tmp_path / "quiet", "run", "-q", QUICKSTART)
    assert quiet.returncode == 3
    assert "▶ task" not in quiet.stdout and "would run" not in quiet.stdout
    assert "running the bash block" not in quiet.stdout
    assert "ralph run" in quiet.stdout and "open for review (1)" in quiet.stdout
    quickstart(tmp_path / "verbose")
    verbose = ralph(tmp_path / "verbose", "run", "-v", QUICKSTART)
    assert "    ✔ Script runs without error: the script exited 0" in verbose.stdout
    assert "    👁 The greeting reads well: needs a person's review" in verbose.stdout
