"""``ralph status`` and ``ralph check`` as a person runs them: a real subprocess on the example."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.variants import EXAMPLE, EXAMPLE_CRITERIA

NETWORK = ("httpx", "runpod", "paramiko", "fabric", "requests", "aiohttp", "websockets")
BOX = re.compile(r"^[-*+][ \t]+\[(?P<mark>[ xX])\][ \t]+(?P<text>.*)$")


def ralph(*args: str, cwd: Path, python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "ralph", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The example alone in a directory (no ralph.yaml around it)."""
    path = tmp_path / EXAMPLE.name
    shutil.copyfile(EXAMPLE, path)
    return path


def test_status_json_reports_the_example(example: Path) -> None:
    before = example.read_bytes()
    done = ralph("status", "--json", str(example), cwd=example.parent)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    lines = before.decode("utf-8").split("\n")

    assert report["title"] == "Elena Grain Reduction - Refiner Pass"
    tasks = report["tasks"]
    assert [t["number"] for t in tasks] == [1, 2, 3, 4, 5, 6]
    assert [t["priority"] for t in tasks] == ["HIGH"] * 5 + ["MEDIUM"]
    assert {t["status"] for t in tasks} == {"PENDING"}
    assert tuple(len(t["criteria"]) for t in tasks) == EXAMPLE_CRITERIA and sum(EXAMPLE_CRITERIA) == 19
    for task in tasks:
        assert re.fullmatch(rf"### {task['number']}\. {re.escape(task['title'])}", lines[task["line"] - 1])
    criteria = [c for t in tasks for c in t["criteria"]] + report["success_criteria"]
    for criterion in criteria:
        found = BOX.match(lines[criterion["line"] - 1])
        assert found and found["text"] == criterion["text"] and not criterion["checked"]
    assert len(report["success_criteria"]) == 3
    assert [e["text"] for e in report["exit_conditions"]] == [
        lines[e["line"] - 1].removeprefix("- ") for e in report["exit_conditions"]
    ]
    assert len(report["exit_conditions"]) == 4
    assert example.read_bytes() == before


def test_status_table_and_parse_errors(example: Path) -> None:
    before = example.read_bytes()
    table = ralph("status", str(example), cwd=example.parent)
    assert table.returncode == 0, table.stderr
    assert "Terminer pod" in table.stdout and "0/7" in table.stdout
    broken = example.parent / "broken.md"
    broken.write_bytes(before.replace(b"**Status**: PENDING", b"**Status**: WAITING", 1))
    failed = ralph("status", "--json", str(broken), cwd=example.parent)
    assert failed.returncode == 2 and failed.stdout == ""
    assert f"{broken}:23: unknown status 'WAITING'" in failed.stderr
    assert example.read_bytes() == before


# The example's tasks mapped to the real handlers, so ``check`` loads and validates them.
CONFIG = """\
tasks:
  1: {handler: runpod.create}
  2: {handler: comfyui.setup}
  3: {handler: comfyui.run}
  4: {handler: images.evaluate}
  5: {handler: runpod.terminate}
  6: {handler: docs.session}
"""
@pytest.mark.parametrize(
    ("command", "configured"),
    [
        (("status", "--json"), False),
        (("status",), False),
        (("check",), False),
        (("status", "--json"), True),
        (("check",), True),
    ],
)
def test_status_and_check_import_no_network_library(
    command: tuple[str, ...], configured: bool, example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "not-a-key")  # else check stops at the missing key (exit 2)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", "http://127.0.0.1:9")  # nothing answers: the catalog is a warning
    if configured:
        (example.parent / "ralph.yaml").write_text(CONFIG, encoding="utf-8")
    done = ralph(*command, str(example), cwd=example.parent, python_flags=("-X", "importtime"))
    assert done.returncode in (0, 2), done.stderr[-2000:]  # check: 2 when a task has no handler
    imported = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            imported.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "ralph" in imported and "mistune" in imported, "importtime output was read"
    # `check` reads RunPod's GPU catalog (httpx) to name unknown GPU types, and only then.
    allowed = {"httpx"} if command == ("check",) and configured else set()
    assert not imported & (set(NETWORK) - allowed), sorted(imported & set(NETWORK))
