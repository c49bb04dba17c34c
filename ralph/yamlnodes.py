"""YAML read as nodes that keep their lines (so errors name them), then built by the safe loader.

Composition goes through libyaml when PyYAML was built with it: ten to twenty times faster than
the pure-Python reader, with the same nodes and the same marks.
"""

from __future__ import annotations

from typing import Any

import yaml

_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The document's node tree; raises yaml.YAMLError (with ``problem_mark``) on bad YAML."""
    return yaml.compose(text, Loader=_COMPOSER)


def construct(node: yaml.Node | None) -> Any:
    """The value of a node, built by the safe loader (no tag builds anything but plain data)."""
    if node is None:
        return None
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()
