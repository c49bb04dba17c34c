"""What ralph measured on this machine and remembers for its estimates: the upload speed of real
transfers, the seconds ComfyUI took per image, the time a pod took to answer SSH.

One small JSON file, ``measures.json`` in ``state_home()``, shared by every task file run here.
Each measure keeps its latest value, when it was taken and a few words of what it was
(``{"upload_bytes_per_s": {"value": 12.3e6, "at": "2026-11-20", "detail": "6.5 GB over rsync"}}``).
The file is rewritten atomically under an exclusive lock, so concurrent runs never tear it.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .state import state_home
from .textfile import write_atomically

UPLOAD_SPEED = "upload_bytes_per_s"  # payload bytes over seconds of a verified upload
SECONDS_PER_IMAGE = "comfyui_seconds_per_image"  # ComfyUI's own execution time, per image
POD_READY_SECONDS = "runpod_ready_s"  # from the create call to a working `ssh true`


@dataclass(frozen=True)
class Measure:
    value: float
    at: str  # the UTC date it was taken, as people read it
    detail: str = ""


class Measures:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_home() / "measures.json"

    def get(self, name: str) -> Measure | None:
        entry = self._read().get(name)
        if not isinstance(entry, dict):
            return None
        try:
            return Measure(float(entry["value"]), str(entry["at"]), str(entry.get("detail", "")))
        except (KeyError, TypeError, ValueError):
            return None  # a hand-edited or older entry: as if never measured

    def record(self, name: str, value: float, detail: str = "") -> bool:
        """Remember ``value``; False when it could not be written (an estimate is not worth
        failing the work that measured it)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # read-modify-write: another run may record at once
            data = self._read()
            data[name] = {"value": value, "at": datetime.now(UTC).strftime("%Y-%m-%d"), "detail": detail}
            write_atomically(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
