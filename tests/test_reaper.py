"""The reaper: orphans of dead runs are terminated (and confirmed gone), pods whose run is alive are
spared, pods of unknown owners are reported and left alone; terminations are re-sent with backoff and
reported as they were answered; also through the engine's run hooks. RunPod is the REST v2 emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from ralph.handlers.runpod import reaper
from ralph.handlers.runpod.api import PodSpec, RunPodAPI

from ralph.state import RunLock
from tests.engine.project import make_project, task
from tests.far.runpod_emulator import (
    Fault,
    RecordedRequest,
    RunPodEmulator,
    emulated_runpod,
)

A5000 = "NVIDIA RTX A5000"
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
    yield from emulated_runpod(tmp_path / "runpod", monkeypatch, reads_per_phase=0)


@pytest.fixture
def api(emu: RunPodEmulator) -> Iterator[RunPodAPI]:
    client = RunPodAPI.from_env()
    yield client
    client.close()


def new_pod(api: RunPodAPI, name: str) -> str:
    return api.create_pod(PodSpec(name=name, image="img", gpu_id=A5000, ports=())).id


def owned_pod(api: RunPodAPI, task_file: Path, ledger: reaper.Ledger, *, lock: bool = True) -> str:
    """A pod as runpod.create leaves it: named for ``task_file``, in the ledger; the task file's
    state folder has a lock file (a run happened) that nobody holds now."""
    state_dir = task_file.parent / ".ralph" / task_file.stem
    if lock:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "lock").write_text('{"pid": 1}')
    name = reaper.new_pod_name(task_file, 1)
    ledger.named(name, task_file, state_dir)
    pod_id = new_pod(api, name)
    ledger.created(name, pod_id)
    return pod_id


def deletes(emu: RunPodEmulator, pod_id: str) -> list[RecordedRequest]:
    return emu.calls("DELETE", f"/v2/pods/{pod_id}")


def test_orphans_are_reaped_live_runs_spared_strangers_reported(emu: RunPodEmulator, api: RunPodAPI,
                                                                tmp_path: Path) -> None:
    ledger = reaper.Ledger()
    orphan = owned_pod(api, tmp_path / "a" / "RALPH-001-dead.md", ledger)
    never_locked = owned_pod(api, tmp_path / "b" / "RALPH-001-crashed-early.md", ledger, lock=False)
    live_file = tmp_path / "c" / "RALPH-001-live.md"
    live = owned_pod(api, live_file, ledger)
    stranger = new_pod(api, "ralph-0123abcd-t1-zzzzzz")  # ralph's name, not this machine's ledger
    notebook = new_pod(api, "my-notebook")
    lock = live_file.parent / ".ralph" / live_file.stem / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        report = reaper.reap(api, current_state_dir=None, poll_s=0.05)
    finally:
        holder.communicate("")
    assert api.get_pod(orphan) is None and api.get_pod(never_locked) is None
    assert {api.get_pod(p).id for p in (live, stranger, notebook)} == {live, stranger, notebook}
    assert len(report.reaped) == 2 and all("confirmed gone" in line for line in report.reaped)
    assert [live in line and "is being run" in line for line in report.spared] == [True]
    assert [stranger in line and "left alone" in line for line in report.unknown] == [True] and report.failed == []
    assert not any("my-notebook" in line for line in report.reaped + report.spared + report.unknown)
    for pod_id in (live, stranger, notebook):
        assert deletes(emu, pod_id) == []  # not even asked
    for pod_id in (orphan, never_locked):
        assert [(r.principal, r.status) for r in deletes(emu, pod_id)] == [("account", 204)]
    gone = {e.pod_id for e in ledger.entries().values() if e.gone}
    assert gone == {orphan, never_locked}
    # Once its run is over, the live file's pod is an orphan too.
    report = reaper.reap(api, current_state_dir=None, poll_s=0.05)
    assert api.get_pod(live) is None and len(report.reaped) == 1 and live in report.reaped[0]
    assert emu.request_violations == []


def test_a_pod_the_api_will_not_delete_is_reported_failed(emu: RunPodEmulator, api: RunPodAPI,
                                                          tmp_path: Path) -> None:
    orphan = owned_pod(api, tmp_path / "a" / "RALPH-001-dead.md", reaper.Ledger())
    emu.ignore_terminations(None)  # every DELETE answered 204, none done
    report = reaper.reap(api, current_state_dir=None, confirm_s=0.5, poll_s=0.05)
    sent = len(deletes(emu, orphan))
    assert sent >= 1 and report.reaped == []
    [line] = report.failed
    assert orphan in line and f"{sent} terminate request(s): {sent} acknowledged" in line and "failed" not in line
    emu.ignore_terminations(0)
    pod = api.get_pod(orphan)
    assert pod is not None and not reaper.Ledger().entries()[pod.name].gone
    assert emu.request_violations == []


def test_terminate_and_confirm_resends_with_backoff_until_the_pod_is_gone(emu: RunPodEmulator,
                                                                         api: RunPodAPI) -> None:
    pod_id = new_pod(api, "ralph-0000aaaa-t1-backof")
    emu.ignore_terminations(2)  # acknowledged twice without effect, then honoured
    first = 0.3
    done = reaper.terminate_and_confirm(api, pod_id, timeout_s=15, poll_s=0.05, first_resend_s=first)
    assert done.gone and (done.acknowledged, done.errors, done.read_errors) == (3, [], [])
    assert done.describe() == "3 terminate request(s): 3 acknowledged"
    sent = [r.at for r in deletes(emu, pod_id)]
    assert len(sent) == 3 and api.get_pod(pod_id) is None
    gaps = [later - earlier for earlier, later in pairwise(sent)]
    assert gaps[0] >= first and gaps[1] >= 2 * first and gaps[1] > gaps[0]  # the gaps grow
    assert emu.request_violations == []


def test_terminate_and_confirm_never_calls_a_failed_answer_acknowledged(emu: RunPodEmulator,
                                                                        api: RunPodAPI) -> None:
    pod_id = new_pod(api, "ralph-0000aaaa-t1-gatewy")
    emu.fail(Fault.BAD_GATEWAY, times=None)  # every answer, reads included: a gateway's HTML page, 502
    done = reaper.terminate_and_confirm(api, pod_id, timeout_s=1.5, poll_s=0.05, first_resend_s=0.2)
    emu.clear_faults()
    sent = len(deletes(emu, pod_id))
    assert not done.gone and sent >= 3 and (done.acknowledged, len(done.errors)) == (0, sent)
    assert all("HTTP 502" in error for error in done.errors) and done.read_errors
    assert done.describe().startswith(f"{sent} terminate request(s): 0 acknowledged, {sent} failed (last: ")
    assert api.get_pod(pod_id) is not None  # really still there
    assert emu.request_violations == []


def test_describe_tells_acknowledged_answers_from_errors(emu: RunPodEmulator, api: RunPodAPI) -> None:
    pod_id = new_pod(api, "ralph-0000aaaa-t1-mixedd")
    emu.fail(Fault.SERVER_ERROR, method="DELETE")  # the first DELETE: 500; the later ones 204, not done
    emu.ignore_terminations(None)
    done = reaper.terminate_and_confirm(api, pod_id, timeout_s=1, poll_s=0.05, first_resend_s=0.1)
    emu.ignore_terminations(0)
    answers = [r.status for r in deletes(emu, pod_id)]
    assert answers[0] == 500 and set(answers[1:]) == {204} and len(answers) >= 3
    assert not done.gone and (done.acknowledged, len(done.errors), done.read_errors) == (len(answers) - 1, 1, [])
    assert done.describe() == (f"{len(answers)} terminate request(s): {len(answers) - 1} acknowledged, "
                               f"1 failed (last: {done.errors[0]})")
    assert "HTTP 500" in done.errors[0]
    assert emu.request_violations == []


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


def test_the_run_hooks_reap_orphans_but_not_the_runs_own_pod(emu: RunPodEmulator, api: RunPodAPI,
                                                              tmp_path: Path) -> None:
    ledger = reaper.Ledger()
    orphan = owned_pod(api, tmp_path / "other" / "RALPH-009-dead.md", ledger)
    project = make_project(tmp_path / "project", task(
        1, "Terminer pod", handler="runpod.terminate", params={"terminate_timeout_s": 5, "poll_s": 0.1},
        criteria=("Pod terminé (pas juste pause)", "Confirmation via API qu'aucun pod actif")))
    own = owned_pod(api, project.file, ledger, lock=False)  # e.g. a pod whose create answer was lost
    project.run()
    assert project.statuses()[1] == "DONE", project.output
    assert api.get_pod(orphan) is None and api.get_pod(own) is None
    assert "reaper: " in project.output and orphan in project.output
    reaped = [e for e in project.events() if e["event"] == "reaped"]
    assert len(reaped) == 1 and orphan in reaped[0]["pod"] and own not in reaped[0]["pod"]
    # The task terminated the run's own pod (by its name's prefix), the hooks only the orphan.
    assert len(deletes(emu, own)) == 1 and len(deletes(emu, orphan)) == 1
    assert os.environ["RALPH_STATE_HOME"] in str(ledger.path)
    assert emu.request_violations == []
