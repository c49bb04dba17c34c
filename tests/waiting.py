"""Waiting in tests: on a condition, with a deadline generous enough for a loaded machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 60.0, what: str = "the condition") -> T:
    """``condition()``'s first true value; AssertionError naming ``what`` after ``timeout`` s.
    Polls often: the wait ends as soon as the event happened, the deadline only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)
    return value
