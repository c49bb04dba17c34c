"""The loop: run a task file's tasks in order, check their criteria, write the outcome back.

PENDING → IN_PROGRESS → DONE | NEEDS_REVIEW | FAILED | BLOCKED.  Finished tasks are skipped
on a rerun; a task left IN_PROGRESS by a crash is resumed through its handler, which finds
what it saved in its memory.  Any other task that runs (failed, reset to PENDING, edited,
or named by ``--only``) runs from scratch, keeping only the memory its handler ``remembers``.
After a failure or Ctrl-C the remaining tasks are skipped but clean-up tasks (terminating a
pod) still run.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from . import children, secrets
from .budget import CostWatch
from .context import Context, RunInfo
from .edits import Edit, SetCheck, SetResults, SetStatus, TaskFileWriter
from .errors import EnvironmentFailure, ParseError, RalphError
from .exits import FAILED as EXIT_FAILED
from .exits import INTERRUPTED as EXIT_INTERRUPTED
from .exits import OK as EXIT_OK
from .exits import REVIEW as EXIT_REVIEW
from .exits import worst
from .handler import Evidence, Handler, Interrupted, Result, TaskBlocked, TaskFailed, TransientError
from .model import FINISHED, Task, TaskFile
from .parser import normalise
from .plan import Plan, Step, make_plan, missing_env
from .review import ReviewItem, accept_record, open_for_review
from .secrets import redact
from .state import EventLog, RunLock, RunState, now, state_dir_for, unwritable
from .warmup import Warmup

ALTERNATIVE = ("ou ", "or ")  # an exit condition starting so is an alternative to the one above


@dataclass
class Verdict:
    criterion: str
    evidence: Evidence | None  # None: ticked by a person before ralph looked


@dataclass
class Outcome:
    number: int
    title: str
    status: str
    seconds: float = 0.0
    summary: str = ""
    error: str = ""
    cost_usd: float | None = None
    files: list[str] = field(default_factory=list)  # what the task produced (images, pictures)
    verdicts: list[Verdict] = field(default_factory=list)


@dataclass
class RunSummary:
    file: TaskFile
    outcomes: list[Outcome]
    exit_code: int
    final: list[Verdict] = field(default_factory=list)  # success criteria and exit conditions
    stale: list[int] = field(default_factory=list)
    unwritten: list[str] = field(default_factory=list)
    review: list[ReviewItem] = field(default_factory=list)  # what is open for a person's review

    @property
    def cost_usd(self) -> float:
        return sum(o.cost_usd or 0.0 for o in self.outcomes)


def select(plan: Plan, state: RunState, *, only: int | None, start_from: int | None) -> list[Step]:
    """The steps this run executes, in file order.

    Unfinished tasks (from ``start_from``), plus the finished ones whose pod a clean-up task has
    since released (the work that remains needs it again), plus every clean-up task.  With no
    work left, only clean-up tasks that did not finish run: a finished file stays finished.
    A task number that names no task is bad input.
    """
    numbers = [s.task.number for s in plan.steps]
    if only is not None and only not in numbers:
        raise RalphError(f"--only {only}: there is no task {only} (tasks: {_listed(numbers)})", plan.file.path)
    if start_from is not None and not any(n >= start_from for n in numbers):
        raise RalphError(f"--from {start_from}: there is no task {start_from} or after (tasks: {_listed(numbers)})",
                         plan.file.path)
    if only is not None:
        return [s for s in plan.steps if s.task.number == only]
    unfinished = {
        s.task.number
        for s in plan.steps
        if not _is_cleanup(s)
        and s.task.status not in FINISHED
        and (start_from is None or s.task.number >= start_from)
    }
    if not unfinished:
        return [s for s in plan.steps if _is_cleanup(s) and s.task.status not in FINISHED]
    redo = state.resources.released_users()
    return [s for s in plan.steps if s.task.number in unfinished | redo or _is_cleanup(s)]


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers)) or "none"


def _is_cleanup(step: Step) -> bool:
    return step.handler is not None and step.handler.cleanup


class CostLimitReached(Interrupted):
    """The run's machine would cost more than ``max_cost_usd``: the task stops as on Ctrl-C
    (a handler cancels its remote work the same way) but ends FAILED, with the reason."""


class Runner:
    def __init__(
        self,
        path: Path,
        reporter: Any,
        *,
        only: int | None = None,
        start_from: int | None = None,
        retry_wait: float = 1.0,
        max_cost_usd: float | None = None,
        cost_check_s: float = 2.0,
        before_start: Callable[[Plan, list[Step]], None] | None = None,
    ) -> None:
        self.path = path
        self.reporter = reporter
        self.only = only
        self.start_from = start_from
        self.retry_wait = retry_wait
        self.max_cost_usd = max_cost_usd  # overrides ralph.yaml's
        self.cost_check_s = cost_check_s
        # Shown the plan once the input is valid, before anything is written; raises to stop.
        self.before_start = before_start
        self.cost_stop = ""  # why the cost watcher stopped the run
        self._cost_interrupt = False  # the next SIGINT is the watcher's, not a person's
        self._working = False  # a task that is work, not clean-up, is running: a cost stop ends it
        self.run_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.writer = TaskFileWriter(path)
        self.pending_edits: list[Edit] = []
        self.unwritten: list[str] = []
        self.cleaning = False  # running clean-up tasks after a failure or an interrupt
        self.warned = False
        self._latest: TaskFile | None = None  # the file as last written
        self.warmup = Warmup(())  # the run's: its slow imports wait for a task's progress

    def run(self) -> RunSummary:
        secrets.refresh()  # the secrets of the environment this run started in, read once
        try:
            return self._run_file()
        except EnvironmentFailure as error:
            error.path = error.path or self.path  # "T.md: cannot write .ralph/T/state.json: ..."
            raise

    def _run_file(self) -> RunSummary:
        plan = make_plan(self.path)
        directory = state_dir_for(self.path)
        # Bad input is refused before anything is created on disk (not even the lock)...
        chosen = select(plan, RunState(directory), only=self.only, start_from=self.start_from)
        errors = [p for s in chosen for p in s.problems if p.severity == "error"] + missing_env(chosen)
        errors.sort(key=lambda p: p.line)
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more: ralph check {self.path})" if len(errors) > 1 else ""
            raise RalphError(first.message + more, first.path or self.path, first.line)
        if self.before_start is not None:
            self.before_start(plan, chosen)
        lock = RunLock(directory, self.path)
        lock.acquire()
        state = RunState(directory)  # ...and the plan is made again from the state the lock protects
        chosen = select(plan, state, only=self.only, start_from=self.start_from)
        events = EventLog(directory, self.run_id)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        run = RunInfo(plan.file, state.resources, self.path.resolve().parent, directory, self.run_id, self.reporter,
                      events)
        handlers = list({type(s.handler): s.handler for s in plan.steps if s.handler is not None}.values())
        limit = self.max_cost_usd if self.max_cost_usd is not None else plan.config.max_cost_usd
        watch = CostWatch(limit, state.resources, self._over_budget, interval_s=self.cost_check_s) if limit else None
        warmup = self.warmup = Warmup(m for s in chosen if s.handler is not None for m in s.handler.warm_imports)
        warmup.start()
        try:
            self._hooks(handlers, "before_run", run)
            if watch is not None:
                watch.start()
            return self._run(plan, chosen, state, events, watch)
        finally:
            if watch is not None:
                watch.finish()
            warmup.finish()
            self.cleaning = True  # a Ctrl-C now only warns: the after-run hooks reap pods
            self._hooks(handlers, "after_run", run)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            events.close()
            lock.release()

    def _hooks(self, handlers: list[Handler], name: str, run: RunInfo) -> None:
        for handler in handlers:
            try:
                getattr(handler, name)(run)
            except Exception as error:  # a hook must not stop the run nor hide its result
                run.events.write("hook_failed", handler=handler.name, hook=name, error=str(error))
                self.reporter.warn(f"{handler.name} {name}: {type(error).__name__}: {error}")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._cost_interrupt:  # outside work, the loop sees cost_stop before the next task
            self._cost_interrupt = False
            if self._working and not self.cleaning:
                children.raise_when_safe(CostLimitReached(self.cost_stop))
            return
        if self.cleaning and not self.warned:
            self.warned = True
            self.reporter.warn("cleaning up (e.g. terminating a pod): Ctrl-C once more abandons it")
            return
        children.raise_when_safe(Interrupted(signal.Signals(signum).name))

    def _over_budget(self, reason: str) -> None:
        """The cost watcher's call, from its thread: stop the task at hand as a Ctrl-C would."""
        self.cost_stop = reason
        self._cost_interrupt = True
        # A real signal, not _thread.interrupt_main: it must also wake a main thread that sleeps or
        # waits on a socket.
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    def _run(self, plan: Plan, steps: list[Step], state: RunState, events: EventLog,
             watch: CostWatch | None = None) -> RunSummary:
        stale = self._stale(plan, state, steps)
        events.write("run_started", file=str(self.path), tasks=[s.task.number for s in steps])
        self.reporter.start(plan, steps, stale)
        outcomes: list[Outcome] = self._accept_reviewed(plan, state, steps, events)
        stop_reason = ""
        interrupted = False
        skipped: list[Step] = []  # marked together, in one write, before the next clean-up task
        for step in steps:
            if self.cost_stop and not stop_reason:
                stop_reason = self._stopped_for_cost(events)
            if stop_reason and not _is_cleanup(step):
                skipped.append(step)
                continue
            outcomes += self._skip(skipped, stop_reason, events)
            skipped = []
            self.cleaning = bool(stop_reason)
            try:
                outcome = self._execute(plan, step, state, events)
            except Interrupted:
                outcomes.append(self._interrupted(step, events))
                interrupted = True
                if self.cleaning:
                    break  # a second Ctrl-C during clean-up: the person chose to leave now
                stop_reason = "the run was interrupted"
                continue
            outcomes.append(outcome)
            if watch is not None:
                watch.spent(step.task.number, outcome.cost_usd)
            if self.cost_stop and not stop_reason:
                stop_reason = self._stopped_for_cost(events)
            if outcome.status in ("FAILED", "BLOCKED") and not stop_reason:
                stop_reason = f"task {step.task.number} {outcome.status.lower()}"
        outcomes += self._skip(skipped, stop_reason, events)
        self.cleaning = False
        # --only runs one task: judging the whole file from it would say little.
        final = self._final(plan, state, events) if outcomes and self.only is None else []
        self._flush()
        file = self._current(plan.file)
        code = _exit_code(file, interrupted=interrupted)
        if self.cost_stop and stop_reason == self.cost_stop and not interrupted:
            code = EXIT_FAILED  # its limit stopped the work: it was not done
        events.write("run_finished", exit_code=code)
        summary = RunSummary(file, outcomes, code, final, stale, self.unwritten, open_for_review(file, state))
        self.reporter.finish(summary)
        return summary

    def _accept_reviewed(self, plan: Plan, state: RunState, steps: list[Step], events: EventLog) -> list[Outcome]:
        """NEEDS_REVIEW tasks whose every box is now ticked (a person checked what ralph could not)
        become DONE without running again."""
        running = {s.task.number for s in steps}
        reviewed = [t for t in plan.file.tasks
                    if t.status == "NEEDS_REVIEW" and t.number not in running and all(c.checked for c in t.criteria)]
        outcomes = []
        for task in reviewed:
            accept_record(state.task(task.number), task)
            outcomes.append(Outcome(task.number, task.title, "DONE", summary="reviewed: every box is ticked"))
        if reviewed:
            state.save()
            self._write([SetStatus(t.number, "DONE") for t in reviewed])
            events.write("tasks_reviewed", tasks=[t.number for t in reviewed])
        return outcomes

    def _stopped_for_cost(self, events: EventLog) -> str:
        events.write("cost_limit", reason=self.cost_stop)
        self.reporter.warn(self.cost_stop)
        return self.cost_stop

    # -- one task ------------------------------------------------------------------------

    def _execute(self, plan: Plan, step: Step, state: RunState, events: EventLog) -> Outcome:
        task, handler = step.task, step.handler
        assert handler is not None
        record = state.task(task.number)
        resumed = self._resumes(task, record)
        if not resumed:  # from scratch: only what names remote work to find again survives
            record["memory"] = handler.kept_on_redo(record.get("memory", {}))
        record.update(status="IN_PROGRESS", started=now(), attempts=record.get("attempts", 0) + 1,
                      fingerprint=task.fingerprint)
        state.save(task.number)
        self._write([SetStatus(task.number, "IN_PROGRESS")])
        events.write("task_started", task=task.number, handler=handler.name, resumed=resumed)
        self.reporter.task_started(task, handler.name, resumed)
        ctx = self._context(plan, step, state, events)
        started = time.monotonic()
        outcome = Outcome(task.number, task.title, "FAILED")
        self._working = not handler.cleanup
        try:
            result = self._run_handler(handler, ctx, events) or Result()
            outcome.summary, outcome.cost_usd, outcome.files = result.summary, result.cost_usd, result.files
            record["result"] = _result_record(result)
            outcome.verdicts = self._verify(handler, ctx, result, self._current_task(task), record.get("ticked", []))
            outcome.status = _status_from(outcome.verdicts)
            if outcome.status == "FAILED":
                unmet = [v.criterion for v in outcome.verdicts if v.evidence and v.evidence.verified is False]
                outcome.error = "criterion not met: " + "; ".join(unmet)
        except TaskBlocked as error:
            outcome.status, outcome.error = "BLOCKED", str(error)
        except TaskFailed as error:
            outcome.error = str(error)
        except CostLimitReached as error:
            outcome.error = f"stopped: {error}"
        except (Interrupted, EnvironmentFailure):
            raise  # a full disk stops the run: nothing more could be recorded
        except Exception as error:  # a handler's bug must not leave the task IN_PROGRESS
            outcome.error = f"{type(error).__name__}: {error}"
            events.write("traceback", task=task.number, text=traceback.format_exc())
        finally:
            self._working = False
        outcome.seconds = time.monotonic() - started
        outcome.error = redact(outcome.error)
        record.update(status=outcome.status, finished=now(), seconds=round(outcome.seconds, 3), error=outcome.error)
        if outcome.status in FINISHED:
            record["fingerprint"] = self._current_task(task).fingerprint
        # ralph ticks what was verified now, and unticks what it ticked before but no longer can.
        verified = [v.criterion for v in outcome.verdicts if v.evidence and v.evidence.verified]
        unverified = [v.criterion for v in outcome.verdicts if v.evidence and not v.evidence.verified]
        edits: list[Edit] = [SetStatus(task.number, outcome.status)]
        edits += [SetCheck(task.number, text, True) for text in verified]
        edits += [SetCheck(task.number, text, False) for text in unverified if text in record.get("ticked", [])]
        if outcome.verdicts:
            record["ticked"] = verified
        record["review"] = {v.criterion: v.evidence.detail for v in outcome.verdicts
                            if v.evidence and v.evidence.verified is None}
        state.save(task.number)
        edits.append(SetResults(task.number, tuple(_results_lines(outcome))))
        self._write(edits)
        events.write("task_finished", task=task.number, status=outcome.status, seconds=outcome.seconds,
                     error=outcome.error)
        self.reporter.task_finished(task, outcome)
        return outcome

    def _resumes(self, task: Task, record: dict[str, Any]) -> bool:
        """Whether the task goes on from what its handler saved: it was stopped mid-run (Ctrl-C, a
        crash) and its text is what ran.  Anything else (a failed, edited, reset task, or ``--only``)
        runs again from scratch."""
        ran = record.get("fingerprint")
        return (task.status == "IN_PROGRESS" and bool(record.get("memory")) and self.only is None
                and ran in (None, task.fingerprint))

    def _run_handler(self, handler: Handler, ctx: Context, events: EventLog) -> Result | None:
        def before_sleep(retry_state: Any) -> None:
            error = retry_state.outcome.exception()
            events.write("retry", task=ctx.task.number, attempt=retry_state.attempt_number, error=str(error))
            ctx.reporter.log(ctx.task, f"retrying after: {redact(str(error))}")

        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(handler.attempts),
            wait=wait_exponential(multiplier=self.retry_wait, min=self.retry_wait, max=30 * self.retry_wait),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(handler.run, ctx)
        except TransientError as error:
            raise TaskFailed(f"{error} (after {handler.attempts} attempts)") from error

    def _verify(self, handler: Handler, ctx: Context, result: Result, task: Task, ticked: list[str]) -> list[Verdict]:
        """Evidence for each criterion; a box a person ticked (not ralph) counts as reviewed."""
        return [
            Verdict(c.text, None if c.checked and c.text not in ticked else handler.judge(ctx, result, c.text))
            for c in task.criteria
        ]

    def _context(self, plan: Plan, step: Step, state: RunState, events: EventLog) -> Context:
        return Context(
            file=plan.file,
            task=step.task,
            params=step.params,
            memory=state.memory(step.task.number),
            resources=state.resources,
            workdir=self.path.resolve().parent,
            state_dir=state.directory,
            run_id=self.run_id,
            reporter=self.reporter,
            events=events,
            records=state.records(),
            waiting=self.warmup.waiting,
        )

    def _skip(self, steps: list[Step], reason: str, events: EventLog) -> list[Outcome]:
        """Mark ``steps`` SKIPPED in one write: after Ctrl-C, a thousand tasks cost no more than one."""
        if not steps:
            return []
        outcomes = [Outcome(s.task.number, s.task.title, "SKIPPED", error=f"skipped: {reason}") for s in steps]
        edits: list[Edit] = []
        for outcome in outcomes:
            edits += [SetStatus(outcome.number, "SKIPPED"), SetResults(outcome.number, tuple(_results_lines(outcome)))]
        self._write(edits)
        events.write("tasks_skipped", tasks=[o.number for o in outcomes], reason=reason)
        self.reporter.tasks_skipped([s.task for s in steps], outcomes)
        return outcomes

    def _interrupted(self, step: Step, events: EventLog) -> Outcome:
        """The task stays IN_PROGRESS: the next run resumes it with what its handler saved."""
        outcome = Outcome(step.task.number, step.task.title, "IN_PROGRESS", error="interrupted; run again to resume")
        self._write([SetResults(step.task.number, tuple(_results_lines(outcome)))])
        events.write("task_interrupted", task=step.task.number)
        self.reporter.task_finished(step.task, outcome)
        return outcome

    # -- the whole file ------------------------------------------------------------------

    def _final(self, plan: Plan, state: RunState, events: EventLog) -> list[Verdict]:
        """Success Criteria and Exit Conditions, checked by the handlers of tasks that produced a
        result (a FAILED task's measures count: "grain not reduced" is evidence too)."""
        file = self._current(plan.file)
        judged = (*FINISHED, "FAILED")
        done = [
            s
            for s in plan.steps
            if s.handler is not None
            and "result" in state.task(s.task.number)
            and self._status_of(file, s.task.number) in judged
        ]

        def judge(text: str) -> Evidence:
            for step in done:
                assert step.handler is not None
                if step.handler.check_for(text):
                    record = state.task(step.task.number).get("result", {})
                    ctx = self._context(plan, step, state, events)
                    return step.handler.judge(ctx, Result(**record), text)
            return Evidence(None, "no task that ran has a check for this")

        verdicts = [Verdict(c.text, None if c.checked else judge(c.text)) for c in file.success_criteria]
        exits = list(_exit_groups([Verdict(e.text, judge(e.text)) for e in file.exit_conditions]))
        edits: list[Edit] = [SetCheck(None, v.criterion, True) for v in verdicts if v.evidence and v.evidence.verified]
        state.data["review"] = {v.criterion: v.evidence.detail for v in verdicts
                                if v.evidence and v.evidence.verified is None}
        state.save()
        lines = ["**Run summary** (ralph, " + now() + ")", ""]
        lines += [_verdict_line(v) for v in verdicts]
        if exits:
            lines += ["", "Exit conditions:"] + [_verdict_line(v) for v in exits]
        edits.append(SetResults(None, tuple(lines)))
        self._write(edits)
        return verdicts + exits

    def _stale(self, plan: Plan, state: RunState, steps: list[Step]) -> list[int]:
        """DONE tasks whose text a person changed since: reported, never silently redone."""
        running = {s.task.number for s in steps}
        stale = []
        for step in plan.steps:
            fingerprint = state.task(step.task.number).get("fingerprint")
            if step.task.status in FINISHED and fingerprint and fingerprint != step.task.fingerprint:
                if step.task.number not in running:
                    stale.append(step.task.number)
        return stale

    # -- writing -------------------------------------------------------------------------

    def _write(self, edits: list[Edit]) -> None:
        """Apply edits now; if the file cannot be parsed (a person is mid-edit), keep them for later."""
        self.pending_edits.extend(edits)
        try:
            self._latest, missing = self.writer.apply(self.pending_edits)
        except ParseError as error:
            self.reporter.warn(f"cannot write to the task file yet ({error}); will retry")
            return
        except OSError as error:
            raise unwritable(self.path, error, "it keeps what ralph wrote last, and the state its progress") from None
        self.pending_edits = []
        for message in missing:
            self.unwritten.append(message)
            self.reporter.warn(f"not written: {message}")

    def _flush(self) -> None:
        if self.pending_edits:
            self._write([])
            if self.pending_edits:
                self.unwritten += [f"{e!r}" for e in self.pending_edits]

    def _current(self, fallback: TaskFile) -> TaskFile:
        return self._latest or fallback

    def _current_task(self, task: Task) -> Task:
        latest = self._latest.task(task.number) if self._latest else None
        return latest or task

    def _status_of(self, file: TaskFile, number: int) -> str:
        task = file.task(number)
        return task.status if task else "PENDING"


