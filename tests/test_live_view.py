"""The live view in a real terminal (tmux): no repeated tables, no stray log lines, elapsed time,
the log's tail and ComfyUI-style progress in steps while a task runs, a line while clean-up runs."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ralph.context import Context
from ralph.handler import Evidence, Handler, Param, Result, criterion
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


class Noisy(Handler):
    """A task as a pod run looks from the terminal: a library that configured logging at INFO
    (as some SDKs do) and logs each HTTP request, the task's own log lines, a step counter. It
    goes on until the test creates ``release``, so that the test sees it running."""

    name = "test.noisy"
    params = {"release": Param(str, "")}

    def run(self, ctx: Context) -> Result:
        logging.basicConfig(level=logging.INFO)  # what a library does behind ralph's back
        release = ctx.path(ctx.params["release"]) if ctx.params["release"] else None
        with ctx.progress("ComfyUI base", 30, unit="steps") as bar:
            step = 0
            while step < 3 or (release is not None and not release.exists()):
                step += 1
                logging.getLogger("httpx").info('HTTP Request: GET http://127.0.0.1/history "HTTP/1.1 200 OK"')
                ctx.log(f"sampler step {step}")
                bar.update(min(step, 30), 30)
                time.sleep(0.05)  # the task's work; the test waits on what the screen shows, not on this
        logging.getLogger("ralph.test").warning("disk almost full")
        return Result(summary="ran")

    @criterion(r"ran")
    def ran(self, ctx: Context, result: Result, text: str) -> Evidence:
        return Evidence(True, "ran")


class Tidy(Noisy):
    """A clean-up task (as runpod.terminate): runs after a failure or Ctrl-C."""

    name = "test.tidy"
    cleanup = True


def task(number: int, title: str, params: dict[str, Any], handler: str = "noisy") -> str:
    import yaml

    block = f"```yaml\n{yaml.safe_dump(params).strip()}\n```\n\n" if params else ""
    return (f"### {number}. {title}\n**Priority**: HIGH\n**Status**: PENDING\n**Handler**: {handler}\n"
            f"**Acceptance Criteria**:\n- [ ] It ran\n\n{block}---\n\n")


class Terminal:
    """ralph run inside a tmux session of its own (its own server socket), 100×30."""

    def __init__(self, folder: Path) -> None:
        self.socket = f"ralph-test-{uuid.uuid4().hex[:8]}"
        self.folder = folder

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True).stdout

    def start(self, file: str) -> None:
        env = f"PYTHONPATH={ROOT} TERM=xterm-256color"
        command = f"cd {self.folder} && {env} {sys.executable} -m ralph run {file}; echo RALPH-EXIT-$?; sleep 600"
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-5000")

    def showing(self, text: str) -> str | None:
        """The screen and its scrollback once ``text`` is in it, else None."""
        screen = self.screen()
        return screen if text in screen else None

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def terminal(tmp_path: Path):
    t = Terminal(tmp_path)
    yield t
    t.close()


def project(folder: Path, *tasks: str) -> str:
    (folder / "ralph.yaml").write_text("handlers:\n  noisy: tests.test_live_view:Noisy\n  tidy: "
                                       "tests.test_live_view:Tidy\n", "utf-8")
    name = "RALPH-001-live.md"
    text = ("# RALPH-TASK: Live view\n\n## Overview\nA check of the terminal view.\n\n## Tasks\n\n" + "".join(tasks)
            + "## Exit Conditions\n- It ran\n")
    (folder / name).write_text(text, "utf-8")
    return name


def test_the_live_view_holds_in_a_real_terminal(tmp_path: Path, terminal: Terminal) -> None:
    name = project(tmp_path, task(1, "First sampler", {"release": "release"}), task(2, "Second sampler", {}))
    terminal.start(name)
    running = wait_for(lambda: terminal.showing("sampler step 4"), 60, "the running task's log tail")
    assert "steps" in running and "/30 steps" in running, running  # ComfyUI progress in steps, not bytes
    row = next(line for line in running.splitlines() if "First sampler" in line and "IN_PROGRESS" in line)
    assert row.rstrip().endswith(" s"), row  # its elapsed time
    (tmp_path / "release").write_text("go")
    done = wait_for(lambda: terminal.showing("RALPH-EXIT-"), 60, "ralph to finish")
    assert "HTTP Request" not in done, done
    assert done.count("disk almost full") == 2, "each task's warning once, through the console"
    live_rows = [line for line in done.splitlines() if re.match(r"\s*1\.\s+First sampler\s+[A-Z_]+\s+noisy", line)]
    assert len(live_rows) == 1, "the task list is drawn once, not once per redraw:\n" + done


def test_clean_up_says_so_and_an_interrupted_task_keeps_its_time(tmp_path: Path, terminal: Terminal) -> None:
    name = project(
        tmp_path,
        task(1, "Sampler", {"release": "release"}),
        task(2, "Never reached", {}),
        task(3, "Terminate the pod", {}, handler="tidy"),
    )
    terminal.start(name)
    wait_for(lambda: terminal.showing("sampler step 3"), 60, "the task to run")
    terminal.tmux("send-keys", "C-c")
    done = wait_for(lambda: terminal.showing("RALPH-EXIT-"), 60, "ralph to stop")
    summary = done[done.index("ralph run"):]
    sampler = next(line for line in summary.splitlines() if "Sampler" in line)
    assert "0.0 s" not in sampler, sampler  # it ran for a while before the interrupt
    assert "cleaning up: task 3 Terminate the pod (test.tidy)" in done, done
    live_row = next(line for line in done.splitlines() if re.match(r"\s*1\.\s+Sampler\s+IN_PROGRESS", line))
    assert not live_row.rstrip().endswith(" s"), "an interrupted task's clock stops"
    assert "HTTP Request" not in done
