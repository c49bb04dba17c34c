"""One iteration: the agent CLI as a process of its own, its output logged as it comes.

The prompt is the process's standard input, read from a file (an agent that never reads it
cannot block ralph).  Its output, standard error included, goes to the iteration's log with
secrets masked; a flood of output is logged up to ``LOG_LIMIT`` bytes, then only counted,
and its last lines close the log.  When the agent exits, or at its timeout, or on Ctrl-C,
its whole process group is killed: nothing it started outlives the iteration.
"""

from __future__ import annotations

import codecs
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ralph import children
from ralph.secrets import redact, secret_values

LOG_LIMIT = 4 * 1024 * 1024  # bytes of one iteration's output written to its log
TAIL_LINES = 20  # the last lines kept for the notes and the end of the log
_LONGEST_LINE = 64 * 1024  # output without a newline is cut into pieces this long
_CHUNK = 64 * 1024


@dataclass
class AgentRun:
    """How one iteration's process ended."""

    exit_code: int | None  # None: killed at its timeout
    seconds: float
    tail: list[str] = field(default_factory=list)  # its last lines, secrets masked
    unlogged_bytes: int = 0  # output past LOG_LIMIT, counted but not written


def run_agent(argv: list[str], *, prompt: Path, cwd: Path, env: dict[str, str], log: Path, timeout: float,
              show: Callable[[str], None]) -> AgentRun:
    """Run ``argv`` with ``prompt`` as its standard input; ``show`` gets each line as it comes.

    Raises ``FileNotFoundError``/``PermissionError`` when the command cannot be started.
    """
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with open(prompt, "rb") as stdin, open(log, "w", encoding="utf-8") as out, children.running(
        argv, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as process:
        assert process.stdout is not None
        logger = _Logger(out, tail, show)
        reader = threading.Thread(target=logger.copy, args=(process.stdout,), daemon=True)
        reader.start()
        code: int | None = None
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # after its exit, at the timeout or on Ctrl-C: the group goes, the log is whole
            children.kill(process)
            process.wait()
            reader.join()
            logger.close()
    return AgentRun(code, time.monotonic() - started, list(tail), logger.unlogged)


class _Logger:
    """Copies the agent's output into its log, masked, within ``LOG_LIMIT``."""

    def __init__(self, out: IO[str], tail: deque[str], show: Callable[[str], None]) -> None:
        self.out = out
        self.tail = tail
        self.show = show
        self.logged = 0
        self.unlogged = 0

    def copy(self, stream: IO[bytes]) -> None:
        for piece in _masked_pieces(stream):
            line = piece.rstrip("\r\n")
            if line.strip():
                self.tail.append(line[:500])
                self.show(line)
            size = len(piece.encode("utf-8"))
            if self.logged + size <= LOG_LIMIT:
                self.out.write(piece)
                self.logged += size
            else:
                self.unlogged += size

    def close(self) -> None:
        if self.unlogged:
            self.out.write(f"\n[ralph: {self.unlogged} more bytes of output not logged; its last lines were:]\n")
            self.out.write("\n".join(self.tail) + "\n")


def _masked_pieces(stream: IO[bytes]) -> Iterator[str]:
    """The stream's text in lines (a line longer than ``_LONGEST_LINE`` in pieces), secrets masked.

    A piece is cut only where no secret can straddle the cut: the end of the text, less the
    length of the longest secret, stays behind to be masked with what follows it.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    keep = max((len(value) for value in secret_values()), default=1) - 1
    pending = ""
    while chunk := stream.read1(_CHUNK):  # type: ignore[attr-defined]
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield redact(line) + "\n"
        while len(pending) > _LONGEST_LINE:
            pending = redact(pending)
            cut = len(pending) - keep
            yield pending[:cut]
            pending = pending[cut:]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield redact(pending)
