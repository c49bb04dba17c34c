"""Files of this repository the tests read: nothing outside it is needed."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "roadmap" / "ralph" / "RALPH-001-grain-reduction.md"  # the real example, as its user wrote it
OBJECT_INFO = REPO / "tests" / "data" / "comfyui-object-info-subset.json"  # see tests/data/README.md
