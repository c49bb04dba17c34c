"""The plan as people read it before paying: what each task will do, then what it all adds up to
(bytes to send, images, machine time, cost and how each was estimated, the worst case, the limit).

``ralph run --dry-run`` prints it; ``ralph run`` prints it first and, when the plan rents a machine
and a person is at the terminal, asks before anything is written.  Making it writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import units
from .context import EstimateContext
from .handler import Estimate, Figure, Rental
from .measures import Measures
from .plan import Plan, Step
from .secrets import redact
from .state import RunState, state_dir_for

INDENT = "     "


@dataclass(frozen=True)
class TaskPreview:
    step: Step
    estimate: Estimate | None
    error: str = ""  # why the handler could not estimate


@dataclass(frozen=True)
class Preview:
    title: str
    tasks: list[TaskPreview]
    held_rate: Figure | None  # a machine an earlier run holds, billing now
    max_cost_usd: float | None

    @property
    def rental(self) -> Rental | None:
        """The machine this plan rents (the first task that rents one)."""
        return next((t.estimate.rental for t in self.tasks if t.estimate and t.estimate.rental), None)

    @property
    def rents(self) -> bool:
        """The plan creates a machine that bills: worth a person's yes."""
        return self.rental is not None

    def lines(self) -> list[str]:
        out = [f"{self.title} — {units.count(len(self.tasks), 'task')} would run:"]
        for item in self.tasks:
            out += _task_lines(item)
        return [redact(line) for line in out + self._totals()]

    def _totals(self) -> list[str]:
        estimates = [t.estimate for t in self.tasks if t.estimate]
        upload = sum(e.upload_bytes for e in estimates)
        download = sum(e.download_bytes for e in estimates)
        unknown = sum(e.unknown_downloads for e in estimates)
        images = sum(e.images for e in estimates)
        timed = [(t.step.task.number, t.estimate.machine_seconds) for t in self.tasks
                 if t.estimate and t.estimate.machine_seconds]
        seconds = sum(figure.value for _, figure in timed)
        out = ["Totals:"]
        if upload:
            out.append(f"  upload: {units.size(upload)} from this machine")
        if download or unknown:
            sizes = [units.size(download)] if download else []
            sizes += [f"{units.count(unknown, 'file')} of unknown size"] if unknown else []
            out.append(f"  downloads on the machine: {' + '.join(sizes)}")
        if images:
            out.append(f"  images: {images}")
        if timed:
            parts = ", ".join(f"task {n} {units.duration(figure.value)}" for n, figure in timed)
            out.append(f"  machine time: ~{units.duration(seconds)} ({parts}; how: under each task)")
        out += self._cost_lines(seconds)
        return out

    def _cost_lines(self, seconds: float) -> list[str]:
        rental = self.rental
        rate = rental.per_hour if rental else self.held_rate
        if rental is None and rate is None:
            return ["  cost: none (no machine that bills in this plan)"]
        out = []
        if rate is None:
            out.append("  cost: unknown (prices could not be read)")
        else:
            out.append(f"  cost: ~{units.usd(seconds / 3600 * rate.value)} at ${rate.value:.3f}/h ({rate.basis})")
        if rental is not None and rental.worst_case_usd is not None and rental.highest_per_hour is not None:
            out.append(f"  worst case: {units.usd(rental.worst_case_usd)}: the machine's whole lifetime, "
                       f"{units.duration(rental.max_hours * 3600)} (max_lifetime_s), "
                       f"at ${rental.highest_per_hour:.3f}/h, the dearest candidate")
        elif rental is not None:
            out.append(f"  worst case: unknown: {units.duration(rental.max_hours * 3600)} (max_lifetime_s) "
                       "at a rate that could not be read")
        if self.max_cost_usd:
            out.append(f"  cost limit: {units.usd(self.max_cost_usd)} (max_cost_usd): past it ralph stops the work "
                       "and the clean-up tasks delete the machine")
        else:
            out.append("  cost limit: none (max_cost_usd in ralph.yaml, or --max-cost-usd)")
        return out


def preview(plan: Plan, steps: list[Step], *, max_cost_usd: float | None = None) -> Preview:
    """Ask each step's handler for its estimate; a handler that fails to estimate is a line, not
    a traceback: the plan is for reading."""
    directory = state_dir_for(plan.file.path)
    context = EstimateContext(plan.file, plan.file.path.resolve().parent, directory, Measures())
    tasks = []
    for step in steps:
        if step.handler is None:
            tasks.append(TaskPreview(step, None))
            continue
        try:
            tasks.append(TaskPreview(step, step.handler.estimate(step.task, step.params, context)))
        except Exception as error:  # noqa: BLE001 (any handler's bug: say it, show the rest)
            tasks.append(TaskPreview(step, None, f"{type(error).__name__}: {error}"))
    limit = max_cost_usd if max_cost_usd is not None else plan.config.max_cost_usd
    return Preview(plan.file.title, tasks, _held_rate(directory), limit)


def _held_rate(directory: Path) -> Figure | None:
    """The rate of a billing machine an earlier run left held (its tasks are done; it still bills)."""
    state_file = directory / "state.json"
    if not state_file.exists():
        return None
    for value, owner in RunState(directory).resources.held():
        if isinstance(value, dict) and value.get("cost_per_hr") and value.get("created_at"):
            name = value.get("name") or value.get("id") or "a machine"
            return Figure(float(value["cost_per_hr"]), f"{name}, held since task {owner} created it")
    return None


def _task_lines(item: TaskPreview) -> list[str]:
    step = item.step
    head = f"  {step.task.number}. {step.task.title} → {step.handler_name or '?'}"
    if step.handler is not None and step.handler.cleanup:
        head += " (clean-up: runs even after a failure)"
    if step.task.status != "PENDING":
        head += f" [{step.task.status}]"
    out = [head]
    if item.error:
        out.append(f"{INDENT}no estimate: {item.error}")
    if item.estimate is None:
        if given := _given_params(step):
            out.append(f"{INDENT}{given}")
        return out
    out += [f"{INDENT}{line}" for line in item.estimate.lines]
    if item.estimate.machine_seconds:
        figure = item.estimate.machine_seconds
        out.append(f"{INDENT}time on the machine: ~{units.duration(figure.value)} — {figure.basis}")
    return out


def _given_params(step: Step) -> str:
    """The parameters that differ from the handler's defaults, compactly (a handler with no estimate)."""
    assert step.handler is not None
    defaults = {k: p.default for k, p in step.handler.params.items() if not p.required}
    given = {k: v for k, v in step.params.items() if k not in defaults or defaults[k] != v}
    if not given:
        return ""
    return "with " + ", ".join(f"{k}={_compact(v)}" for k, v in sorted(given.items()))


def _compact(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"
