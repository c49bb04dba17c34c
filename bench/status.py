"""How long ``ralph status --json`` takes, as a person runs it, beside ``python -c pass``.

Runs each command N times as a subprocess (the cost a person sees: interpreter start,
imports, parse) and prints the median and spread, on the real example and on a generated
1,000-task file, plus the in-process parse time of each file.

    .venv/bin/python bench/status.py [-n 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ralph.parser import parse_file

EXAMPLE = Path(__file__).resolve().parents[1] / "roadmap" / "ralph" / "RALPH-001-grain-reduction.md"


def big_file(tasks: int) -> str:
    """A task file shaped like the example, with ``tasks`` tasks of three criteria and a fence."""
    parts = ["# RALPH-TASK: Benchmark\n\n## Success Criteria\n- [ ] Tout marche\n\n## Tasks\n\n"]
    for n in range(1, tasks + 1):
        parts.append(
            f"### {n}. Tâche numéro {n}\n**Priority**: HIGH\n**Status**: PENDING\n**Acceptance Criteria**:\n"
            f"- [ ] Premier critère {n}\n- [x] Deuxième critère {n}\n  - [ ] Sous-critère {n}\n\n"
            f"```\nNode 1: KSampler\n         → params: steps=30, CFG=7.0\n```\n\n**Notes**: note {n}\n\n---\n\n"
        )
    parts.append("## Exit Conditions\n- Fini\n")
    return "".join(parts)


def timed(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    return times


def parse_ms(path: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        parse_file(path)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("-n", type=int, default=15, help="runs per command")
    runs = options.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "RALPH-999-big.md"
        big.write_text(big_file(1000), encoding="utf-8")
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"], None),
            ("ralph status --json example", [sys.executable, "-m", "ralph", "status", "--json", str(EXAMPLE)], EXAMPLE),
            ("ralph status --json 1,000 tasks", [sys.executable, "-m", "ralph", "status", "--json", str(big)], big),
        ]
        print(f"{'command':<34} {'median ms':>10} {'min':>8} {'max':>8} {'parse ms':>9}   ({runs} runs)")
        for name, command, path in rows:
            times = timed(command, runs)
            parse = f"{parse_ms(path, 5):9.1f}" if path else f"{'':9}"
            print(f"{name:<34} {statistics.median(times):10.1f} {min(times):8.1f} {max(times):8.1f} {parse}")
        lines = big.read_text(encoding="utf-8").count("\n")
        print(f"(the 1,000-task file has {lines} lines, {big.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
