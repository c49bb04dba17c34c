"""Building command lines for a remote POSIX shell with every value quoted.

Anything that reaches a remote shell (file names, prompts, env values) goes through
``quote``/``join``: the shell then sees each value as one literal word, so ``$(…)``,
backticks, quotes, ``;`` and newlines are never interpreted. Only the fixed command
templates written in ralph's own code are left unquoted.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote(value: str | os.PathLike[str] | int) -> str:
    """One shell word whose value is exactly ``value``."""
    return shlex.quote(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


def join(*argv: str | os.PathLike[str] | int) -> str:
    """A simple command: every argument quoted, so none is split, globbed or expanded."""
    return " ".join(quote(a) for a in argv)


def env_exports(env: Mapping[str, str]) -> str:
    """``export K='v'; …`` for the command that follows (names must be plain identifiers)."""
    parts = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        parts.append(f"export {name}={quote(value)}; ")
    return "".join(parts)


def in_dir(directory: str | os.PathLike[str], command: str) -> str:
    """Run ``command`` in ``directory``; if the directory is missing nothing runs (exit 1).

    ``|| exit`` rather than ``&&``: ``command`` may itself be a list (``a; b``) that an ``&&``
    would only partly guard.
    """
    return f"cd -- {quote(directory)} || exit 1\n{command}"


def assign(**values: str | os.PathLike[str] | int) -> str:
    """``k='v'; …``: shell variables a fixed script then reads as "$k" (names are ralph's own)."""
    return "".join(f"{name}={quote(value)}; " for name, value in values.items())
