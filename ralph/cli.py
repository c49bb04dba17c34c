"""``ralph``: the command line, a thin layer over the engine.

Exit status (ralph/exits.py; over several files the most telling one): 130 interrupted,
2 bad input or usage, 1 a task failed or was blocked, 3 some criteria are left for a person
to review, 0 every task done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, exits
from .errors import RalphError

if TYPE_CHECKING:
    from .plan import Plan, Step

EXIT_USAGE = exits.USAGE


class Declined(Exception):
    """The person answered no to the plan: nothing was run or written."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        code = int(args.command(args))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except RalphError as error:
        print(f"ralph: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # `ralph status FILE --json | head`: the reader has what it wanted. Python's last flush
        # of stdout at exit would fail again, so stdout goes to /dev/null first; exit 1, as
        # Python's documentation advises and rich does for the tables.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # the machine failed (what ralph writes itself says more; this is the rest)
        where = f"{error.filename}: " if error.filename else ""
        print(f"ralph: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ralph", description="Run RALPH markdown task files.")
    parser.add_argument("--version", action="version", version=f"ralph {__version__}")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run the pending tasks of task files, resuming where they stopped")
    run.add_argument("files", nargs="+", type=Path, metavar="FILE")
    run.add_argument("--only", type=int, metavar="N", help="run task N only (even if done)")
    run.add_argument("--from", dest="start_from", type=int, metavar="N", help="start at task N")
    run.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    run.add_argument("--yes", action="store_true", help="do not ask before renting a machine")
    run.add_argument("--max-cost-usd", type=_positive_usd, metavar="USD",
                     help="stop the run before it costs more (overrides ralph.yaml's max_cost_usd)")
    run.add_argument("--json", action="store_true",
                     help="print the outcomes as JSON on stdout (what a person reads goes to stderr)")
    loudness = run.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="only warnings, the summary and what is open for review")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="also each criterion's evidence as each task ends")
    run.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                     help="run up to N files at once, each in its own process (max_cost_usd split evenly)")
    run.set_defaults(command=_run)

    status = commands.add_parser("status", help="show the tasks of a file (or of every task file in a folder)")
    status.add_argument("file", type=Path, metavar="FILE|DIR")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(command=_status)

    check = commands.add_parser("check", help="validate files, handlers and parameters without running")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(command=_check)

    accept = commands.add_parser("accept", help="accept a task left for review: tick its open boxes, mark it DONE")
    accept.add_argument("file", type=Path, metavar="FILE")
    accept.add_argument("task", type=int, metavar="N")
    accept.set_defaults(command=_accept)

    new = commands.add_parser("new", help="create the next RALPH-00N-slug.md from a template")
    new.add_argument("title", nargs="?", help="the experiment's title (not with --from)")
    new.add_argument("--from", dest="source", type=Path, metavar="FILE",
                     help="copy this task file as the next number, ralph's results, statuses and ticks cleared")
    new.add_argument("--dir", type=Path, help="where to create it (default: roadmap/ralph if present, else .)")
    new.set_defaults(command=_new)

    handlers = commands.add_parser("handlers", help="list the handlers and their parameters")
    handlers.set_defaults(command=_handlers)
    return parser


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from . import machine_readable
    from .console import ConsoleReporter
    from .runner import Runner

    if args.dry_run:
        return exits.worst(*(_dry_run(path, args) for path in args.files))
    if args.jobs > 1 and len(args.files) > 1:
        return _run_side_by_side(args)
    loudness = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    reporter = ConsoleReporter(Console(highlight=False, stderr=args.json), loudness=loudness)
    codes, runs = [], []
    for path in args.files:
        runner = Runner(path, reporter, only=args.only, start_from=args.start_from, max_cost_usd=args.max_cost_usd,
                        before_start=_show_plan(args))
        try:
            summary = runner.run()
            codes.append(summary.exit_code)
            runs.append(machine_readable.run(summary))
        except Declined:
            print("ralph: not confirmed: nothing was run or written", file=sys.stderr)
            return exits.FAILED
        except RalphError as error:  # this file's input is bad: the others still run
            if len(args.files) == 1 and not args.json:
                raise
            print(f"ralph: {error}", file=sys.stderr)
            codes.append(error.exit_code)
            runs.append({"file": str(path), "exit_code": error.exit_code, "error": str(error)})
        if codes[-1] == exits.INTERRUPTED:
            break
    if args.json:
        _print_json({"exit_code": exits.worst(*codes), "runs": runs})
    return exits.worst(*codes)


