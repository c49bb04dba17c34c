"""Paths as ralph writes them for people.

Task files, session documents and run summaries are committed and shared: a path in them must
stay true when the folder is moved or cloned elsewhere, and must not carry anyone's home folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def display_path(path: str | os.PathLike[str], folder: Path) -> str:
    """``path`` as written for people: relative to ``folder`` (the task file's) when inside it,
    ``~/…`` when under the home folder, else as given (a relative path is already relative to
    ``folder``; any other, such as /tmp/x or a pod's /workspace, reads the same everywhere)."""
    if not Path(path).is_absolute():
        return os.fspath(path)
    given = Path(os.path.normpath(path))  # what was named, not where links lead
    inside = _under(given, folder)
    if inside is not None:
        return inside.as_posix()
    home = _home()
    at_home = _under(given, home) if home is not None else None
    if at_home is not None:
        return "~" if at_home == Path(".") else f"~/{at_home.as_posix()}"
    return os.fspath(path)


def _under(path: Path, root: Path) -> Path | None:
    """``path`` relative to ``root``, also when ``path`` was resolved and ``root`` is reached
    through a symbolic link (the task folder ralph resolved, a home under /var on macOS)."""
    for base in (root, root.resolve()):
        if path.is_relative_to(base):
            return path.relative_to(base)
    return None


def _home() -> Path | None:
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no password entry
        return None
    return home if home != Path(home.anchor) else None  # HOME=/ would make every path "~/…"


def run_folder(base: Path, task_file: Path, run_id: str) -> Path:
    """Where one run of one task file writes its images and pictures: ``base/<file stem>/<run id>``,
    so that a later run, or another experiment writing to the same ``base``, never overwrites them."""
    return base / task_file.stem / run_id
