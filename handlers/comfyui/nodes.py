"""Step 2 of comfyui.setup: custom nodes at pinned commits, then the Python packages they need.

Each node of ``custom_nodes`` (``{url, commit, name?, requirements?}``) goes into
``ComfyUI/custom_nodes/<name>`` at exactly its commit (a fresh one through a part folder renamed
when complete; a checkout already there moves to a changed commit). Then one ``pip install``
takes each node's requirements.txt and the pinned ``pip`` requirements together, so the pins win.
Each node and the packages leave their own marker: a changed commit redoes that node and the
packages, nothing else.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ralph.handlers.comfyui.checkout import check_commit, check_out
from ralph.handlers.comfyui.workspace import Layout, Markers, sh
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, Machine

from ralph.handler import TaskFailed

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# name==version, with optional extras and an environment marker: pip installs exactly that version.
_PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]*\])?==[A-Za-z0-9.+!_-]+(\s*;.+)?")
_KEYS = {"url", "commit", "name", "requirements"}


@dataclass(frozen=True)
class CustomNode:
    url: str
    commit: str
    name: str  # its folder under custom_nodes/
    requirements: bool = True  # install its requirements.txt

    def folder(self, layout: Layout) -> str:
        return posixpath.join(layout.comfyui, "custom_nodes", self.name)


def custom_nodes(params: dict[str, Any]) -> list[CustomNode]:
    """``custom_nodes``, checked (``ValueError`` names the entry and what is wrong)."""
    nodes: list[CustomNode] = []
    for i, entry in enumerate(params["custom_nodes"]):
        where = f"custom_nodes[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or "commit" not in entry:
            raise ValueError(f"{where}: expected {{url: …, commit: <40-hex commit>}}")
        if unknown := sorted(set(entry) - _KEYS):
            raise ValueError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
        url = entry["url"]
        if not url or url.startswith("-"):
            raise ValueError(f"{where}.url: {url!r} is not a repository URL")
        check_commit(str(entry["commit"]), f"{where}.commit")
        name = str(entry.get("name") or posixpath.basename(url.rstrip("/")).removesuffix(".git"))
        if not _NAME.fullmatch(name):
            raise ValueError(f"{where}: {name!r} is not a folder name (give name:)")
        if name in {n.name for n in nodes}:
            raise ValueError(f"{where}: custom_nodes/{name} is given twice")
        if not isinstance(requirements := entry.get("requirements", True), bool):
            raise ValueError(f"{where}.requirements: expected true or false, not {requirements!r}")
        nodes.append(CustomNode(url, str(entry["commit"]), name, requirements))
    return nodes


def pip_pins(params: dict[str, Any]) -> list[str]:
    """``pip``, checked: each requirement pinned to one version (``insightface==0.7.3``)."""
    for i, requirement in enumerate(params["pip"]):
        if not isinstance(requirement, str) or not _PINNED.fullmatch(requirement.strip()):
            raise ValueError(f"pip[{i}]: {requirement!r} is not pinned: write name==version (e.g. insightface==0.7.3)")
    return [r.strip() for r in params["pip"]]


def install_nodes(provider: Machine, layout: Layout, markers: Markers, nodes: list[CustomNode], pins: list[str],
                  python: str, timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Every node at its commit and the packages installed: what each step did."""
    done = [_node(provider, layout, markers, node, timeout, log) for node in nodes]
    wanted = [n for n in nodes if n.requirements]
    params = {"python": python, "pip": pins, "requirements": {n.name: n.commit for n in wanted}}
    if not wanted and not pins:  # nothing to install, nothing to mark
        return {"custom_nodes": done, "packages": {"requirements": [], "pip": [], "skipped": True}}
    if (packages := markers.done("packages", params)) is not None:
        return {"custom_nodes": done, "packages": {**packages, "skipped": True}}
    files = [f for n in wanted if provider.exists(f := posixpath.join(n.folder(layout), "requirements.txt"))]
    if files or pins:  # nodes without a requirements.txt and no pins: nothing to run
        log(f"pip install {' '.join(['-r ' + f for f in files] + pins)}")
        argv = [python, "-m", "pip", "install", "-q", *[a for f in files for a in ("-r", f)], *pins]
        try:
            provider.run(remote_shell.join(*argv), timeout=timeout)
        except CommandFailed as e:
            reason = (e.result.stderr or e.result.stdout).strip()[-1500:]
            raise TaskFailed(f"installing the custom nodes' packages failed: {reason}") from None
    outcome = {"requirements": files, "pip": pins}
    markers.write("packages", params, outcome)
    return {"custom_nodes": done, "packages": {**outcome, "skipped": False}}


def _node(provider: Machine, layout: Layout, markers: Markers, node: CustomNode, timeout: float,
          log: Callable[[str], None]) -> dict[str, Any]:
    folder = node.folder(layout)
    params = {"dir": folder, "url": node.url, "commit": node.commit}
    step = f"node-{node.name}"
    record = {"name": node.name, "url": node.url, "pinned": node.commit}
    is_checkout = provider.exists(posixpath.join(folder, ".git"))
    if is_checkout and markers.done(step, params) is not None:
        return {**record, "skipped": True}
    if is_checkout:
        log(f"moving custom_nodes/{node.name} to {node.commit[:12]}")
        check_out(provider, folder, node.url, node.commit, timeout, f"custom node {node.name}")
    elif provider.exists(folder):
        raise TaskFailed(f"{folder} is there but is not a git checkout: ralph cannot put it at commit "
                         f"{node.commit}; remove it, or leave {node.name} out of custom_nodes")
    else:
        log(f"installing custom_nodes/{node.name} at {node.commit[:12]} from {node.url}")
        # Built outside custom_nodes/, where ComfyUI would load a half-made folder left by a crash.
        part = posixpath.join(layout.state, "part", node.name)
        sh(provider, 'rm -rf -- "$p"', p=part)
        check_out(provider, part, node.url, node.commit, timeout, f"custom node {node.name}")
        sh(provider, 'mkdir -p -- "${d%/*}" && mv -- "$p" "$d"', p=part, d=folder)
    markers.write(step, params, {"commit": node.commit})
    return {**record, "skipped": False}
