"""The heartbeat a watchdog on a machine reads: a file holding the machine's own clock, rewritten by
ralph while it uses the machine. A provider whose machines carry such a watchdog (RunPod's
dead-man's switch, handlers/runpod/deadman.py) reads it at ``heartbeat_path``; the machine side
only knows how to write it.
"""

from __future__ import annotations

import posixpath

from ralph.handlers.machines.remote_shell import quote


def watch_dir(state_base: str, machine_id: str) -> str:
    """The watchdog's folder on the machine: its heartbeat, its log, its arming report."""
    return posixpath.join(state_base, machine_id)


def heartbeat_path(state_base: str, machine_id: str) -> str:
    return posixpath.join(watch_dir(state_base, machine_id), "heartbeat")


def heartbeat_command(state_base: str, machine_id: str) -> str:
    """The command ralph runs on the machine for each beat: the machine's clock, replaced atomically
    (ralph's clock and the machine's never meet)."""
    path = heartbeat_path(state_base, machine_id)
    tmp = path + ".tmp"
    return (f"mkdir -p {quote(watch_dir(state_base, machine_id))} && "
            f"date +%s > {quote(tmp)} && mv -f {quote(tmp)} {quote(path)}")
