"""Providers against real machines: this one (LocalMachine) and a real sshd (SshMachine)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, CommandTimeout, Machine
from ralph.handlers.machines.hostkeys import HostKeyChanged, HostKeyStore
from ralph.handlers.machines.local import LocalMachine
from ralph.handlers.machines.ssh import ConnectionLost, SshMachine, SshTarget

from tests.far.sshd import SshServer, keygen, start_sshd
from tests.waiting import wait_for

# Each would run a command or split words if anything interpreted it.
NASTY = [
    "$(touch pwned1)",
    "`touch pwned2`",
    "it's \"quoted\"",
    "a; touch pwned3",
    "line1\nline2 && touch pwned4",
    "naïve 漢字 ☃",
    "-rf",
    "* ? [a]",
    "$HOME ${PATH} \\ trailing\\",
    "|| touch pwned5 #",
]


def ssh_provider(server: SshServer, state: Path, **target) -> SshMachine:
    return SshMachine(SshTarget(server.host, server.port, server.client_key, user=server.user, **target),
                       known_hosts=state / "known_hosts")


@pytest.fixture(params=["local", "ssh"])
def machine(request, tmp_path: Path) -> Iterator[tuple[Machine, Path]]:
    """Each provider with the local directory its commands start in."""
    if request.param == "local":
        root = tmp_path / "root"
        with LocalMachine(root, hash_cache=tmp_path / "state" / "cache.json") as p:
            yield p, root
        return
    server = start_sshd(tmp_path / "sshd")
    try:
        with ssh_provider(server, tmp_path / "state") as p:
            yield p, server.start_dir
    finally:
        server.stop()


def test_run_returns_output_and_exit_code(machine) -> None:
    p, _ = machine
    r = p.run("echo out; echo err >&2; exit 3", check=False)
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailed) as e:
        p.run("echo boom >&2; false")
    assert e.value.result.exit_code == 1 and "boom" in str(e.value)


def test_timeout_stops_waiting(machine) -> None:
    p, _ = machine
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout):
        p.run("echo started; sleep 60", timeout=0.5)
    assert time.monotonic() - t0 < 30, "it waited for the command instead of its timeout"


def test_nasty_values_reach_commands_literally(machine) -> None:
    p, cwd = machine
    for value in NASTY:
        assert p.run(remote_shell.join("printf", "%s", value)).stdout == value
        assert p.run('printf %s "$V"', env={"V": value}).stdout == value
        p.run(remote_shell.join("touch", "--", value))
        assert p.exists(value), value
        listed = p.run(remote_shell.join("ls", "-d", "--", value)).stdout
        assert listed == value + "\n"
    names = {q.name for q in cwd.iterdir()}
    assert names == set(NASTY) and not any("pwned" in n and n not in NASTY for n in names)
    assert not list(Path.cwd().glob("pwned*"))


def test_file_info(machine) -> None:
    p, cwd = machine
    (cwd / "f").write_bytes(b"12345")
    info = p.file_info("f")
    assert info.size == 5 and not info.is_dir and abs(info.mtime - (cwd / "f").stat().st_mtime) < 1
    assert p.file_info("missing") is None and not p.exists("missing")
    assert p.file_info(".").is_dir


def test_local_paths_stay_under_root(tmp_path: Path) -> None:
    p = LocalMachine(tmp_path / "root", hash_cache=tmp_path / "c.json")
    with pytest.raises(ValueError):
        p.path("../outside")


def test_ssh_workdir_and_reconnect_after_drop(sshd: SshServer, tmp_path: Path) -> None:
    work = sshd.start_dir / "job dir"
    work.mkdir()
    with ssh_provider(sshd, tmp_path, workdir=str(work)) as p:
        assert p.run("pwd").stdout == f"{work}\n"
        assert p.run("echo $PWD > seen; true", env={"A": "1"}).ok
        assert (work / "seen").read_text() == f"{work}\n"
    with ssh_provider(sshd, tmp_path, workdir=str(sshd.start_dir / "missing")) as p:
        r = p.run("touch ran-anyway; true", check=False)
        assert r.exit_code == 1 and not list(sshd.start_dir.rglob("ran-anyway"))
    with ssh_provider(sshd, tmp_path, workdir=str(work)) as p:
        p.run("true")
        assert sshd.drop_connections() >= 1
        wait_for(lambda: not p.transport_alive(), what="the client to see its connection dropped")
        assert p.run("echo again").stdout == "again\n"  # a fresh connection, transparently


def test_drop_during_command_is_reported_not_rerun(sshd: SshServer, tmp_path: Path) -> None:
    with ssh_provider(sshd, tmp_path) as p:
        p.run("true")
        ran = sshd.start_dir / "ran"

        def drop_once_running() -> None:
            wait_for(ran.exists, what="the command to start")
            sshd.drop_connections()

        threading.Thread(target=drop_once_running, daemon=True).start()
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost):
            p.run("echo x >> ran; sleep 120")
        assert time.monotonic() - t0 < 60, "it waited for the command instead of noticing the drop"
        assert (sshd.start_dir / "ran").read_text() == "x\n"


def test_host_key_pinned_on_first_contact_and_change_refused(tmp_path: Path) -> None:
    client_key = keygen(tmp_path / "id")
    first = start_sshd(tmp_path / "a", client_key=client_key)
    state = tmp_path / "state"
    with ssh_provider(first, state) as p:
        p.run("true")
    pinned = (state / "known_hosts").read_text().split()
    assert pinned == first.known_hosts_line().split()
    port = first.port
    first.stop()
    # Same address, new machine key: refused before any command runs.
    second = start_sshd(tmp_path / "b", client_key=client_key, port=port)
    try:
        with ssh_provider(second, state) as p, pytest.raises(HostKeyChanged) as e:
            p.run("touch should-not-exist")
        assert f"[127.0.0.1]:{port}" in str(e.value) and str(state / "known_hosts") in str(e.value)
        assert not (second.start_dir / "should-not-exist").exists()
        # OpenSSH tools (rsync -e ssh) read the same pins and refuse too.
        store = HostKeyStore(state / "known_hosts")
        r = subprocess.run(["ssh", "-p", str(port), "-i", str(client_key), "-o", "BatchMode=yes",
                            *store.openssh_options(f"[127.0.0.1]:{port}"), "root@127.0.0.1", "true"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 255 and "Host key verification failed" in r.stderr
        # Forgetting the pin (the old pod was terminated) lets the new machine be pinned.
        store.forget(f"[127.0.0.1]:{port}")
        with ssh_provider(second, state) as p:
            assert p.run("echo ok").stdout == "ok\n"
    finally:
        second.stop()


def test_pod_alias_pins_by_name_and_openssh_accepts_it(sshd: SshServer, tmp_path: Path) -> None:
    with ssh_provider(sshd, tmp_path, alias="pod-abc123") as p:
        p.run("true")
        assert (tmp_path / "known_hosts").read_text().startswith("pod-abc123 ssh-ed25519 ")
        r = subprocess.run([*p.openssh_args(), sshd.host, "echo via-openssh"], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0 and r.stdout == "via-openssh\n", r.stderr


def test_local_put_get_resume_and_skip(tmp_path: Path) -> None:
    p = LocalMachine(tmp_path / "root", hash_cache=tmp_path / "c.json")
    src = tmp_path / "w.bin"
    src.write_bytes(bytes(range(256)) * 4096)
    (tmp_path / "root" / "in").mkdir()
    (tmp_path / "root" / "in" / ".w.bin.ralph-part").write_bytes(src.read_bytes()[:1000])
    r = p.put(src, "in/w.bin")
    assert (r.resumed_from, r.bytes_sent, r.skipped) == (1000, src.stat().st_size - 1000, False)
    assert (tmp_path / "root" / "in" / "w.bin").read_bytes() == src.read_bytes()
    assert p.put(src, "in/w.bin").skipped
    back = tmp_path / "back" / "w.bin"
    assert not p.get("in/w.bin", back).skipped and back.read_bytes() == src.read_bytes()
    assert p.get("in/w.bin", back).skipped
