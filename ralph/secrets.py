"""Keeping secrets out of task files, state, logs and the terminal.

Every string ralph writes anywhere goes through ``redact``: values of environment
variables whose names say they are secret are replaced by ``***``.  Which values those are
is read from the environment once per run (``refresh``, called as a run starts) and on first
use, not at every string: a state save redacts hundreds of strings, and reading the
environment for each one cost a real run half a second.
"""

from __future__ import annotations

import json
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


def redact(text: str, values: list[str] | None = None) -> str:
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(data: Any, values: list[str] | None = None) -> Any:
    """``redact`` applied to every string inside JSON-like data (the data itself when there are no secrets)."""
    values = secret_values() if values is None else values
    if not values:
        return data
    if isinstance(data, str):
        return redact(data, values)
    if isinstance(data, dict):
        return {redact_data(k, values): redact_data(v, values) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v, values) for v in data]
    return data


def shows_secret(text: str) -> bool:
    """Whether JSON text (``ensure_ascii=False``) may hold a secret inside one of its strings.

    A secret inside a string shows in the JSON as its own JSON encoding, so when no encoding
    shows, the text is clean and the data it came from need not be walked by ``redact_data``.
    """
    return any(json.dumps(value, ensure_ascii=False)[1:-1] in text for value in secret_values())
