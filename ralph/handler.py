"""What a handler is: the contract between ralph's loop and the code that does a task.

A handler is a small class::

    class Greet(Handler):
        \"\"\"Say hello (the docstring is the help `ralph handlers` shows).\"\"\"

        name = "greet"
        params = {"who": Param(str, "world", "whom to greet")}

        def run(self, ctx: Context) -> Result:
            ctx.log(f"hello {ctx.params['who']}")
            return Result(summary="greeted", data={"who": ctx.params["who"]})

        @criterion(r"greeted|salue")
        def greeted(self, ctx: Context, result: Result, text: str) -> Evidence:
            return Evidence(True, f"said hello to {result.data['who']}")

``run`` does the work and raises ``TaskFailed``, ``TaskBlocked`` or ``TransientError``
(retried with backoff).  Each ``@criterion`` method verifies the acceptance criteria whose
text its pattern matches (case- and accent-insensitive; the method gets the criterion's own
text to read paths or numbers from) and returns evidence; a criterion
that no check matches is left for a person to review.  A handler with ``cleanup = True``
runs even after an earlier task failed or the run was interrupted.

``ctx.memory`` is the handler's own persistent memory.  A task stopped mid-run (Ctrl-C, a
crash) resumes with all of it; a task redone from scratch (failed, edited, ``--only``) keeps
only the keys in ``remembers``: remote work worth finding again, never a finished local result.

``provides`` and ``needs`` name the facts (ralph/facts.py) a handler hands to the tasks after
it (``ctx.publish(fact)``) and those it reads from earlier ones (``ctx.fact(Kind)``): ``ralph
check`` reports a need that no earlier task provides, at the task's line.

``needs_env`` names the environment variables a handler cannot work without (a provider's
API key): a run, a dry run and ``ralph check`` refuse a file whose tasks need one that is not
set, before anything is written.  ``estimate`` tells, before anything runs, what the task will
do and what it will cost: the plan ``ralph run --dry-run`` prints and a real run shows first.

Handlers are found through the ``ralph.handlers`` entry-point group (see registry.py).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .facts import Fact, Need
from .parser import normalise
from .secrets import redact

if TYPE_CHECKING:
    from .context import Context, EstimateContext, RunInfo
    from .model import Task, TaskFile


class TaskFailed(Exception):
    """The task ran and did not do what it had to."""


class TaskBlocked(Exception):
    """The task could not start: something it needs is missing (a key, an earlier result)."""


class TransientError(Exception):
    """A failure worth retrying (a timeout, a 5xx, no capacity right now)."""


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, raised inside ``run``: a handler may catch it to cancel remote work
    (interrupt a ComfyUI prompt), then must re-raise.  A BaseException, like
    KeyboardInterrupt, so an ``except Exception`` cannot swallow it."""


REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter a handler accepts, from the task's yaml block or ralph.yaml."""

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    help: str = ""
    choices: tuple[Any, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass
class Evidence:
    """What a check found.  ``verified`` True ticks the box; False fails the task;
    None means the check could not decide, so a person reviews it with ``detail``."""

    verified: bool | None
    detail: str


@dataclass
class Result:
    """What ``run`` reports: recorded in the state and summarised in the task file."""

    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    cost_usd: float | None = None
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """A static problem found by ``ralph check``, at a line of the task file."""

    line: int
    message: str
    severity: str = "error"  # or "warning"
    path: str | None = None  # the file the line is in when it is not the task file (ralph.yaml)


@dataclass(frozen=True)
class Figure:
    """A number ralph estimated and how: "measured on 2026-11-20", "default: 5 MB/s (…)"."""

    value: float
    basis: str


@dataclass(frozen=True)
class Rental:
    """A machine that bills from its creation until it is deleted: what prices the run."""

    per_hour: Figure | None  # the rate the estimate uses (its basis names the offer); None: unknown
    max_hours: float  # the machine deletes itself after this long, whatever happens
    highest_per_hour: float | None  # the dearest candidate the create may end up with

    @property
    def worst_case_usd(self) -> float | None:
        """The most it can cost: its whole lifetime at the dearest candidate's rate."""
        return None if self.highest_per_hour is None else self.max_hours * self.highest_per_hour


@dataclass(frozen=True)
class Estimate:
    """What a task will do and consume, told before it runs (no network but a provider's prices).

    ``lines`` are for people; the numbers are what the plan adds up over the tasks.
    ``machine_seconds`` is the time the task keeps the machine busy, which a rented one bills.
    """

    lines: tuple[str, ...] = ()
    upload_bytes: int = 0  # from this machine to the machine that works
    download_bytes: int = 0  # fetched by that machine itself (sizes known)
    unknown_downloads: int = 0  # downloads whose size nobody gave
    images: int = 0
    machine_seconds: Figure | None = None
    rental: Rental | None = None  # set by a handler that rents a machine


BACKTICKED = re.compile(r"`([^`]+)`")  # a `path` or `command` a criterion names, for its check to read


CheckMethod = Callable[[Any, "Context", Result, str], Evidence]
# Criterion patterns are regexes such as `[^`]+`.*\b(exist|...)`, whose search takes time
# quadratic in the text where the first part matches often: a criterion longer than a
# person writes is left for a person to review rather than matched.
LONGEST_MATCHED = 2000


def criterion(pattern: str) -> Callable[[CheckMethod], CheckMethod]:
    """Mark a handler method as the check for criteria matching ``pattern`` (a regex on
    ``normalise``d text: lower-case, no accents)."""
    compiled = re.compile(pattern)

    def mark(method: CheckMethod) -> CheckMethod:
        method.__ralph_criterion__ = compiled  # type: ignore[attr-defined]
        return method

    return mark


class Handler:
    name: ClassVar[str]
    params: ClassVar[Mapping[str, Param]] = {}
    cleanup: ClassVar[bool] = False
    attempts: ClassVar[int] = 3  # tries when run raises TransientError
    # Environment variables the handler needs → what each is and where to get it.
    needs_env: ClassVar[Mapping[str, str]] = {}
    provides: ClassVar[tuple[type[Fact], ...]] = ()  # facts run publishes for the tasks after it
    needs: ClassVar[tuple[Need, ...]] = ()  # facts run reads, which an earlier task must provide
    # Memory keys that name remote work still worth finding when the task is redone (a pod's
    # id and name): the rest of what the handler saved is forgotten, so the work runs again.
    remembers: ClassVar[frozenset[str]] = frozenset()
    # Modules run needs that are slow to import: taken in the background once the run starts
    # (ralph/warmup.py), so planning never waits for them and later tasks find them loaded.
    warm_imports: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: Context) -> Result | None:
        raise NotImplementedError

    def before_run(self, run: RunInfo) -> None:
        """Called once per run, before any task, for each handler the file uses (e.g. to reap
        pods an earlier crash left behind).  Problems here are warnings; the run goes on."""

    def after_run(self, run: RunInfo) -> None:
        """Called once at the end of every run, even an interrupted one."""

    def validate(self, file: TaskFile, task: Task, params: dict[str, Any]) -> list[Problem]:
        """Problems ``ralph check`` can find without running anything (none by default)."""
        return []

    def estimate(self, task: Task, params: dict[str, Any], context: EstimateContext) -> Estimate | None:
        """What the task will do and consume, from its parameters (None: nothing worth telling)."""
        return None

    def kept_on_redo(self, memory: Mapping[str, Any]) -> dict[str, Any]:
        """What survives of the memory when the task runs again from scratch (``remembers``)."""
        return {key: value for key, value in memory.items() if key in self.remembers}

    @classmethod
    def help(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    def check_for(self, criterion_text: str) -> Callable[[Context, Result, str], Evidence] | None:
        """The bound check whose pattern matches the criterion, if any (first defined wins)."""
        if len(criterion_text) > LONGEST_MATCHED:
            return None
        folded = normalise(criterion_text)
        for klass in type(self).__mro__:
            for attribute in vars(klass).values():
                pattern = getattr(attribute, "__ralph_criterion__", None)
                if pattern is not None and pattern.search(folded):
                    return attribute.__get__(self, type(self))  # type: ignore[no-any-return]
        return None

    def judge(self, ctx: Context, result: Result, criterion_text: str) -> Evidence:
        """The evidence this handler's checks find for one criterion (a check that cannot run,
        or no check at all, leaves it for a person to review)."""
        check = self.check_for(criterion_text)
        if check is None:
            return Evidence(None, "needs a person's review: no check covers this criterion")
        try:
            return check(ctx, result, criterion_text)
        except Exception as error:  # a failing check cannot verify anything
            return Evidence(None, redact(f"check could not run: {type(error).__name__}: {error}"))
