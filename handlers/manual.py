"""``manual``: a task a person does; ralph only records it."""

from __future__ import annotations

from ralph.context import Context
from ralph.handler import Handler, Result


class ManualHandler(Handler):
    """Nothing to run: every acceptance criterion is left for a person to review and tick.

    The task ends NEEDS_REVIEW; tick the boxes and set its status to DONE when it is.
    """

    name = "manual"

    def run(self, ctx: Context) -> Result:
        return Result(summary="nothing to run: the criteria are for a person to review")
