"""Slow imports taken while the run waits.

A handler names in ``warm_imports`` the modules its run needs that take long to import (numpy,
OpenCV, an HTTP stack).  Planning never imports them.  Once a running task shows progress (an
upload, a download, a GPU's steps: it is waiting on a machine) one background thread imports
them, in task order, so that their cost hides behind that wait instead of adding to a later
task — and never competes with a task's own work before it starts waiting.  A module that fails
here is left for the run to import and report: warming is only ever a head start.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable

# Seconds the run's end waits for imports under way: an interpreter that exits while a thread is
# inside a C extension's initialisation can crash.
FINISH_TIMEOUT_S = 10.0


class Warmup:
    def __init__(self, modules: Iterable[str]) -> None:
        self.modules = list(dict.fromkeys(modules))  # in order, each once
        self.waiting = threading.Event()  # set by a task's progress: the moment to import
        self._over = False
        self._thread = threading.Thread(target=self._import_all, name="ralph-warmup", daemon=True)

    def start(self) -> Warmup:
        if self.modules:
            self._thread.start()
        return self

    def finish(self) -> None:
        """The run is over: imports not begun are dropped, one under way is waited for."""
        self._over = True
        self.waiting.set()
        if self._thread.is_alive():
            self._thread.join(FINISH_TIMEOUT_S)

    def _import_all(self) -> None:
        self.waiting.wait()
        for name in self.modules:
            if self._over:
                return
            try:
                importlib.import_module(name)
            except Exception:  # the run imports it again and says what failed
                pass
