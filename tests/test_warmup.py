"""Slow imports are taken in the background once a run starts, never while planning."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ralph.warmup import Warmup
from tests.repo_files import EXAMPLE


def test_modules_are_imported_in_order_and_a_broken_one_is_left_for_the_run(tmp_path: Path, monkeypatch) -> None:
    for name in ("warm_a", "warm_b"):
        (tmp_path / f"{name}.py").write_text(f"import warm_log\nwarm_log.order.append({name!r})\n")
    (tmp_path / "warm_log.py").write_text("order = []\n")
    (tmp_path / "warm_broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    warmup = Warmup(["warm_b", "warm_broken", "warm_a", "warm_b"]).start()
    warmup.finish()
    import warm_log  # type: ignore[import-not-found]

    assert warm_log.order == ["warm_b", "warm_a"], "each once, in order; the broken one did not stop the rest"
    assert "warm_broken" not in sys.modules


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
