"""Finding handlers: the ``ralph.handlers`` entry-point group, plus project-local ones.

Built-in handlers are registered in ralph's own pyproject.toml exactly as a third-party
package registers its own, so there is one way in.  A project may also name handlers in
``ralph.yaml`` as ``module:Class``, imported from the folder of the task files.  A name is
looked up in the project's, then in ralph's own distribution, and only then in every installed
package's entry points (reading those of hundreds of packages costs tens of milliseconds, at
every run): a built-in name is ralph's.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib import metadata
from pathlib import Path

from .errors import RalphError
from .handler import Handler

GROUP = "ralph.handlers"


class Registry:
    def __init__(self, local: dict[str, str] | None = None, local_root: Path | None = None) -> None:
        self._local = dict(local or {})
        self._local_root = local_root
        self._own = _entry_points(own=True)
        self._installed: dict[str, str] | None = None  # every package's, read when first needed
        self._loaded: dict[str, type[Handler]] = {}

    def names(self) -> list[str]:
        return sorted(self._installed_targets() | self._own | self._local)

    def __contains__(self, name: str) -> bool:
        return self._target(name) is not None

    def _target(self, name: str) -> str | None:
        return self._local.get(name) or self._own.get(name) or self._installed_targets().get(name)

    def _installed_targets(self) -> dict[str, str]:
        if self._installed is None:
            self._installed = _entry_points(own=False)
        return self._installed

    def load(self, name: str) -> type[Handler]:
        if name in self._loaded:
            return self._loaded[name]
        target = self._target(name)
        if target is None:
            raise RalphError(f"unknown handler {name!r}; known: {', '.join(self.names())}")
        module_name, _, attribute = target.partition(":")
        if self._local_root is not None and str(self._local_root) not in sys.path:
            sys.path.insert(0, str(self._local_root))
        # A project's own module is compiled in memory each run: Python writes its cache next to
        # it, and on a full disk that write can be cut short and then read back as damaged code.
        writes_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = writes_bytecode or name in self._local
        try:
            handler = getattr(importlib.import_module(module_name), attribute)
        except SyntaxError as error:
            where = f"{os.path.relpath(error.filename)}:{error.lineno}: " if error.filename else ""
            raise RalphError(f"handler {name!r} ({target}) cannot be loaded: {where}{error.msg}") from None
        except Exception as error:  # anything a module may raise as it is imported
            raise RalphError(f"handler {name!r} ({target}) cannot be loaded: {type(error).__name__}: {error}") from None
        finally:
            sys.dont_write_bytecode = writes_bytecode
        if not (isinstance(handler, type) and issubclass(handler, Handler)):
            raise RalphError(f"handler {name!r} ({target}) is not a ralph.handler.Handler subclass")
        self._loaded[name] = handler
        return handler


def _entry_points(*, own: bool) -> dict[str, str]:
    """The ``ralph.handlers`` entry points of ralph's own distribution, or of every installed one."""
    if own:
        try:
            found = metadata.distribution("ralph").entry_points.select(group=GROUP)
        except metadata.PackageNotFoundError:  # run from a source tree: every package's, then
            found = metadata.entry_points(group=GROUP)
    else:
        found = metadata.entry_points(group=GROUP)
    return {ep.name: ep.value for ep in found}
