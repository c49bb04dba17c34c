"""Step 2 of comfyui.setup: the machine's torch, read with its ``python`` and compared with the
lowest version accepted; an upgrade command (if given) runs once when it is lower."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ralph.handlers.comfyui.workspace import Markers
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, Machine

from ralph.handler import TaskFailed


def version_key(version: str) -> tuple[tuple[int, ...], int]:
    """Comparable key: ``2.14.1+cu124`` → ((2, 14, 1), 1); pre-releases (a, b, rc, dev) sort
    before their release; local labels (+cu124) and post-releases do not lower it."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)(.*)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    release = tuple(int(p) for p in m.group(1).split("."))
    release += (0,) * (3 - len(release))
    suffix = m.group(2).split("+", 1)[0].lower().lstrip(".-_")
    pre = bool(re.match(r"(a|alpha|b|beta|c|rc|pre|preview|dev)\d*", suffix))
    return release, 0 if pre else 1


def version_at_least(version: str, minimum: str) -> bool:
    return version_key(version) >= version_key(minimum)


_TORCH_PROBE = "import torch; print(torch.__version__)"


def read_torch(provider: Machine, python: str) -> tuple[str | None, str]:
    """(torch version or None, why not) as ``python`` on the machine sees it."""
    result = provider.run(f"{remote_shell.join(python, '-c', _TORCH_PROBE)} 2>&1", check=False, timeout=300)
    lines = result.stdout.strip().splitlines()
    if result.ok and lines:
        return lines[-1].strip(), ""
    return None, (lines[-1] if lines else f"exit {result.exit_code}")


def check_torch(provider: Machine, markers: Markers, python: str, minimum: str, upgrade: str | None,
                log: Callable[[str], None]) -> dict[str, Any]:
    params = {"python": python, "min_torch": minimum, "upgrade": upgrade}
    if (done := markers.done("torch", params)) is not None:
        return {**done, "skipped": True}
    version, why = read_torch(provider, python)
    upgraded = False
    if upgrade and (version is None or not version_at_least(version, minimum)):
        log(f"torch {version or 'missing'} < {minimum}: running torch_upgrade_command")
        try:
            provider.run(upgrade, timeout=1800)
        except CommandFailed as e:
            raise TaskFailed(f"torch_upgrade_command failed: {e}") from None
        version, why = read_torch(provider, python)
        upgraded = True
    ok = version is not None and version_at_least(version, minimum)
    outcome = {"version": version, "error": why, "python": python, "min": minimum, "ok": ok, "upgraded": upgraded}
    if ok:
        markers.write("torch", params, outcome)
    return {**outcome, "skipped": False}
