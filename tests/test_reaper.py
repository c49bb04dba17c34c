"""The reaper: orphans of dead runs are terminated (and confirmed gone), pods whose run is alive are
spared, pods of unknown owners are reported and left alone; also through the engine's hooks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ralph.handlers.runpod import reaper
from ralph.handlers.runpod.api import RunPodAPI
from ralph.state import RunLock
from tests.far.runpod_emulator import RunPodEmulator, emulated_runpod
from tests.test_pod_handlers import A5000, fast_params, pod_project, run, statuses

HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def emu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPodEmulator]:
    """Pods without sshd or start command: the reaper only talks to the API."""
    monkeypatch.setenv("RALPH_STATE_HOME", str(tmp_path / "ralph-state"))
    generator = emulated_runpod(tmp_path / "runpod", monkeypatch, start_ssh=None, run_start_command=False)
    emulator = next(generator)
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    yield emulator
    yield from generator


def owned_pod(api: RunPodAPI, task_file: Path, ledger: reaper.Ledger, *, lock: bool = True) -> str:
    """A pod as runpod.create leaves it: named for ``task_file``, in the ledger; the task file's
    state folder has a lock file (a run happened) that nobody holds now."""
    state_dir = task_file.parent / ".ralph" / task_file.stem
    if lock:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "lock").write_text('{"pid": 1}')
    name = reaper.new_pod_name(task_file, 1)
    ledger.named(name, task_file, state_dir)
    pod_id = api.create_pod(name=name, image="img", gpu_type_id=A5000)
    ledger.created(name, pod_id)
    return pod_id


def test_orphans_are_reaped_live_runs_spared_strangers_reported(emu: RunPodEmulator, tmp_path: Path) -> None:
    api, ledger = RunPodAPI(emu.api_key), reaper.Ledger()
    orphan = owned_pod(api, tmp_path / "a" / "RALPH-001-dead.md", ledger)
    never_locked = owned_pod(api, tmp_path / "b" / "RALPH-001-crashed-early.md", ledger, lock=False)
    live_file = tmp_path / "c" / "RALPH-001-live.md"
    live = owned_pod(api, live_file, ledger)
    stranger = api.create_pod(name="ralph-0123abcd-t1-zzzzzz", image="img", gpu_type_id=A5000)
    notebook = api.create_pod(name="my-notebook", image="img", gpu_type_id=A5000)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(live_file.parent / ".ralph" / live_file.stem / "lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        report = reaper.reap(api, current_state_dir=None, poll_s=0.05)
    finally:
        holder.communicate("")
    assert api.get_pod(orphan) is None and api.get_pod(never_locked) is None
    assert {api.get_pod(p).id for p in (live, stranger, notebook)} == {live, stranger, notebook}
    assert len(report.reaped) == 2 and all("confirmed gone" in line for line in report.reaped)
    assert [live in line and "is being run" in line for line in report.spared] == [True]
    assert [stranger in line for line in report.unknown] == [True] and report.failed == []
    assert not any("my-notebook" in line for line in report.reaped + report.spared + report.unknown)
    gone = {e.pod_id for e in ledger.entries().values() if e.gone}
    assert gone == {orphan, never_locked}
    # Once its run is over, the live file's pod is an orphan too.
    report = reaper.reap(api, current_state_dir=None, poll_s=0.05)
    assert api.get_pod(live) is None and len(report.reaped) == 1


def test_a_pod_the_api_will_not_delete_is_reported_failed(emu: RunPodEmulator, tmp_path: Path) -> None:
    api = RunPodAPI(emu.api_key)
    orphan = owned_pod(api, tmp_path / "a" / "RALPH-001-dead.md", reaper.Ledger())
    emu.ignore_terminations()
    report = reaper.reap(api, current_state_dir=None, confirm_s=0.5, poll_s=0.05)
    emu.ignore_terminations(0)
    assert report.reaped == [] and [orphan in line for line in report.failed] == [True]
    assert api.get_pod(orphan) is not None and not reaper.Ledger().entries()[api.get_pod(orphan).name].gone


def test_lock_held_follows_flock(tmp_path: Path) -> None:
    lock = tmp_path / ".ralph" / "x" / "lock"
    assert not reaper.lock_held(lock)  # no run ever
    held = RunLock(lock.parent, tmp_path / "x.md")
    held.acquire()
    try:
        assert reaper.lock_held(lock)  # held by this very process, through another descriptor
    finally:
        held.release()
    assert not reaper.lock_held(lock)


def test_ledger_folds_its_lines_and_survives_a_torn_one(tmp_path: Path) -> None:
    ledger = reaper.Ledger(tmp_path / "pods.jsonl")
    task_file = tmp_path / "RALPH-001.md"
    name = reaper.new_pod_name(task_file, 3)
    assert name.startswith(reaper.owner_prefix(task_file)) and "-t3-" in name
    ledger.named(name, task_file, tmp_path / ".ralph" / "RALPH-001")
    ledger.created(name, "pod123")
    with open(ledger.path, "a") as out:
        out.write('{"name": "torn')
    entry = ledger.entries()[name]
    assert (entry.pod_id, entry.gone, entry.task_file) == ("pod123", False, str(task_file.resolve()))
    assert reaper.owner_of(name) == entry.owner == reaper.owner_id(task_file)
    assert reaper.owner_id(task_file) != reaper.owner_id(tmp_path / "RALPH-002.md")
    assert reaper.owner_id(task_file, host="elsewhere") != reaper.owner_id(task_file)


def test_the_run_hooks_reap_orphans_but_not_the_runs_own_pod(emu: RunPodEmulator, tmp_path: Path) -> None:
    api, ledger = RunPodAPI(emu.api_key), reaper.Ledger()
    orphan = owned_pod(api, tmp_path / "other" / "RALPH-009-dead.md", ledger)
    file = pod_project(tmp_path / "project", fast_params(tmp_path))
    own = owned_pod(api, file, ledger, lock=False)  # e.g. a pod whose create answer was lost
    summary, output = run(file, only=5)
    assert statuses(file)[5] == "DONE", output
    assert api.get_pod(orphan) is None and api.get_pod(own) is None
    assert "reaper: " in output and orphan in output
    events = (file.parent / ".ralph" / file.stem / "events.jsonl").read_text()
    reaped = [line for line in events.splitlines() if '"event": "reaped"' in line]
    assert len(reaped) == 1 and orphan in reaped[0] and own not in reaped[0]  # task 5 terminated its own
    assert os.environ["RALPH_STATE_HOME"] in str(ledger.path)
