"""Step 1 of comfyui.setup: ComfyUI at ``<workspace>/ComfyUI``.

``main.py`` there means present: a pre-baked image is left alone; else ``install_command`` runs
(default: git clone + pip install -r), into a part folder renamed when complete.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from ralph.handlers.comfyui.workspace import Layout, Markers, sh
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, Machine

from ralph.handler import TaskFailed

DEFAULT_INSTALL = ("rm -rf {dir}.ralph-part && "
                   "git clone --depth 1 https://github.com/comfyanonymous/ComfyUI.git {dir}.ralph-part && "
                   "{python} -m pip install -q -r {dir}.ralph-part/requirements.txt && mv {dir}.ralph-part {dir}")


def install_comfyui(provider: Machine, layout: Layout, markers: Markers, command: str, python: str,
                    timeout: float, log: Callable[[str], None]) -> dict[str, Any]:
    params = {"dir": layout.comfyui, "command": command, "python": python}
    present = provider.exists(posixpath.join(layout.comfyui, "main.py"))
    if present and (done := markers.done("install", params)) is not None:
        return {**done, "skipped": True}
    if present:
        outcome = {"installed": False, "found": True}
        log(f"ComfyUI already present at {layout.comfyui}")
    else:
        quoted = {k: remote_shell.quote(v) for k, v in
                  {"dir": layout.comfyui, "python": python, "workspace": layout.workspace}.items()}
        try:
            line = command.format(**quoted)
        except (KeyError, IndexError, ValueError) as e:
            raise TaskFailed(f"install_command: unknown placeholder {e} (use {{dir}}, {{python}}, {{workspace}}; "
                             "double literal braces)") from None
        log(f"installing ComfyUI into {layout.comfyui}")
        sh(provider, 'mkdir -p -- "$w"', w=layout.workspace)
        try:
            provider.run(line, timeout=timeout)
        except CommandFailed as e:
            raise TaskFailed(f"installing ComfyUI failed: {e}") from None
        if not provider.exists(posixpath.join(layout.comfyui, "main.py")):
            raise TaskFailed(f"the install command ran but {layout.comfyui}/main.py is missing: {line}")
        outcome = {"installed": True, "found": False}
    markers.write("install", params, outcome)
    return {**outcome, "skipped": False}

