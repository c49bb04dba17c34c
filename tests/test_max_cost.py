"""``max_cost_usd``: a run whose rented machine would cost more stops its work as Ctrl-C does, runs
its clean-up (the machine is given back), writes why, and exits 1."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.engine.project import Project, make_project, task

LONG_WORK_S = 60  # the work the limit must cut short: the test would last this long if it did not


def costly_project(root: Path, config: str = "") -> Project:
    """A machine at $3,600/h ($1 a second), long work on it, more work, and the clean-up."""
    return make_project(root, task(1, "Rent a machine", handler="rent", params={"cost_per_hr": 3600},
                                   criteria=("Machine rented",)),
                        task(2, "Long work", params={"uses": "machine", "pause": LONG_WORK_S}),
                        task(3, "More work"),
                        task(4, "Give it back", handler="release", params={"resource": "machine"},
                             criteria=("Machine released",)), config=config)


def test_past_the_limit_the_work_stops_the_clean_up_runs_and_the_reason_is_written(tmp_path: Path) -> None:
    project = costly_project(tmp_path)
    started = time.monotonic()
    summary = project.run(max_cost_usd=0.5, cost_check_s=0.05)
    assert time.monotonic() - started < LONG_WORK_S / 2, "the long work was cut short"
    assert summary.exit_code == 1
    assert project.statuses() == {1: "DONE", 2: "FAILED", 3: "SKIPPED", 4: "DONE"}
    text = project.file.read_text()
    results_2 = text[text.index("### 2. Long work"):text.index("### 3. More work")]
    assert "- Error: stopped: the run has cost $" in results_2 and "would pass max_cost_usd $0.50" in results_2
    assert "- Error: skipped: the run has cost $" in text[text.index("### 3. More work"):]
    machine = json.loads((tmp_path / ".ralph" / project.file.stem / "state.json").read_text())["resources"]["machine"]
    assert machine["released"] and f"release {machine['value']['token']}" in project.ledger_lines(), \
        "the clean-up gave the machine back"
    assert "would pass max_cost_usd $0.50: work stopped, clean-up tasks still run" in project.output
    assert [e["event"] for e in project.events()].count("cost_limit") == 1


def test_the_flag_overrides_ralph_yaml_and_the_cli_exits_1_not_130(tmp_path: Path) -> None:
    project = costly_project(tmp_path, config="max_cost_usd: 1000\n")
    done = project.cli("run", "--max-cost-usd", "0.5", project.file.name, timeout=LONG_WORK_S / 2)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "would pass max_cost_usd $0.50" in done.stdout
    assert project.statuses() == {1: "DONE", 2: "FAILED", 3: "SKIPPED", 4: "DONE"}


def test_under_the_limit_nothing_is_stopped(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Rent a machine", handler="rent", params={"cost_per_hr": 0.36},
                                          criteria=("Machine rented",)),
                           task(2, "Short work", params={"uses": "machine"}),
                           task(3, "Give it back", handler="release", params={"resource": "machine"},
                                criteria=("Machine released",)), config="max_cost_usd: 5\n")
    summary = project.run(cost_check_s=0.05)
    assert summary.exit_code == 0
    assert project.statuses() == {1: "DONE", 2: "DONE", 3: "DONE"}
    assert "cost_limit" not in [e["event"] for e in project.events()]


def test_a_bad_limit_in_ralph_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    project = make_project(tmp_path, task(1, "Plain work"), config="max_cost_usd: cheap\n")
    before = project.file.read_bytes()
    done = project.cli("run", project.file.name)
    assert done.returncode == 2
    line = (tmp_path / "ralph.yaml").read_text().splitlines().index("max_cost_usd: cheap") + 1
    assert done.stderr.strip() == (f"ralph: ralph.yaml:{line}: max_cost_usd: expected a positive "
                                   "number of US dollars, not 'cheap'")
    assert project.file.read_bytes() == before
