"""The test sshd is a real server: OpenSSH's own client logs in with the fixture's key only."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.far.sshd import SshServer, start_sshd


def _ssh(server: SshServer, known_hosts: Path, command: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-p", str(server.port), "-o", f"UserKnownHostsFile={known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         *extra, f"{server.user}@{server.host}", command],
        capture_output=True, text=True, timeout=20)


def test_login_with_client_key_env_and_start_dir(tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "s", env={"RALPH_PROBE": "a b;c"})
    try:
        kh = tmp_path / "kh"
        kh.write_text(server.known_hosts_line() + "\n")
        r = _ssh(server, kh, 'pwd; printf "%s\\n" "$RALPH_PROBE"', "-i", str(server.client_key))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [str(server.start_dir), "a b;c"]
    finally:
        server.stop()


def test_refuses_other_keys_and_wrong_host_key(sshd: SshServer, tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    kh.write_text(sshd.known_hosts_line() + "\n")
    no_key = _ssh(sshd, kh, "true", "-i", "/dev/null", "-o", "PasswordAuthentication=no")
    assert no_key.returncode == 255 and "Permission denied" in no_key.stderr
    other = start_sshd(tmp_path / "other")  # a different host key
    try:
        wrong = tmp_path / "wrong"
        wrong.write_text(sshd.known_hosts_line().replace(str(sshd.port), str(other.port)) + "\n")
        r = _ssh(other, wrong, "true", "-i", str(other.client_key))
        assert r.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in r.stderr
    finally:
        other.stop()


def test_stop_closes_port_and_drop_kills_sessions(tmp_path: Path) -> None:
    server = start_sshd(tmp_path / "s")
    kh = tmp_path / "kh"
    kh.write_text(server.known_hosts_line() + "\n")
    proc = subprocess.Popen(["ssh", "-p", str(server.port), "-i", str(server.client_key),
                             "-o", f"UserKnownHostsFile={kh}", "-o", "BatchMode=yes",
                             f"root@{server.host}", "echo ready; sleep 30"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert server.drop_connections() >= 1
        assert proc.wait(timeout=10) == 255
    finally:
        proc.kill()
        server.stop()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0