def _status_from(verdicts: list[Verdict]) -> str:
    evidence = [v.evidence for v in verdicts if v.evidence is not None]
    if any(e.verified is False for e in evidence):
        return "FAILED"
    if any(e.verified is None for e in evidence):
        return "NEEDS_REVIEW"
    return "DONE"


def _exit_code(file: TaskFile, *, interrupted: bool) -> int:
    by_status = {"FAILED": EXIT_FAILED, "BLOCKED": EXIT_FAILED, "NEEDS_REVIEW": EXIT_REVIEW}
    codes = [by_status.get(t.status, EXIT_OK) for t in file.tasks]
    return worst(*codes, EXIT_INTERRUPTED if interrupted else EXIT_OK)


def _result_record(result: Result) -> dict[str, Any]:
    return {"summary": result.summary, "data": result.data, "cost_usd": result.cost_usd, "files": result.files}


def _verdict_line(verdict: Verdict) -> str:
    if verdict.evidence is None:
        return f"- ✔ {verdict.criterion} — ticked by a person"
    mark = {True: "✔ verified", False: "✘ not met", None: "👁 review"}[verdict.evidence.verified]
    return f"- {mark}: {verdict.criterion} — {verdict.evidence.detail}"


def _exit_groups(exits: list[Verdict]) -> Iterator[Verdict]:
    """Merge 'OU …' / 'OR …' alternatives into the condition above them."""
    groups: list[list[Verdict]] = []
    for verdict in exits:
        if groups and normalise(verdict.criterion).startswith(ALTERNATIVE):
            groups[-1].append(verdict)
        else:
            groups.append([verdict])
    for group in groups:
        if len(group) == 1:
            yield group[0]
            continue
        results = [v.evidence.verified for v in group if v.evidence]
        verified = True if True in results else (False if all(r is False for r in results) else None)
        detail = "; ".join(f"{v.criterion}: {v.evidence.detail if v.evidence else ''}" for v in group)
        yield Verdict(" / ".join(v.criterion for v in group), Evidence(verified, detail))


def _results_lines(outcome: Outcome) -> list[str]:
    head = f"**Result** (ralph): {outcome.status} · {now()}"
    if outcome.seconds:
        head += f" · {outcome.seconds:.1f} s"
    if outcome.cost_usd is not None:
        head += f" · ${outcome.cost_usd:.4f}"
    lines = [head, ""]
    if outcome.summary:
        lines.append(f"- {outcome.summary}")
    if outcome.error:
        # A handler's own lines (a script's last output) stay lines, quoted so that no fence or
        # marker in them can reach the file's structure.
        first, *more = outcome.error.splitlines() or [""]
        lines.append(f"- Error: {first}")
        lines += [f"  > {line}".rstrip() for line in more]
    if outcome.files:
        lines.append("- Files: " + ", ".join(f"[{Path(f).name}]({quote(f)})" for f in outcome.files))
    lines += [_verdict_line(v) for v in outcome.verdicts]
    return [line.replace("\n", " ") for line in lines]

