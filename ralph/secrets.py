"""Keeping secrets out of task files, state, logs and the terminal.

Every string ralph writes anywhere goes through ``redact``: values of environment
variables whose names say they are secret are replaced by ``***``.
"""

from __future__ import annotations

import os
import re
from typing import Any

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
_MIN_LENGTH = 6  # shorter values would redact ordinary words
MASK = "***"


def secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_LENGTH}
    return sorted(values, key=len, reverse=True)  # longest first: one may contain another


def redact(text: str) -> str:
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(data: Any) -> Any:
    """``redact`` applied to every string inside JSON-like data."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data
