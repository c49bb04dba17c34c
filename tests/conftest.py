"""Shared fixtures. ``sshd``: a real OpenSSH server on loopback (see tests/far/sshd.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.far.sshd import SshServer, start_sshd


@pytest.fixture(autouse=True)
def private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ralph's machine-wide state (pod ledger, measured speeds) in the test's folder, never the
    person's ~/.local/state/ralph; a test that needs its own sets RALPH_STATE_HOME again."""
    monkeypatch.setenv("RALPH_STATE_HOME", str(tmp_path / "ralph-state-home"))


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    """A fresh sshd per test; sessions start in ``sshd.start_dir``."""
    server = start_sshd(tmp_path / "sshd")
    yield server
    server.stop()