def _print_json(data: object) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    print()


def _run_side_by_side(args: argparse.Namespace) -> int:
    """``--jobs N``: every file's plan first (one question for them all), then the files in parallel."""
    from .parallel import run_files

    planned = exits.worst(*(_dry_run(path, args) for path in args.files))
    if planned:
        return planned
    if not args.yes and sys.stdin.isatty() and sys.stdout.isatty():
        try:
            answer = input(f"Run these {len(args.files)} files, {args.jobs} at once? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("ralph: not confirmed: nothing was run or written", file=sys.stderr)
            return 1
    return run_files(args.files, args.jobs, only=args.only, start_from=args.start_from,
                     max_cost_usd=args.max_cost_usd)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of files, at least 1, not {text!r}")
    return int(text)


def _positive_usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive amount of US dollars, not {text!r}")
    return value


def _show_plan(args: argparse.Namespace) -> Callable[[Plan, list[Step]], None]:
    """What a real run does once its input is valid, before anything is written: print the plan and,
    when it rents a machine and a person is at the terminal, ask (``--yes`` does not)."""

    def show(plan: Plan, steps: list[Step]) -> None:
        from .preview import preview

        if not steps or args.quiet:
            return
        shown = preview(plan, steps, max_cost_usd=args.max_cost_usd)
        print("\n".join(shown.lines()), file=sys.stderr if args.json else sys.stdout, flush=True)
        if shown.rents and not args.yes and sys.stdin.isatty() and sys.stdout.isatty():
            try:
                answer = input("Proceed? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                raise Declined

    return show


def _dry_run(path: Path, args: argparse.Namespace) -> int:
    from .plan import make_plan, missing_env
    from .preview import preview
    from .runner import select
    from .state import RunState, state_dir_for

    plan = make_plan(path)
    steps = select(plan, RunState(state_dir_for(path)), only=args.only, start_from=args.start_from)
    problems = sorted([p for s in steps for p in s.problems] + missing_env(steps), key=lambda p: p.line)
    for problem in problems:
        print(f"{problem.path or path}:{problem.line}: {problem.severity}: {problem.message}")
    if any(p.severity == "error" for p in problems):
        return 2
    print("\n".join(preview(plan, steps, max_cost_usd=args.max_cost_usd).lines()))
    return 0


def _status(args: argparse.Namespace) -> int:
    from .config import handler_name, load_config
    from .parser import parse_file

    if args.file.is_dir():
        return _status_of_folder(args.file, args.json)
    file, _ = parse_file(args.file)
    config = load_config(args.file)
    names = {t.number: handler_name(t, config) for t in file.tasks}
    if args.json:
        from . import machine_readable

        _print_json(machine_readable.status(file, names))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(file.title), title_justify="left")
    for column in ("#", "task", "priority", "status", "criteria", "handler"):
        table.add_column(column)
    for task in file.tasks:
        ticked = sum(c.checked for c in task.criteria)
        table.add_row(
            str(task.number),
            escape(task.title),
            task.priority or "",
            task.status,
            f"{ticked}/{len(task.criteria)}",
            names[task.number] or "—",
        )
    Console(highlight=False).print(table)
    return 0


def _status_of_folder(folder: Path, as_json: bool) -> int:
    """One line per task file below ``folder``: how many tasks stand where, what they cost."""
    from . import machine_readable
    from .config import handler_name, load_config
    from .parser import parse_file

    reports: list[dict[str, Any]] = []
    for path in sorted(p for p in folder.rglob("RALPH-*.md") if ".ralph" not in p.relative_to(folder).parts):
        try:
            file, _ = parse_file(path)
        except RalphError as error:
            reports.append({"file": str(path), "error": str(error)})
            continue
        config = load_config(path)
        reports.append(machine_readable.status(file, {t.number: handler_name(t, config) for t in file.tasks}))
    if as_json:
        _print_json({"folder": str(folder), "files": reports})
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(str(folder)), title_justify="left")
    for column in ("file", "tasks", "where they stand", "review", "cost", "run"):
        table.add_column(column)
    for report in reports:
        if "error" in report:
            table.add_row(escape(report["file"]), "", f"[red]{escape(report['error'])}[/]", "", "", "")
            continue
        counts: dict[str, int] = {}
        for task in report["tasks"]:
            counts[task["status"]] = counts.get(task["status"], 0) + 1
        standing = ", ".join(f"{n} {status}" for status, n in counts.items())
        holder = report["lock_holder"]
        running = f"running (pid {holder.get('pid', '?')})" if report["locked"] else ""
        table.add_row(escape(report["file"]), str(len(report["tasks"])), standing,
                      str(len(report["review"])) if report["review"] else "",
                      f"${report['cost_usd']:.4f}" if report["cost_usd"] else "", running)
    Console(highlight=False).print(table)
    return 0


