"""Finding handlers: the ``ralph.handlers`` entry-point group, plus project-local ones.

Built-in handlers are registered in ralph's own pyproject.toml exactly as a third-party
package registers its own, so there is one way in.  A project may also name handlers in
``ralph.yaml`` as ``module:Class``, imported from the folder of the task files.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .errors import RalphError
from .handler import Handler

GROUP = "ralph.handlers"


class Registry:
    def __init__(self, local: dict[str, str] | None = None, local_root: Path | None = None) -> None:
        self._targets: dict[str, str] = {ep.name: ep.value for ep in entry_points(group=GROUP)}
        self._targets.update(local or {})
        self._local = set(local or {})
        self._local_root = local_root
        self._loaded: dict[str, type[Handler]] = {}

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: str) -> bool:
        return name in self._targets

    def load(self, name: str) -> type[Handler]:
        if name in self._loaded:
            return self._loaded[name]
        target = self._targets.get(name)
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
