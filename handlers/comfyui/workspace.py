"""The workspace comfyui.setup works in on a machine: where ComfyUI and the model cache go, and
the steps' "done" markers (``<workspace>/.ralph/setup/<step>.json``)."""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import Machine

if TYPE_CHECKING:
    from ralph.handlers.comfyui.files import FileSpec


def sh(provider: Machine, script: str, *, timeout: float | None = 120, check: bool = True,
       **values: str | int) -> str:
    """Run ``script`` with ``values`` as quoted shell variables (names never reach the shell raw)."""
    return provider.run(remote_shell.assign(**values) + script, timeout=timeout, check=check).stdout


def digest(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class Markers:
    """The steps' "done" markers in one folder on the machine, read in one round trip."""

    def __init__(self, provider: Machine, folder: str):
        self.provider, self.folder = provider, folder
        out = sh(provider, 'for m in "$d"/*.json; do [ -f "$m" ] && { printf "%s\\t" "${m##*/}"; '
                            'tr -d "\\n" < "$m"; echo; }; done; true', d=folder)
        self.known: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            name, _, body = line.partition("\t")
            try:
                self.known[name.removesuffix(".json")] = json.loads(body)
            except ValueError:
                continue  # a torn marker counts as absent: the step reruns

    def done(self, step: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """What the step recorded, if it ran with these very parameters."""
        marker = self.known.get(step)
        return marker.get("outcome") if marker and marker.get("digest") == digest(params) else None

    def write(self, step: str, params: dict[str, Any], outcome: dict[str, Any]) -> None:
        marker = {"step": step, "digest": digest(params), "params": params, "outcome": outcome,
                  "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        sh(self.provider,
           'mkdir -p -- "$d" && printf "%s\\n" "$body" > "$d/.$s.tmp" && mv -f -- "$d/.$s.tmp" "$d/$s.json"',
            d=self.folder, s=step, body=json.dumps(marker, sort_keys=True))
        self.known[step] = marker


@dataclass
class Layout:
    workspace: str

    @property
    def comfyui(self) -> str:
        return posixpath.join(self.workspace, "ComfyUI")

    @property
    def state(self) -> str:
        return posixpath.join(self.workspace, ".ralph")

    @property
    def markers(self) -> str:
        return posixpath.join(self.state, "setup")

    def dest(self, spec: FileSpec) -> str:
        return posixpath.join(self.comfyui, spec.folder, spec.name)

    def blob(self, sha256: str) -> str:
        """The model cache: every uploaded file also lives here under its content hash, so a
        workspace on a network volume serves the next experiment's files, whatever their names."""
        return posixpath.join(self.state, "blobs", sha256)
