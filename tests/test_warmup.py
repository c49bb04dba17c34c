"""Slow imports are taken in the background once a run starts, never while planning."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ralph.context import Context
from ralph.warmup import Warmup
from tests.repo_files import EXAMPLE
from tests.waiting import wait_for


def test_nothing_is_imported_until_a_task_waits_then_each_once_in_order(tmp_path: Path, monkeypatch) -> None:
    for name in ("warm_a", "warm_b"):
        (tmp_path / f"{name}.py").write_text(f"import warm_log\nwarm_log.order.append({name!r})\n")
    (tmp_path / "warm_log.py").write_text("order = []\n")
    (tmp_path / "warm_broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    warmup = Warmup(["warm_b", "warm_broken", "warm_a", "warm_b"]).start()
    ctx = Context(None, None, tmp_path, tmp_path, "test", reporter=_Bars(), events=None,  # type: ignore[arg-type]
                  task=None, params={}, memory=None, waiting=warmup.waiting)
    with ctx.progress("upload", 10) as bar:
        assert not warmup.waiting.is_set() and "warm_log" not in sys.modules, "a task busy with its own work"
        bar.update(1)  # now it waits on the machine
    wait_for(lambda: "warm_a" in sys.modules, 30, "the background imports")
    warmup.finish()
    import warm_log  # type: ignore[import-not-found]

    assert warm_log.order == ["warm_b", "warm_a"], "each once, in order; the broken one did not stop the rest"
    assert "warm_broken" not in sys.modules


def test_a_run_whose_tasks_never_wait_imports_nothing_and_ends(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "warm_never.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    warmup = Warmup(["warm_never"]).start()
    warmup.finish()
    assert "warm_never" not in sys.modules and not warmup._thread.is_alive()


class _Bars:
    """A reporter's progress bars, as the terminal's would be entered and updated."""

    @contextmanager
    def progress(self, description: str, total: float | None, unit: str) -> Iterator[Any]:
        yield SimpleNamespace(update=lambda *args: None)


def test_planning_the_example_imports_no_numerical_or_http_stack(tmp_path: Path) -> None:
    file = tmp_path / EXAMPLE.name
    file.write_bytes(EXAMPLE.read_bytes())
    code = textwrap.dedent(f"""
        import sys
        from ralph.cli import main
        try:
            main(["check", {str(file)!r}])
        except SystemExit:
            pass
        print(sorted(m for m in ("numpy", "PIL", "cv2", "websockets") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
