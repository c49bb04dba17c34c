"""Paths as ralph writes them for people: relative to the task file's folder, ~/… at home."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ralph.paths import display_path
from tests.repo_files import REPO


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home" / "ada"
    folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(folder))
    return folder


def test_inside_the_folder_relative_at_home_with_a_tilde_elsewhere_as_given(home: Path, tmp_path: Path) -> None:
    folder = home / "experiments" / "roadmap"
    assert display_path(folder / "output" / "a b.png", folder) == "output/a b.png"
    assert display_path(folder, folder) == "."
    assert display_path(home / "models" / "x.safetensors", folder) == "~/models/x.safetensors"
    assert display_path(home, folder) == "~"
    assert display_path("/workspace/ComfyUI", folder) == "/workspace/ComfyUI"  # a pod's path reads the same anywhere
    assert display_path(tmp_path / "elsewhere", folder) == str(tmp_path / "elsewhere")
    assert display_path("output/x.png", folder) == "output/x.png"  # already relative to the folder
    assert display_path("python3", folder) == "python3"


def test_a_folder_reached_through_a_link_is_recognised_and_a_linked_path_shown_as_named(
        home: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "output").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert display_path(real / "output" / "x", link) == "output/x"  # a resolved path in a linked folder
    python = tmp_path / "venv-python"
    python.symlink_to(home / "pythons" / "python3.11")
    assert display_path(python, tmp_path / "project") == str(python), "not the link's target under ~"


def test_a_home_at_the_root_is_not_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", "/")
    assert display_path(tmp_path / "x", tmp_path / "folder") == str(tmp_path / "x")


def test_the_quickstart_writes_no_absolute_path(home: Path) -> None:
    """The README's quickstart, in a checkout under the home folder: the task file ralph
    wrote names no absolute path, so the folder can move, be cloned and be shared."""
    first = home / "clone" / "roadmap" / "ralph"
    first.mkdir(parents=True)
    shutil.copy(REPO / "roadmap" / "ralph" / "RALPH-000-quickstart.md", first)
    done = subprocess.run([sys.executable, "-m", "ralph", "run", "roadmap/ralph/RALPH-000-quickstart.md"],
                          cwd=first.parent.parent, capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 3, done.stdout + done.stderr
    text = (first / "RALPH-000-quickstart.md").read_text(encoding="utf-8")
    assert "output/quickstart/hello.txt exists (" in text
    assert str(home) not in text and not re.search(r"(^|[\s(`])/(tmp|home|root|Users|work)\b", text, re.M), text
    assert str(home) not in done.stdout  # the terminal too: `(log: .ralph/…/task-1.log)`
