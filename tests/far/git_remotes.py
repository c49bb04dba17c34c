"""Git repositories standing in for GitHub: ComfyUI with release tags, a custom node with commits.

Real repositories made with the real ``git``, reached by the machine over ``file://`` the way
it reaches GitHub over https (git serves any commit by its full id over both). Their
requirements.txt name nothing to download, so installing them needs no network.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=far", "-c", "user.email=far@example.org",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(folder: Path, files: dict[str, str], message: str) -> str:
    """Write ``files`` into ``folder`` (a repository, made if needed), commit them; the commit id."""
    if not (folder / ".git").exists():
        folder.mkdir(parents=True, exist_ok=True)
        git(folder, "init", "-q", "-b", "master")
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", message)
    return git(folder, "rev-parse", "HEAD")


@dataclass
class Remotes:
    comfyui: Path
    releases: dict[str, str]  # tag → commit
    tip: str  # the default branch's newest commit: newer than any release, never installed by a pin
    node: Path
    node_commits: list[str]  # oldest first

    @property
    def comfyui_url(self) -> str:
        return self.comfyui.as_uri()

    @property
    def node_url(self) -> str:
        return self.node.as_uri()


def make_remotes(root: Path, main_py: str) -> Remotes:
    """ComfyUI tagged v0.3.75 (lightweight tag) and v0.45.2 (annotated), then an untagged commit on
    master; each version's main.py is ``main_py`` with ``{version}`` filled in. And
    ComfyUI_InstantID with two commits, its requirements.txt naming a package ralph's Python has."""
    comfyui = root / "ComfyUI"
    releases = {}
    for version in ("0.3.75", "0.45.2", "0.46.0-dev"):
        sha = commit(comfyui, {"main.py": main_py.replace("{version}", version),
                               "requirements.txt": "# nothing to download in the tests\n"}, f"ComfyUI {version}")
        if not version.endswith("-dev"):
            releases[f"v{version}"] = sha
            git(comfyui, "tag", *(["-a", "-m", f"v{version}"] if version == "0.45.2" else []), f"v{version}")
    node = root / "ComfyUI_InstantID"
    first = commit(node, {"__init__.py": "NODE_CLASS_MAPPINGS = {}  # first\n", "requirements.txt": "PyYAML\n"},
                   "first")
    second = commit(node, {"__init__.py": "NODE_CLASS_MAPPINGS = {}  # second\n"}, "second")
    return Remotes(comfyui, releases, sha, node, [first, second])
