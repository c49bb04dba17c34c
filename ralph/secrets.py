"""Keeping secrets out of task files, state, logs and the terminal.

Every string ralph writes anywhere goes through ``redact``: values of environment
variables whose names say they are secret are replaced by ``***``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
_MIN_LENGTH = 6  # shorter values would redact ordinary words
MASK = "***"


def secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_LENGTH}
    return sorted(values, key=len, reverse=True)  # longest first: one may contain another


def redact(text: str, values: list[str] | None = None) -> str:
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(data: Any, values: list[str] | None = None) -> Any:
    """``redact`` applied to every string inside JSON-like data."""
    values = secret_values() if values is None else values
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
