"""``max_cost_usd``: a run stops before the machine it rents costs more than the person allowed.

A resource that bills carries ``cost_per_hr`` and ``created_at`` (epoch seconds), as a pod's
``machine`` resource does.  While the run goes on, a watcher adds up what it has cost: the
costs its finished tasks reported, plus each held billing machine's time so far × its rate
(the task that created the machine is not counted twice: its cost is part of that time).
When the total would pass the limit before the next look, the watcher calls ``stop`` once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .state import Resources


class CostWatch(threading.Thread):
    def __init__(self, limit_usd: float, resources: Resources, stop: Callable[[str], None], *,
                 interval_s: float = 2.0) -> None:
        super().__init__(name="ralph-cost-watch", daemon=True)
        self.limit_usd = limit_usd
        self.resources = resources
        self.stop_run = stop
        self.interval_s = interval_s
        self._costs: dict[int, float] = {}  # this run's finished tasks → the cost they reported
        self._done = threading.Event()

    def spent(self, task: int, cost_usd: float | None) -> None:
        if cost_usd:
            self._costs[task] = cost_usd

    def accrued(self, at: float | None = None) -> tuple[float, float]:
        """(US dollars spent so far, dollars per hour still billing)."""
        at = time.time() if at is None else at
        machines = [(value, owner) for value, owner in self.resources.held() if _bills(value)]
        owners = {owner for _, owner in machines}
        spent = sum(cost for task, cost in dict(self._costs).items() if task not in owners)
        rate = sum(float(value["cost_per_hr"]) for value, _ in machines)
        spent += sum(max(0.0, at - float(value["created_at"])) / 3600 * float(value["cost_per_hr"])
                     for value, _ in machines)
        return spent, rate

    def run(self) -> None:
        while not self._done.is_set():
            spent, rate = self.accrued()
            if spent + rate * self.interval_s / 3600 > self.limit_usd and not self._done.is_set():
                self.stop_run(f"the run has cost ${spent:.4f} and would pass max_cost_usd "
                              f"${self.limit_usd:.2f}: work stopped, clean-up tasks still run")
                return
            self._done.wait(self.interval_s)

    def finish(self) -> None:
        """Stop watching; once this returns, ``stop`` will not be called."""
        self._done.set()
        if self.is_alive():
            self.join()


def _bills(value: object) -> bool:
    return isinstance(value, dict) and bool(value.get("cost_per_hr")) and bool(value.get("created_at"))
