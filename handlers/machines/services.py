"""Background services ralph starts on a machine (ComfyUI), recorded on the machine itself.

Each service is three files in the machine's services folder (``MachineHandle.services_dir``):
``<name>.pid``, ``<name>.log`` and ``<name>.cmd`` (a word of its command line, so a pid the
system gave to another process since is not taken for it). Releasing the machine stops every
service recorded there, whatever started it: the machine owns what runs on it.
"""

from __future__ import annotations

import posixpath

from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import Machine

_ALIVE = r"""
[ -f "$d/$n.pid" ] || exit 0
pid=$(cat -- "$d/$n.pid") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || exit 0
word=$(cat -- "$d/$n.cmd" 2>/dev/null)
tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word" && echo "$pid"
true
"""
_START = r"""
mkdir -p -- "$d" && d=$(cd -- "$d" && pwd) && cd -- "$cwd" || exit 1
printf '%s\n' "$word" > "$d/$n.cmd"
setsid nohup "$@" > "$d/$n.log" 2>&1 < /dev/null &
echo $! > "$d/$n.pid"; cat -- "$d/$n.pid"
"""
_STOP = r"""
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"; i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt "$ticks" ]; do sleep 0.2; i=$((i+1)); done
kill -KILL -- "-$pid" 2>/dev/null; rm -f -- "$d/$n.pid"; true
"""


def log_file(folder: str, name: str) -> str:
    return posixpath.join(folder, f"{name}.log")


def pid(provider: Machine, folder: str, name: str) -> int | None:
    """The pid of the service ``name`` when it is still alive."""
    out = provider.run(remote_shell.assign(d=folder, n=name) + _ALIVE, timeout=120).stdout.strip()
    return int(out) if out.isdigit() else None


def start(provider: Machine, folder: str, name: str, argv: list[str], cwd: str) -> int:
    """Start ``argv`` in ``cwd`` as its own session, detached from ralph; its pid."""
    word = posixpath.basename(argv[1] if len(argv) > 1 else argv[0])
    script = remote_shell.assign(d=folder, n=name, cwd=cwd, word=word) + "set -- " + remote_shell.join(*argv) + "\n"
    out = provider.run(script + _START, timeout=60).stdout
    return int(out.strip().splitlines()[-1])


def stop(provider: Machine, folder: str, name: str, grace: float = 10.0) -> bool:
    """Stop the service (TERM to its process group, then KILL after ``grace`` s); False if none ran."""
    running = pid(provider, folder, name)
    if running is None:
        return False
    provider.run(remote_shell.assign(d=folder, n=name, pid=running, ticks=int(grace * 5)) + _STOP, timeout=grace + 60)
    return True


def stop_all(provider: Machine, folder: str, grace: float = 10.0) -> list[str]:
    """Stop every service recorded in ``folder``; the names of those that were running."""
    listed = provider.run(remote_shell.assign(d=folder) + 'for p in "$d"/*.pid; do [ -f "$p" ] && '
                          'basename -- "$p" .pid; done; true', timeout=60).stdout
    return [name for name in listed.split() if stop(provider, folder, name, grace)]


def log_tail(provider: Machine, folder: str, name: str) -> str:
    return provider.run(remote_shell.assign(l=log_file(folder, name)) + 'tail -c 3000 -- "$l" 2>/dev/null; true',
                        timeout=60).stdout.strip()
