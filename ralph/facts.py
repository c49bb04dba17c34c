"""Facts: what a task hands to the tasks after it, typed.

A fact is a frozen dataclass (a machine and how to reach it, a ComfyUI server, images): a
handler declares the kinds it ``provides`` and ``needs``, publishes one with
``ctx.publish(fact)`` and reads one with ``ctx.fact(Kind)``.  Facts live in state.json among
the resources tasks share, so a resumed run has them, and a task that read a fact is redone
when it is released (its machine is gone).  ``ralph check`` walks the tasks in order and names
each need that no earlier task provides, before anything runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

F = TypeVar("F", bound="Fact")


class Fact:
    """Base of the facts' dataclasses."""

    key: ClassVar[str]  # its name among state.json's resources
    what: ClassVar[str]  # how a message names it: "a machine"

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_record(cls: type[F], value: Any) -> F | None:
        """The fact a record holds, or None for one that is not complete (a pod still being made)."""
        if not isinstance(value, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{k: v for k, v in value.items() if k in names})
        except TypeError:
            return None


@dataclass(frozen=True)
class Need:
    """A fact a handler cannot work without, unless a parameter stands in for it: ``unless`` names
    each such parameter, ``"server"`` (any value) or ``"executor=serverless"`` (that value)."""

    fact: type[Fact]
    unless: tuple[str, ...] = ()

    def waived(self, params: dict[str, Any]) -> bool:
        for condition in self.unless:
            name, _, value = condition.partition("=")
            if (params.get(name) == value) if value else params.get(name):
                return True
        return False

    def instead(self) -> str:
        """`` (or give server:)``: what a message offers in its place."""
        given = [f"{c.partition('=')[0]}: {c.partition('=')[2]}" if "=" in c else f"{c}:" for c in self.unless]
        return f" (or give {', or '.join(given)})" if given else ""
