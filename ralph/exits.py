"""ralph's exit status: one policy, for a run of one file and for a run of several.

Ordered by meaning, the most telling first: a person interrupted the run (130), the input was
bad (2), work failed (1), work waits for a person's review (3), everything is done (0).
"""

from __future__ import annotations

OK, FAILED, USAGE, REVIEW, INTERRUPTED = 0, 1, 2, 3, 130
_MOST_TELLING_FIRST = (INTERRUPTED, USAGE, FAILED, REVIEW, OK)


def worst(*codes: int) -> int:
    """The status that says most about several outcomes (``OK`` for none)."""
    return min(codes, key=_rank, default=OK)


def _rank(code: int) -> int:
    # A status outside the policy (a crash's) tells that something failed.
    return _MOST_TELLING_FIRST.index(code if code in _MOST_TELLING_FIRST else FAILED)
