"""Keeping secrets out of task files, state, logs and the terminal.

Every string ralph writes anywhere goes through ``redact``: values of environment
variables whose names say they are secret are replaced by ``***``.  Which values those are
is read from the environment once per run (``refresh``, called as a run starts) and on first
use, not at every string: a state save redacts hundreds of strings, and reading the
environment for each one cost a real run half a second.
"""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
_MIN_LENGTH = 6  # shorter values would redact ordinary words
MASK = "***"
_values: list[str] | None = None  # the secret values, as last read from the environment


def refresh() -> list[str]:
    """Read the secret values from the environment again: a run sees the environment it started in."""
    global _values
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_LENGTH}
    _values = sorted(values, key=len, reverse=True)  # longest first: one may contain another
    return _values


def secret_values() -> list[str]:
    return _values if _values is not None else refresh()


def redact(text: str) -> str:
    return _masked(text, secret_values())


def redact_data(data: Any) -> Any:
    """``redact`` applied to every string inside JSON-like data (the data itself when there are no secrets)."""
    values = secret_values()
    return _redact_each(data, values) if values else data


def _masked(text: str, values: list[str]) -> str:
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _redact_each(data: Any, values: list[str]) -> Any:
    if isinstance(data, str):
        return _masked(data, values)
    if isinstance(data, dict):
        return {_redact_each(k, values): _redact_each(v, values) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_redact_each(v, values) for v in data]
    return data
