"""A real OpenSSH server on 127.0.0.1 for tests: its own config, host key and client key.

Sessions get the caller's ``env`` through ``SetEnv`` and start in ``start_dir``: sshd always
starts a session in the account's home, so ``SetEnv HOME=<workdir>/userhome`` points root's bash
(which Debian's bash reads ``~/.bashrc`` for when run by sshd) at a one-line ``.bashrc`` that
changes directory, and the sftp subsystem gets ``internal-sftp -d``. No ForceCommand, so exec,
sftp and rsync behave as on a pod; each server also gets its own ``$HOME`` (ralph's remote
caches live there), isolating tests from each other and from the real /root.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
_APT_PACKAGES = ("openssh-server", "rsync")


def ensure_packages() -> None:
    """Install openssh-server and rsync with apt-get when missing (CI's .ci/run installs them)."""
    if Path(SSHD).exists() and shutil.which("rsync"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *_APT_PACKAGES], check=True, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    """A fresh ed25519 key pair at ``path`` (private) and ``path.pub``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ralph-test", "-f", str(path)],
                   check=True)
    return path


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    client_key: Path | None  # None when the caller named the authorized keys itself
    host_key_pub: Path
    start_dir: Path
    workdir: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def home(self) -> Path:
        """$HOME of every session (see the module docstring)."""
        return self.workdir / "userhome"

    def known_hosts_line(self) -> str:
        keytype, blob = self.host_key_pub.read_text().split()[:2]
        return f"[{self.host}]:{self.port} {keytype} {blob}"

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (children of the listener)."""
        return _children(self.process.pid)

    def drop_connections(self) -> int:
        """Kill every live connection as a network failure would; the listener keeps running.

        Each connection's whole process tree goes: its pre-auth ``[net]`` child or post-auth
        session child also holds the socket and would otherwise keep it open.
        """
        sessions = self.session_pids()
        # Stop the trees first so none can fork a child that escapes the kill, then kill them.
        stopped: list[int] = []
        todo = list(sessions)
        while todo:
            pid = todo.pop()
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                continue
            stopped.append(pid)
            todo += _children(pid)
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(sessions)

    def stop(self) -> None:
        self.drop_connections()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _config(workdir: Path, port: int, host_key: Path, authorized: Path, start_dir: Path,
            env: dict[str, str]) -> str:
    home = workdir / "userhome"
    home.mkdir(exist_ok=True)
    (home / ".bashrc").write_text(f"cd {_shell_quote(str(start_dir))}\n")
    set_env = {"HOME": str(home), **env}
    for key, value in set_env.items():
        if any(c in value for c in '"\n\\') or any(c.isspace() for c in key):
            raise ValueError(f"SetEnv cannot carry {key!r}")
    lines = [
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {workdir / 'sshd.pid'}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxSessions 64",
        "MaxStartups 64",
        "LogLevel INFO",
        f"Subsystem sftp internal-sftp -d {start_dir}",
        "SetEnv " + " ".join(f'{k}="{v}"' for k, v in set_env.items()),
    ]
    return "\n".join(lines) + "\n"


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _wait_for_banner(port: int, process: subprocess.Popen, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited ({process.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"sshd on port {port} did not answer:\n{log.read_text()}")


def start_sshd(workdir: Path, *, env: dict[str, str] | None = None, host_key: Path | None = None,
               port: int | None = None, client_key: Path | None = None,
               start_dir: Path | None = None, authorized_keys: str | None = None) -> SshServer:
    """Start ``sshd -D -e`` on 127.0.0.1 and wait until it sends its banner.

    ``host_key`` and ``client_key`` default to fresh keys in ``workdir``; pass the same
    ``port`` and ``client_key`` with a new ``host_key`` to emulate a server whose key changed.
    ``authorized_keys`` (OpenSSH public key lines) replaces the client key: the server trusts
    exactly those, as a pod trusts its ``PUBLIC_KEY``, and ``client_key`` is None.
    """
    ensure_packages()
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    host_key = host_key or keygen(workdir / "ssh_host_ed25519_key")
    if authorized_keys is None:
        client_key = client_key or keygen(workdir / "id_ed25519")
        authorized_keys = client_key.with_name(client_key.name + ".pub").read_text()
    start_dir = start_dir or workdir / "home"
    start_dir.mkdir(parents=True, exist_ok=True)
    authorized = workdir / "authorized_keys"
    authorized.write_text(authorized_keys if authorized_keys.endswith("\n") else authorized_keys + "\n")
    config = workdir / "sshd_config"
    log = workdir / "sshd.log"
    for attempt in range(5):
        chosen = port or free_port()
        config.write_text(_config(workdir, chosen, host_key, authorized, start_dir, env or {}))
        with log.open("wb") as out:
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_banner(chosen, process, log, time.monotonic() + 10)
        except RuntimeError:
            if port is None and "Address already in use" in log.read_text() and attempt < 4:
                continue  # another process took the free port between probe and bind
            raise
        return SshServer(host="127.0.0.1", port=chosen, user="root", client_key=client_key,
                         host_key_pub=host_key.with_name(host_key.name + ".pub"),
                         start_dir=start_dir, workdir=workdir, process=process)
    raise AssertionError("unreachable")
