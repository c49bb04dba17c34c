"""How long ``ralph run`` takes on one big task file, beside the same tasks in separate files.

Both are measured in the same run, as a person runs them (``python -m ralph run``): N trivial
tasks (``manual``, or ``shell`` running ``true``) in one file, then N files of one task each in
one ``ralph run`` call.  Writing a task's outcome should cost what changed, not the file's size:
the two times should be close.  Then a run of the big file is stopped by SIGTERM once it is
under way, and the time from the signal to ralph's exit is printed (it must stay under 2 s at
any size; every remaining task is marked in one write).  Last, one task whose criterion is a
1 MB line.

    .venv/bin/python bench/big_file.py [-n 1000] [--handler manual|shell]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = "# RALPH-TASK: Big file\n\n## Success Criteria\n- [ ] All done\n\n## Tasks\n\n"
FOOTER = "## Exit Conditions\n- All done\n"


def task(number: int, handler: str) -> str:
    body = "```bash\ntrue\n```\n" if handler == "shell" else ""
    return (
        f"### {number}. Task {number}\n**Priority**: LOW\n**Status**: PENDING\n**Handler**: {handler}\n"
        f"**Acceptance Criteria**:\n- [ ] Criterion of task {number}\n\n{body}\n---\n\n"
    )


def write_files(root: Path, count: int, handler: str) -> tuple[Path, list[Path]]:
    big = root / "one" / "RALPH-001-big.md"
    big.parent.mkdir(parents=True)
    big.write_text(HEADER + "".join(task(n, handler) for n in range(1, count + 1)) + FOOTER)
    many = []
    (root / "many").mkdir()
    for n in range(1, count + 1):
        path = root / "many" / f"RALPH-{n:04d}-small.md"
        path.write_text(HEADER + task(1, handler) + FOOTER)
        many.append(path)
    return big, many


def ralph(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "ralph", "run", *map(str, args)]


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall-clock seconds, and CPU seconds (user + system: what other work on the machine does not inflate)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 3):
        raise SystemExit(f"ralph exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start, _children_cpu() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sigterm_stop(big: Path, started_tasks: int) -> tuple[float, int]:
    """Seconds from SIGTERM to exit, sent once ``started_tasks`` tasks were started, and the exit code."""
    events = big.parent / ".ralph" / big.stem / "events.jsonl"
    process = subprocess.Popen(ralph(big.name), cwd=big.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        text = events.read_text() if events.exists() else ""
        if text.count('"task_started"') >= started_tasks:
            break
        time.sleep(0.01)
    sent = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    code = process.wait()
    return time.perf_counter() - sent, code


def long_line(root: Path) -> Path:
    """One shell task whose criterion is a 1 MB line of backticked words."""
    path = root / "long" / "RALPH-001-long.md"
    path.parent.mkdir()
    criterion = "`x` " * 250_000 + "exists"
    path.write_text(task(1, "shell").replace("Criterion of task 1", criterion).join([HEADER, FOOTER]))
    return path


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("-n", type=int, default=1000, help="tasks (and separate files)")
    options.add_argument("--handler", choices=("manual", "shell"), default="manual")
    args = options.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        big, many = write_files(root, args.n, args.handler)
        size = big.stat().st_size
        one = timed(ralph(big.name), big.parent)
        separate = timed(ralph(*(p.name for p in many)), many[0].parent)
        big.unlink()
        big, _ = write_files(root / "again", args.n, args.handler)
        stop, code = sigterm_stop(big, min(10, args.n))
        long = long_line(root)
        line = timed(ralph(long.name), long.parent)
    print(f"{args.n} {args.handler} tasks on {os.cpu_count()} cores ({size / 1024:.0f} KiB file):")
    for name, (wall, cpu) in (("one file", one), ("separate files", separate)):
        print(f"  {name:<15} {wall:7.2f} s  ({wall / args.n * 1000:.1f} ms a task; {cpu:.2f} s of CPU)")
    print(f"  SIGTERM → exit  {stop:7.2f} s  (exit {code})")
    print(f"  1 MB criterion  {line[0]:7.2f} s  (one shell task; {line[1]:.2f} s of CPU)")


if __name__ == "__main__":
    main()
