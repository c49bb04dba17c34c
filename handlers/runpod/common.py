"""What the RunPod handlers (runpod.create, runpod.terminate, pod.shell) share: the API from the
user's key, the task file's identity as a pod owner, and the run hooks that reap orphans and keep
a held pod's heartbeat going from the first moment of a run to its last.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ralph.handlers.facts import MachineHandle
from ralph.handlers.machines import session
from ralph.handlers.runpod import reaper
from ralph.handlers.runpod.api import KEY_VARIABLE, APIError, AuthError, BalanceError, RunPodAPI, TransientAPIError

from ralph.context import Context, RunInfo
from ralph.handler import Handler, TaskBlocked, TaskFailed, TransientError

CONSOLE = "https://www.runpod.io/console/pods"
SETTINGS = "https://www.runpod.io/console/user/settings"


def api_for_task() -> RunPodAPI:
    """The API with the user's key; TaskBlocked (one line, nothing created) when it is not set."""
    if not os.environ.get(KEY_VARIABLE, "").strip():
        raise TaskBlocked(f"set {KEY_VARIABLE} (a RunPod API key, from {SETTINGS})")
    return RunPodAPI.from_env()


@contextmanager
def task_api() -> Iterator[RunPodAPI]:
    """The API for one task's work, and what RunPod's refusals mean for the task: a refused key
    blocks it, a lack of balance fails it, a transient error is retried by the engine."""
    api = api_for_task()
    try:
        yield api
    except AuthError as error:
        raise TaskBlocked(f"RunPod refused {KEY_VARIABLE}: {error}") from None
    except BalanceError as error:
        raise TaskFailed(f"RunPod refused for lack of balance: {error}") from None
    except TransientAPIError as error:
        raise TransientError(str(error)) from None
    finally:
        api.close()


def task_file(ctx: Context | RunInfo) -> Path:
    """The task file's absolute path: with the host, what names a pod's owner."""
    return ctx.workdir / Path(ctx.file.path).name


_hooks_lock = threading.Lock()
_hooks_done: set[tuple[str, str]] = set()


def run_hook(run: RunInfo, phase: str) -> None:
    """Once per run and phase, whichever pod handlers the file uses.

    before: feed the pod an earlier run left held (its switch is counting), then reap orphans.
    after: stop feeding this run's pods (the process is about to end), then reap orphans.
    """
    with _hooks_lock:
        if (run.run_id, phase) in _hooks_done:
            return
        _hooks_done.add((run.run_id, phase))
    if phase == "before":
        handle = MachineHandle.from_record(run.resources.get(MachineHandle.key))
        if handle is not None:
            session.attach(handle)
    else:
        session.detach_all(run.state_dir)
    if not os.environ.get(KEY_VARIABLE, "").strip():
        run.events.write("reaper_skipped", phase=phase, reason=f"{KEY_VARIABLE} is not set")
        return
    try:
        with RunPodAPI.from_env() as api:
            report = reaper.reap(api, current_state_dir=run.state_dir,
                                 log=lambda message: run.events.write("reaper", message=message))
    except APIError as error:
        run.reporter.warn(f"reaper: could not list pods ({error}); orphans, if any, are left for the next run")
        return
    for line in report.reaped:
        run.events.write("reaped", pod=line)
        run.reporter.warn(f"reaper: {line}")
    for line in report.failed:
        run.events.write("reap_failed", pod=line)
        run.reporter.warn(f"reaper: {line} — check {CONSOLE}")
    for line in report.unknown:
        run.events.write("reaper_unknown", pod=line)
        run.reporter.warn(f"reaper: {line}")


class PodHandler(Handler):
    """Base of the handlers that touch pods: the run hooks."""

    needs_env = {KEY_VARIABLE: f"a RunPod API key, from {SETTINGS}"}

    def before_run(self, run: RunInfo) -> None:
        run_hook(run, "before")

    def after_run(self, run: RunInfo) -> None:
        run_hook(run, "after")
