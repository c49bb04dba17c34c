"""Numbers as people read them: sizes in decimal units, durations, US dollars."""

from __future__ import annotations


def size(n: float) -> str:
    """``6543210000`` → ``6.5 GB``; under a kilobyte, ``512 bytes``."""
    if n < 1000:
        return f"{int(n)} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


def duration(seconds: float) -> str:
    """``45`` → ``45 s``; ``1500`` → ``25 min``; ``5400`` → ``1 h 30 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def count(n: int, noun: str) -> str:
    """``1 image``, ``3 images``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def usd(amount: float) -> str:
    """Dollars with cents, or with four decimals below ten cents (a pod's minute costs that)."""
    return f"${amount:.2f}" if amount >= 0.1 or amount == 0 else f"${amount:.4f}"
