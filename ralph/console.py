"""What a person sees during ``ralph run``: a live task list and progress bars on a terminal,
plain lines otherwise (CI logs, pipes), colour off under ``NO_COLOR``.  Everything shown
passes through ``redact``.

The live view owns the terminal while it runs: a line written past it (a library's log record
on stderr) would break its cursor bookkeeping and leave a copy of the table in the scrollback
at every redraw. So Python logging is routed through the console for the run (warnings and
above; libraries' INFO chatter such as httpx's "HTTP Request" lines is dropped), and a task's
own log lines show as a short tail under its row, with its elapsed time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .model import Task
from .secrets import redact

if TYPE_CHECKING:
    from .plan import Plan, Step
    from .runner import Outcome, RunSummary

STYLE = {
    "DONE": "green",
    "NEEDS_REVIEW": "yellow",
    "FAILED": "red",
    "BLOCKED": "red",
    "SKIPPED": "dim",
    "IN_PROGRESS": "cyan",
    "PENDING": "dim",
}


class _Bar:
    def __init__(self, progress: Progress, task_id: TaskID) -> None:
        self._progress = progress
        self._id = task_id

    def update(self, completed: float, total: float | None = None, description: str | None = None) -> None:
        # Like the bar's first description: a line of a program's output may hold "[/x]" or a key.
        shown = None if description is None else escape(redact(description))
        self._progress.update(self._id, completed=completed, total=total, description=shown)


class _Amount(ProgressColumn):
    """Bytes as sizes, anything else (ComfyUI's sampler steps) as "done/total unit"."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task):  # type: ignore[no-untyped-def]
        unit = task.fields.get("unit", "bytes")
        if unit == "bytes":
            return self._bytes.render(task)
        total = f"/{task.total:g}" if task.total is not None else ""
        return Text(f"{task.completed:g}{total} {unit}", style="progress.download")


class _ConsoleLogging(logging.Handler):
    """Log records shown through the reporter while the live view runs."""

    def __init__(self, reporter: ConsoleReporter) -> None:
        super().__init__(logging.WARNING)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.reporter.warn(f"{record.name}: {record.getMessage()}")
        except Exception:  # logging must never break the run
            self.handleError(record)


TAIL = 3  # log lines shown under a running task


def _elapsed(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class _QuietBar:
    def update(self, completed: float, total: float | None = None, description: str | None = None) -> None:
        pass


class ConsoleReporter:
    def __init__(self, console: Console | None = None, *, loudness: str = "normal") -> None:
        self.console = console or Console(highlight=False)
        # quiet: warnings, the summary and what is open for review; verbose: also each criterion's evidence.
        self.loudness = loudness
        self.live_mode = self.console.is_terminal and loudness != "quiet"
        self.rows: dict[int, list[str]] = {}
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            _Amount(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.live: Live | None = None
        self.started: dict[int, float] = {}  # task → monotonic start, for elapsed times
        self.finished: dict[int, float] = {}  # task → seconds it ran, as this console saw it
        self.tails: dict[int, deque[str]] = {}
        self._logging: tuple[_ConsoleLogging, list[tuple[logging.Handler, int]]] | None = None
        self.cleaning = False  # the run stopped (failure, Ctrl-C): what still starts is clean-up

    # -- output primitives ---------------------------------------------------------------

    def _print(self, text: str, style: str | None = None) -> None:
        self.console.print(escape(redact(text)), style=style)

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for number, (title, status, handler) in self.rows.items():
            running = status == "IN_PROGRESS" and number in self.started and number not in self.finished
            clock = _elapsed(now - self.started[number]) if running else ""
            table.add_row(f"{number}.", escape(title), f"[{STYLE.get(status, '')}]{status}[/]", f"[dim]{handler}[/]",
                          clock)
            if running:
                for line in self.tails.get(number, ()):
                    table.add_row("", f"[dim]  {escape(line)}[/]", "", "", "")
        return table

    def __rich__(self) -> Group:
        """What the live display shows, built when it redraws (8 times a second), not on every
        change: a thousand-task file would otherwise rebuild its table twice a task."""
        return Group(self._table(), self.bars)

    # -- the runner's calls --------------------------------------------------------------

    def start(self, plan: Plan, steps: list[Step], stale: list[int]) -> None:
        if self.loudness != "quiet":
            self._print(f"{plan.file.title} — {plan.file.path}", "bold")
        if not steps and self.loudness != "quiet":
            self._print("nothing to do: every task is finished")
        for number in stale:
            self._print(f"task {number} changed since it was done; `ralph run --only {number}` redoes it", "yellow")
        self.rows = {s.task.number: [s.task.title, s.task.status, s.handler_name or "?"] for s in steps}
        if self.live_mode and steps:
            self._route_logging()
            self.live = Live(self, console=self.console, refresh_per_second=8, transient=False)
            self.live.start()

    def _route_logging(self) -> None:
        """Send Python logging through the console for the run; put things back in ``finish``."""
        root = logging.getLogger()
        handler = _ConsoleLogging(self)
        muted = [(h, h.level) for h in root.handlers]
        for h, _ in muted:
            h.setLevel(logging.CRITICAL + 1)  # their stream would write past the live view
        root.addHandler(handler)
        self._logging = (handler, muted)

    def _restore_logging(self) -> None:
        if self._logging is None:
            return
        handler, muted = self._logging
        logging.getLogger().removeHandler(handler)
        for h, level in muted:
            h.setLevel(level)
        self._logging = None

    def task_started(self, task: Task, handler: str, resumed: bool) -> None:
        self.rows[task.number][1] = "IN_PROGRESS"
        self.started[task.number] = time.monotonic()
        self.tails[task.number] = deque(maxlen=TAIL)
        if self.live_mode and self.cleaning:  # the person waits for this before closing the terminal
            self._print(f"cleaning up: task {task.number} {task.title} ({handler})…", "yellow")
        if not self.live_mode and self.loudness != "quiet":
            self._print(f"▶ task {task.number} {task.title} ({handler}{', resumed' if resumed else ''})")

    def task_finished(self, task: Task, outcome: Outcome) -> None:
        if task.number in self.started:
            self.finished[task.number] = time.monotonic() - self.started[task.number]
        if task.number in self.rows:
            self.rows[task.number][1] = outcome.status
        if not self.live_mode and self.loudness != "quiet":
            detail = f" — {outcome.error}" if outcome.error else ""
            self._print(f"  task {task.number} {outcome.status} ({outcome.seconds:.1f} s){detail}")
        if self.loudness == "verbose":
            for verdict in outcome.verdicts:
                evidence = verdict.evidence
                mark = "✔" if evidence is None or evidence.verified else "✘" if evidence.verified is False else "👁"
                self._print(f"    {mark} {verdict.criterion}: {evidence.detail if evidence else 'ticked by a person'}")

    def tasks_skipped(self, tasks: list[Task], outcomes: list[Outcome]) -> None:
        """One line for them all: after Ctrl-C, a long file stops at once."""
        self.cleaning = True
        for task in tasks:
            if task.number in self.rows:
                self.rows[task.number][1] = "SKIPPED"
        if not self.live_mode and self.loudness != "quiet":
            self._print(f"  {_numbers([t.number for t in tasks])} SKIPPED — {outcomes[0].error}")

    def log(self, task: Task, message: str) -> None:
        if self.live_mode and task.number in self.tails:
            self.tails[task.number].append(redact(message))  # shown under the running task's row
            return
        if self.loudness != "quiet":
            self._print(f"  task {task.number}: {message}", "dim")

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}", "yellow")

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str = "bytes") -> Iterator[_Bar | _QuietBar]:
        if not self.live_mode:
            if self.loudness != "quiet":
                self._print(f"  {description}…")
            yield _QuietBar()
            if self.loudness != "quiet":
                self._print(f"  {description}: done")
            return
        task_id = self.bars.add_task(escape(redact(description)), total=total, unit=unit)
        try:
            yield _Bar(self.bars, task_id)
        finally:
            self.bars.remove_task(task_id)

    def finish(self, summary: RunSummary) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        self._restore_logging()
        if summary.outcomes:
            self._summary_table(summary)
        self._open_for_review(summary)

    def _summary_table(self, summary: RunSummary) -> None:
        table = Table(title="ralph run", title_justify="left")
        for column in ("#", "task", "status", "time", "cost", "note"):
            table.add_column(column, overflow="fold")
        for group in _skipped_together(summary.outcomes):
            if len(group) > 1:
                title = f"{len(group)} tasks"
                table.add_row(_numbers([o.number for o in group], ""), title, "[dim]SKIPPED[/]", "", "",
                              escape(group[0].error))
                continue
            o = group[0]
            cost = f"${o.cost_usd:.4f}" if o.cost_usd is not None else ""
            note = o.error or o.summary
            reviews = sum(1 for v in o.verdicts if v.evidence and v.evidence.verified is None)
            if reviews:
                criteria = "criterion" if reviews == 1 else "criteria"
                note = (note + "; " if note else "") + f"{reviews} {criteria} to review"
            table.add_row(
                str(o.number),
                escape(o.title),
                f"[{STYLE.get(o.status, '')}]{o.status}[/]",
                # an interrupt records no time
                "" if o.status == "SKIPPED" else _elapsed(o.seconds or self.finished.get(o.number, 0.0)),
                cost,
                escape(redact(note)),
            )
        self.console.print(table)
        verified = [v for v in summary.final if v.evidence is None or v.evidence.verified]
        if summary.final:
            self._print(f"file criteria and exit conditions: {len(verified)}/{len(summary.final)} verified")
        for verdict in verified:
            self._print(f"✔ {verdict.criterion}: " + (verdict.evidence.detail if verdict.evidence else "ticked"))
        for o in summary.outcomes:
            if o.files:
                self._print(f"task {o.number} wrote: " + ", ".join(o.files))
        if summary.cost_usd:
            self._print(f"cost: ${summary.cost_usd:.4f}")
        for message in summary.unwritten:
            self._print(f"not written: {message}", "yellow")

    def _open_for_review(self, summary: RunSummary) -> None:
        """Each box a person has yet to check, with the evidence ralph has, and how to close it."""
        if not summary.review:
            return
        name = summary.file.path
        self._print(f"open for review ({len(summary.review)}): check each, then tick its box in {name}", "yellow")
        for item in summary.review:
            where = f"task {item.task}" if item.task is not None else "success criterion"
            self._print(f"👁 {where}, line {item.line}: {item.criterion}")
            if item.evidence:
                self._print(f"    evidence: {item.evidence}", "dim")
            if item.files:
                self._print("    files: " + ", ".join(item.files), "dim")
        tasks = sorted({i.task for i in summary.review if i.task is not None})
        if tasks:
            self._print(f"a task whose boxes are all ticked is DONE on the next `ralph run {name}`; "
                        f"or accept it now: `ralph accept {name} {tasks[0]}`")


def _skipped_together(outcomes: list[Outcome]) -> Iterator[list[Outcome]]:
    """The outcomes one by one, but runs of tasks skipped for one reason as one group."""
    group: list[Outcome] = []
    for outcome in outcomes:
        if group and (outcome.status != "SKIPPED" or outcome.error != group[0].error):
            yield group
            group = []
        if outcome.status == "SKIPPED":
            group.append(outcome)
        else:
            yield [outcome]
    if group:
        yield group


def _numbers(numbers: list[int], noun: str = "task") -> str:
    """``task 3``, ``tasks 3–7`` or ``tasks 3, 5, 9``: a list of task numbers people read."""
    if len(numbers) == 1:
        return f"{noun} {numbers[0]}".strip()
    contiguous = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    listed = f"{numbers[0]}–{numbers[-1]}" if contiguous else ", ".join(map(str, numbers))
    return f"{noun}s {listed}".strip() if noun else listed
