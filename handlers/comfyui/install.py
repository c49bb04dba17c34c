"""Step 1 of comfyui.setup: ComfyUI at ``<workspace>/ComfyUI``, at its pinned release.

By default ralph fetches the pinned tag (or commit) of ComfyUI's repository and installs its
requirements, in a part folder renamed when complete (``main.py`` there means present). When the
pin changes, a checkout ralph installed moves to the new pin. Anything else already there (a
pre-baked image) is left alone: the results say which version was found against the pin.
``install_command`` replaces all of this, and then nothing is pinned.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ralph.handlers.comfyui.checkout import Revision, check_out, check_pin
from ralph.handlers.comfyui.workspace import Layout, Markers, sh
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, Machine

from ralph.handler import TaskFailed

DEFAULT_VERSION = "v0.45.2"  # 2026-11-12
DEFAULT_REPOSITORY = "https://github.com/Comfy-Org/ComfyUI.git"


@dataclass(frozen=True)
class Source:
    """Where ComfyUI comes from: ``repository`` at the tag or commit ``version``, unless ``command``
    (the user's install_command) installs it instead."""

    repository: str
    version: str
    command: str | None = None

    @property
    def pin(self) -> str | None:
        """The version asked for, or None when install_command decides."""
        return None if self.command else self.version


def source(params: dict[str, Any]) -> Source:
    """The install's parameters, checked (``ValueError`` names the parameter)."""
    if params["install_command"] is None:
        check_pin(params["comfyui_version"], "comfyui_version")
        if not params["comfyui_repository"] or params["comfyui_repository"].startswith("-"):
            raise ValueError(f"comfyui_repository: {params['comfyui_repository']!r} is not a repository URL")
    return Source(params["comfyui_repository"], params["comfyui_version"], params["install_command"])


def install_comfyui(provider: Machine, layout: Layout, markers: Markers, src: Source, python: str,
                    timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    what = {"command": src.command} if src.command else {"repository": src.repository, "version": src.version}
    params = {"dir": layout.comfyui, "python": python, **what}
    present = provider.exists(posixpath.join(layout.comfyui, "main.py"))
    if present and (done := markers.done("install", params)) is not None:
        return {**done, "skipped": True}
    earlier = (markers.known.get("install") or {}).get("outcome") or {}
    if not present:
        sh(provider, 'mkdir -p -- "$w"', w=layout.workspace)
        if src.command:
            _run_command(provider, layout, src.command, python, timeout, log)
        else:
            log(f"installing ComfyUI {src.version} from {src.repository} into {layout.comfyui}")
            part = layout.comfyui + ".ralph-part"
            sh(provider, 'rm -rf -- "$p"', p=part)
            check_out(provider, part, src.repository, src.version, timeout, "ComfyUI")
            _requirements(provider, part, python, timeout)
            sh(provider, 'mv -- "$p" "$d"', p=part, d=layout.comfyui)
        outcome = {"installed": True, "found": False}
    elif src.pin and earlier.get("installed") and provider.exists(posixpath.join(layout.comfyui, ".git")):
        log(f"moving ComfyUI at {layout.comfyui} to {src.version} (the pin changed)")
        check_out(provider, layout.comfyui, src.repository, src.version, timeout, "ComfyUI")
        _requirements(provider, layout.comfyui, python, timeout)
        outcome = {"installed": True, "found": False}
    else:
        outcome = {"installed": False, "found": True}
        log(f"ComfyUI already present at {layout.comfyui}")
    markers.write("install", params, outcome)
    return {**outcome, "skipped": False}


def pin_warning(src: Source, install: dict[str, Any], revision: Revision, version: str | None) -> str:
    """Why the ComfyUI that runs is not known to be the pin ("" when it is, or nothing was pinned)."""
    if src.pin is None or install.get("installed"):
        return ""
    if src.pin in (revision.commit, revision.tag) or (version and version == src.pin.removeprefix("v")):
        return ""
    found = ", ".join(x for x in (version, revision.tag, f"commit {revision.commit[:12]}" if revision.commit
                                  else "not a git checkout") if x)
    return (f"ComfyUI was already there, not installed by ralph: found {found}, pinned {src.pin}; "
            "the pin was not applied (remove the folder to install the pin)")


def _run_command(provider: Machine, layout: Layout, command: str, python: str, timeout: float,
                 log: Callable[[str], None]) -> None:
    quoted = {k: remote_shell.quote(v) for k, v in
              {"dir": layout.comfyui, "python": python, "workspace": layout.workspace}.items()}
    try:
        line = command.format(**quoted)
    except (KeyError, IndexError, ValueError) as e:
        raise TaskFailed(f"install_command: unknown placeholder {e} (use {{dir}}, {{python}}, {{workspace}}; "
                         "double literal braces)") from None
    log(f"installing ComfyUI into {layout.comfyui} with install_command")
    try:
        provider.run(line, timeout=timeout)
    except CommandFailed as e:
        raise TaskFailed(f"installing ComfyUI failed: {e}") from None
    if not provider.exists(posixpath.join(layout.comfyui, "main.py")):
        raise TaskFailed(f"the install command ran but {layout.comfyui}/main.py is missing: {line}")


def _requirements(provider: Machine, folder: str, python: str, timeout: float) -> None:
    try:
        sh(provider, '[ ! -f "$d/requirements.txt" ] || "$py" -m pip install -q -r "$d/requirements.txt"',
           timeout=timeout, d=folder, py=python)
    except CommandFailed as e:
        reason = (e.result.stderr or e.result.stdout).strip()[-1500:]
        raise TaskFailed(f"installing ComfyUI's requirements.txt failed: {reason}") from None
