"""Shared fixtures. ``sshd``: a real OpenSSH server on loopback (see tests/far/sshd.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.far.sshd import SshServer, start_sshd


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    """A fresh sshd per test; sessions start in ``sshd.start_dir``."""
    server = start_sshd(tmp_path / "sshd")
    yield server
    server.stop()
