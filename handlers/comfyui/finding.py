"""One finding about a workflow, pointing at the task-file line that caused it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]

# How validate/lint find the file line of a node or of one of its inputs.
# ``line_of(node_id, None)`` is the node's own line; ``line_of(node_id, input)``
# falls back to it when the input has no line of its own.
LineOf = Callable[[str, str | None], int | None]


def no_lines(node_id: str, input_name: str | None = None) -> int | None:
    """A LineOf for graphs that come from no file (a JSON template)."""
    return None


@dataclass(frozen=True)
class Finding:
    """A finding. ``str()`` gives ``node 11 (KSampler) input cfg: message``;
    the engine prefixes ``file:line:`` itself, which is why ``line`` is kept apart."""

    line: int | None
    node_id: str | None
    class_type: str | None
    input: str | None
    message: str
    severity: Severity = "error"
    code: str = ""  # stable rule name (e.g. "bad-value", "denoise-on-empty-latent") for tests and filters

    def __str__(self) -> str:
        where = ""
        if self.node_id is not None:
            where = f"node {self.node_id}"
            if self.class_type:
                where += f" ({self.class_type})"
        if self.input:
            where = f"{where} input {self.input}" if where else f"input {self.input}"
        return f"{where}: {self.message}" if where else self.message

    @property
    def is_error(self) -> bool:
        return self.severity == "error"