def _check(args: argparse.Namespace) -> int:
    from . import machine_readable
    from .handler import Problem
    from .plan import make_plan, missing_env

    failed = False
    unset = False  # a variable a handler needs is not set: exit 2, as run and --dry-run do
    reports = []
    for path in args.files:
        try:
            plan = make_plan(path)
        except RalphError as error:
            if not args.json:
                print(error if error.path else f"{path}:{error.line or 1}: {error.message}")
            reports.append(machine_readable.problems(path, [Problem(error.line or 1, error.message)], None))
            failed = True
            continue
        missing = missing_env(plan.steps)
        unset = unset or bool(missing)
        found = sorted(plan.problems + missing, key=lambda p: p.line)
        reports.append(machine_readable.problems(path, found, len(plan.file.tasks)))
        failed = failed or any(p.severity == "error" for p in found)
        if args.json:
            continue
        for problem in found:
            print(f"{problem.path or path}:{problem.line}: {problem.severity}: {problem.message}")
        if not found:
            print(f"{path}: ok ({len(plan.file.tasks)} tasks)")
    code = EXIT_USAGE if failed or unset else 0
    if args.json:
        _print_json({"exit_code": code, "files": reports})
    return code


def _accept(args: argparse.Namespace) -> int:
    from .review import accept

    task = accept(args.file, args.task)
    print(f"{args.file}: task {task.number} {task.title}: DONE (accepted)")
    return 0


def _new(args: argparse.Namespace) -> int:
    from .template import copy_task_file, create_task_file

    if args.source is not None:
        if args.title:
            raise RalphError("give a title or --from FILE, not both")
        print(copy_task_file(args.source, args.dir))
        return 0
    if not args.title:
        raise RalphError("ralph new needs a title (or --from FILE)")
    directory = args.dir or (Path("roadmap/ralph") if Path("roadmap/ralph").is_dir() else Path("."))
    print(create_task_file(directory, args.title))
    return 0


def _handlers(args: argparse.Namespace) -> int:
    from .registry import Registry

    registry = Registry()
    for name in registry.names():
        try:
            handler = registry.load(name)
        except RalphError as error:
            print(f"{name}: cannot be loaded ({error.message})")
            continue
        cleanup = " (clean-up: runs even after a failure)" if handler.cleanup else ""
        print(f"{name}{cleanup}")
        for line in handler.help().splitlines():
            print(f"    {line}".rstrip())
        for key, spec in handler.params.items():
            default = "required" if spec.required else f"default {spec.default!r}"
            print(f"    - {key} ({default}): {spec.help}")
    return 0
