"""Host keys pinned on first contact, in a known_hosts file inside ralph's state directory.

The first connection to a host records its key; any later connection presenting another key
is refused with ``HostKeyChanged`` before authentication. Pods should be pinned under an
alias (their pod id): RunPod reuses ``ip:port`` pairs across pods, so a new pod on an old
address must not look like an attack, and a terminated pod's entry is dropped with ``forget``.
The same file serves OpenSSH (rsync, scp) through ``openssh_options``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import paramiko

from ralph.textfile import write_atomically


class HostKeyChanged(paramiko.SSHException):
    def __init__(self, name: str, offered: paramiko.PKey, pinned: paramiko.PKey, path: Path):
        self.name = name
        super().__init__(
            f"host key for {name} changed: it now offers {offered.get_name()} "
            f"{offered.fingerprint}, but {pinned.get_name()} {pinned.fingerprint} was pinned on "
            f"first contact in {path}. This is either a different machine at the same address or "
            f"an interception; refusing to connect. If the machine was really rebuilt, remove the "
            f"'{name}' line from {path}.")


def entry_name(host: str, port: int, alias: str | None = None) -> str:
    """The known_hosts name: the alias when given, else OpenSSH's ``[host]:port`` form."""
    if alias:
        return alias
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyStore:
    """A known_hosts file; every write is re-read first and replaced atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            keys.load(str(self.path))
        return keys

    def _save(self, keys: paramiko.HostKeys) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{name} {key.get_name()} {key.get_base64()}\n" for name in keys.keys() for key in keys[name].values()]
        write_atomically(self.path, "".join(lines).encode())

    def pinned(self, name: str) -> paramiko.PKey | None:
        entry = self._load().lookup(name)
        return next(iter(entry.values()), None) if entry else None

    def verify(self, name: str, offered: paramiko.PKey) -> None:
        """Pin ``offered`` if ``name`` is new; raise ``HostKeyChanged`` if it differs from the pin."""
        with self._lock:
            keys = self._load()
            entry = keys.lookup(name)
            if not entry:
                keys.add(name, offered.get_name(), offered)
                self._save(keys)
                return
            same_type = entry.get(offered.get_name())
            if same_type is None or same_type != offered:
                raise HostKeyChanged(name, offered, same_type or next(iter(entry.values())), self.path)

    def forget(self, name: str) -> None:
        """Drop a pin (a terminated pod): its address may come back with another machine's key."""
        with self._lock:
            keys = self._load()
            if name in keys:
                del keys[name]
                self._save(keys)

    def openssh_options(self, name: str) -> list[str]:
        """``-o`` options making ssh/rsync/scp accept only the pinned key for ``name``."""
        return ["-o", f"UserKnownHostsFile={self.path}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", f"HostKeyAlias={name}",
                "-o", "CheckHostIP=no"]
