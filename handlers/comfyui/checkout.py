"""Git checkouts on the machine at a pinned tag or commit: ComfyUI itself and its custom nodes.

A pin is fetched shallow (that one commit, never a branch's moving tip) and checked out
detached; ``git init`` + ``git fetch --depth 1 origin <sha>`` works on GitHub, whose servers
hand out any commit by its full id. What is checked out is read back, so the results say
what ran, not what was asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ralph.handlers.comfyui.workspace import sh
from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.base import CommandFailed, Machine

from ralph.handler import TaskFailed

COMMIT = re.compile(r"[0-9a-f]{40}")
# ``git fetch`` would read a leading "-" as an option and a refspec character as syntax.
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/+-]*")


def check_pin(pin: str, what: str) -> None:
    """Refuse a pin that is neither a full commit nor a tag name."""
    if not COMMIT.fullmatch(pin) and not (TAG.fullmatch(pin) and ".." not in pin and not pin.endswith(".lock")):
        raise ValueError(f"{what}: {pin!r} is neither a tag nor a full 40-hex commit")


def check_commit(commit: str, what: str) -> None:
    """Refuse anything but a full commit id: a branch or a tag can move, so neither pins."""
    if not COMMIT.fullmatch(commit):
        raise ValueError(f"{what}: {commit!r} is not a commit: give the full 40-hex commit id "
                         "(a branch moves, so it is not a pin)")


def refspec(pin: str) -> str:
    """What to fetch: the commit itself, or the tag kept as a local tag (so ``git describe`` names it)."""
    return pin if COMMIT.fullmatch(pin) else f"+refs/tags/{pin}:refs/tags/{pin}"


def check_out(provider: Machine, folder: str, url: str, pin: str, timeout: float, what: str) -> None:
    """``folder`` at ``pin`` of ``url``: made a repository if it is none, its origin set to ``url``,
    the pin fetched and checked out (a checkout with local changes in the way fails, untouched)."""
    try:
        sh(provider, 'mkdir -p -- "$d" && { [ -e "$d/.git" ] || git init -q -- "$d"; } && '
                     '{ git -C "$d" remote set-url origin "$url" 2>/dev/null || '
                     'git -C "$d" remote add origin "$url"; } && '
                     'git -C "$d" fetch -q --depth 1 origin "$ref" && '
                     'git -C "$d" -c advice.detachedHead=false checkout -q FETCH_HEAD',
           timeout=timeout, d=folder, url=url, ref=refspec(pin))
    except CommandFailed as e:
        reason = (e.result.stderr or e.result.stdout).strip()[-1000:] or f"exit {e.result.exit_code}"
        raise TaskFailed(f"checking out {what} {pin} from {url} failed: {reason}") from None


@dataclass(frozen=True)
class Revision:
    """What a folder holds: its commit and the tag at that commit ("" for none); no commit: not a checkout."""

    commit: str = ""
    tag: str = ""


def revisions(provider: Machine, folders: list[str]) -> dict[str, Revision]:
    """Each folder's checked-out commit and tag, in one round trip."""
    # Only a folder's own .git counts: a plain folder inside a checkout is not that checkout.
    script = ('for d in "$@"; do c=$([ -e "$d/.git" ] && git -C "$d" rev-parse -q --verify HEAD 2>/dev/null) || c=; '
              't=$([ -n "$c" ] && git -C "$d" describe --tags --exact-match HEAD 2>/dev/null) || t=; '
              'printf "%s\\t%s\\n" "$c" "$t"; done')
    out = provider.run(f"set -- {remote_shell.join(*folders)}; {script}", timeout=120).stdout if folders else ""
    rows = [line.split("\t") for line in out.splitlines()]
    return {folder: Revision(*row) for folder, row in zip(folders, rows, strict=True)}
