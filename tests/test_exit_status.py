"""One exit policy, ordered by meaning (interrupted 130 > bad input 2 > failed 1 > review 3 >
done 0), for a run of one file and of several."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ralph import exits
from tests.test_review import QUICKSTART, ROADMAP, ralph


def test_worst_orders_the_statuses_by_meaning() -> None:
    assert exits.worst() == exits.OK
    assert exits.worst(exits.REVIEW, exits.FAILED) == exits.worst(exits.FAILED, exits.REVIEW) == exits.FAILED
    assert exits.worst(exits.FAILED, exits.USAGE, exits.REVIEW) == exits.USAGE
    assert exits.worst(exits.USAGE, exits.INTERRUPTED) == exits.INTERRUPTED
    assert exits.worst(exits.OK, exits.REVIEW) == exits.REVIEW


def two_files(root: Path) -> tuple[str, str]:
    """A file that fails (its script exits 1) and one that ends waiting for review (the quickstart)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROADMAP / "ralph.yaml", root / "ralph.yaml")
    text = (ROADMAP / QUICKSTART).read_text("utf-8")
    (root / "REVIEW.md").write_text(text, encoding="utf-8")
    (root / "FAILS.md").write_text(text.replace("mkdir -p output/quickstart\n", "exit 1\n"), encoding="utf-8")
    return "FAILS.md", "REVIEW.md"


@pytest.mark.parametrize("order", ["failing first", "review first"])
def test_a_failure_and_a_review_exit_1_in_either_order(tmp_path: Path, order: str) -> None:
    failing, review = two_files(tmp_path)
    files = [failing, review] if order == "failing first" else [review, failing]
    done = ralph(tmp_path, "run", *files)
    assert done.returncode == 1, done.stdout + done.stderr


def test_a_bad_file_among_several_exits_2_and_the_others_still_run(tmp_path: Path) -> None:
    failing, review = two_files(tmp_path)
    (tmp_path / "BAD.md").write_text("# RALPH-TASK: bad\n\n## Tasks\n\n### 1. X\n**Status**: WHATEVER\n",
                                     encoding="utf-8")
    done = ralph(tmp_path, "run", "BAD.md", failing, review)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("ralph: BAD.md:") and len(done.stderr.strip().splitlines()) == 1
    assert "REVIEW.md" in done.stdout and "open for review" in done.stdout, "the other files ran"
