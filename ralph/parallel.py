"""``ralph run A.md B.md --jobs N``: up to N task files at once, each in its own ralph process.

A process per file keeps each run what it is alone: its own lock, state, pod or endpoint, and its own
signal handling (the runner stops a task from the main thread's signal handler, which one process
can have only once). This process prints every child's lines prefixed with its file's name, passes
Ctrl-C on to all of them, and exits with the status that means the most, as a sequential run does.
``max_cost_usd`` is shared by splitting it evenly: no file may spend more than its share, so together
they never pass it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import exits


def run_files(paths: Sequence[Path], jobs: int, *, only: int | None, start_from: int | None,
              max_cost_usd: float | None) -> int:
    """Run every file, at most ``jobs`` at once; the combined exit status."""
    width = max(len(p.name) for p in paths)
    share = max_cost_usd / len(paths) if max_cost_usd else None
    codes: list[int] = []
    running: list[subprocess.Popen[bytes]] = []
    print_lock = threading.Lock()
    interrupted = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        interrupted.set()
        for child in list(running):
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    slots = threading.Semaphore(jobs)
    threads = []
    try:
        for path in paths:
            while not slots.acquire(timeout=0.2):
                pass  # a bounded wait keeps the main thread free for Ctrl-C
            if interrupted.is_set():
                slots.release()
                break
            command = [sys.executable, "-m", "ralph", "run", str(path), "--yes"]
            command += ["--only", str(only)] if only is not None else []
            command += ["--from", str(start_from)] if start_from is not None else []
            command += ["--max-cost-usd", f"{share:.6f}"] if share else []
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "160"},
                                     start_new_session=True)  # Ctrl-C reaches it once, from here
            running.append(child)
            thread = threading.Thread(target=_relay, args=(child, path.name.ljust(width), print_lock, codes, slots))
            thread.start()
            threads.append(thread)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupted.is_set():
        return 130
    return combined(codes)


def combined(codes: Sequence[int]) -> int:
    """What the files' statuses mean together: the one exit policy (ralph/exits.py)."""
    return exits.worst(*codes)


def _relay(child: subprocess.Popen[bytes], label: str, lock: threading.Lock, codes: list[int],
           slots: threading.Semaphore) -> None:
    assert child.stdout is not None
    for raw in child.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            print(f"{label} │ {line}", flush=True)
    codes.append(child.wait())
    slots.release()
