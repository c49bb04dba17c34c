"""``manual``: a task a person does; ralph only records it."""

from __future__ import annotations

from typing import Any

from ralph.context import Context, EstimateContext
from ralph.handler import Estimate, Handler, Result
from ralph.model import Task


class ManualHandler(Handler):
    """Nothing to run: every acceptance criterion is left for a person to review and tick.

    The task ends NEEDS_REVIEW; tick the boxes and set its status to DONE when it is.
    """

    name = "manual"

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate:
        return Estimate(("a person's task: nothing runs; its criteria are left for review",))

    def run(self, ctx: Context) -> Result:
        return Result(summary="nothing to run: the criteria are for a person to review")
