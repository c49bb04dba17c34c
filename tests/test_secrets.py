"""Secrets never reach state, logs or the terminal; which values are secret is read once per run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ralph import secrets
from ralph.state import RunState

KEY = "rp_live_0123456789abcdef"


def test_a_secret_in_the_environment_is_masked_in_text_and_in_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("HF_TOKEN", KEY[:10])  # one secret inside another: the longer one goes first
    monkeypatch.setenv("EDITOR", "vim-is-not-secret")
    secrets.refresh()
    assert secrets.redact(f"curl -H 'Bearer {KEY}' vim-is-not-secret") == "curl -H 'Bearer ***' vim-is-not-secret"
    data = {"cmd": [f"x {KEY}", (KEY[:10],)], KEY: 3, "n": 1.5}
    assert secrets.redact_data(data) == {"cmd": ["x ***", ["***"]], "***": 3, "n": 1.5}


def test_the_values_are_read_once_per_run_not_at_every_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    secrets.refresh()
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    assert secrets.redact(KEY) == KEY, "the run's secrets are those of the environment it started in"
    secrets.refresh()  # what Runner.run does as a run starts
    assert secrets.redact(KEY) == "***"


def test_a_state_save_writes_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PASSWORD", KEY)
    secrets.refresh()
    state = RunState(tmp_path)
    state.memory(1)["command"] = f"login --password {KEY}"
    text = (tmp_path / "state.json").read_text("utf-8")
    assert KEY not in text and json.loads(text)["tasks"]["1"]["memory"]["command"] == "login --password ***"
    assert state.memory(1)["command"] == f"login --password {KEY}", "only what is written is masked"


def test_without_secrets_data_is_written_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if secrets._SECRET_NAME.search(k)]:
        monkeypatch.delenv(name)
    secrets.refresh()
    data = {"a": ["b", {"c": "d"}]}
    assert secrets.redact_data(data) is data
