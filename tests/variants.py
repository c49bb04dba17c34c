"""Variants of the real task file (RALPH-001) and generated task files, for parser tests.

Each variant is the example rewritten the way people's files differ — other list markers,
ticked boxes, nested criteria, checkboxes in code fences and HTML comments, ``####``
headings, tabs, hard breaks — and then given every kind of line ending, a BOM or not, and a
final newline or not.  A variant carries what a correct parse must report, worked out from
the rewrite itself, so tests compare the parse against an independent expectation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from tests.repo_files import EXAMPLE

# What the example itself holds: criteria per task, priorities, success criteria, exit conditions.
EXAMPLE_CRITERIA = (2, 7, 2, 3, 2, 3)
EXAMPLE_PRIORITIES = ("HIGH", "HIGH", "HIGH", "HIGH", "HIGH", "MEDIUM")
EXAMPLE_SUCCESS = 3
EXAMPLE_EXITS = 4

ENDINGS = {"lf": "\n", "crlf": "\r\n", "cr": "\r", "mixed": None}
_MIXED = ("\n", "\r\n", "\r")


@dataclass(frozen=True)
class Variant:
    """A task file as bytes, with what its parse must say."""

    name: str
    text: str  # LF-only text before endings/BOM are applied
    criteria: tuple[int, ...] = EXAMPLE_CRITERIA  # per task, in file order
    checked: int = 0  # criteria (task and success) ticked in total
    success: int = EXAMPLE_SUCCESS
    heading: str = "###"
    ending: str = "lf"
    bom: bool = False
    final_newline: bool = True
    decoys: tuple[str, ...] = field(default=())  # checkbox texts that must NOT become criteria

    @property
    def data(self) -> bytes:
        text = self.text if self.final_newline else self.text.rstrip("\n")
        lines = text.split("\n")
        if self.ending == "mixed":
            endings = [_MIXED[i % 3] for i in range(len(lines) - 1)]
            # A CR before an empty LF-ended line would read back as one CRLF: take CRLF there.
            for i in range(len(endings) - 1):
                if endings[i] == "\r" and not lines[i + 1] and endings[i + 1] == "\n":
                    endings[i] = "\r\n"
            body = "".join(line + ending for line, ending in zip(lines, endings, strict=False)) + lines[-1]
        else:
            body = ENDINGS[self.ending].join(lines)
        return (("\ufeff" if self.bom else "") + body).encode("utf-8")

    @property
    def id(self) -> str:
        nl = "" if self.final_newline else "-nofinal"
        return f"{self.name}-{self.ending}{'-bom' if self.bom else ''}{nl}"


def example_text() -> str:
    return EXAMPLE.read_bytes().decode("utf-8")


def _lines_after(text: str, anchor: str, new: list[str]) -> str:
    """Insert ``new`` lines right after the first line that ends with ``anchor``."""
    lines = text.split("\n")
    index = next(i for i, line in enumerate(lines) if line.endswith(anchor))
    return "\n".join(lines[: index + 1] + new + lines[index + 1 :])


def _markers(marker: str) -> Callable[[Variant], Variant]:
    def apply(v: Variant) -> Variant:
        return replace(v, name=f"marker{marker}", text=re.sub(r"(?m)^([ \t]*)- ", rf"\g<1>{marker} ", v.text))

    return apply


def _ticked(v: Variant) -> Variant:
    """Every other criterion ticked, alternating ``[x]`` and ``[X]``."""
    count = 0

    def tick(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return match[1] + ("[x]" if count % 4 == 1 else "[X]" if count % 4 == 3 else "[ ]")

    text = re.sub(r"(?m)^(- )\[ \]", tick, v.text)
    return replace(v, name="ticked", text=text, checked=v.checked + (count + 1) // 2)


def _nested(v: Variant) -> Variant:
    """Criteria nested two levels deep under criteria of tasks 1 and 2 (they are criteria too)."""
    text = _lines_after(v.text, "SSH accessible", ["  - [x] Clé SSH ajoutée", "    - [ ] Port 22 ouvert"])
    text = _lines_after(text, "torch >= 2.4.0 (fix comfy_kitchen)", ["   - [ ] CUDA 12.4 détecté"])
    criteria = (v.criteria[0] + 2, v.criteria[1] + 1, *v.criteria[2:])
    return replace(v, name="nested", text=text, criteria=criteria, checked=v.checked + 1)


def _fences(v: Variant) -> Variant:
    """Checkboxes inside fenced code at top level and inside list items: not criteria."""
    decoys = ("Boîte dans le workflow", "Boîte dans un bloc tilde", "Boîte clôturée dans un item")
    text = _lines_after(v.text, "Node 14: SaveImage (filename_prefix: quality_tests/elena_refiner)",
                        [f"- [ ] {decoys[0]}"])
    text = _lines_after(
        text,
        "(RTX A5000 ou équivalent)",
        ["- [ ] Critère avec du code", "  ```text", f"  - [ ] {decoys[2]}", "  ```"],
    )
    text = _lines_after(text, "Qualité visage maintenue", ["", "~~~~ markdown", f"- [x] {decoys[1]}", "~~~~"])
    criteria = (v.criteria[0] + 1, *v.criteria[1:])
    return replace(v, name="fences", text=text, criteria=criteria, decoys=v.decoys + decoys)


def _html(v: Variant) -> Variant:
    """Checkboxes (and a stale status) inside HTML comments: ignored."""
    decoys = ("Ancienne boîte commentée", "Boîte dans un commentaire long")
    text = _lines_after(
        v.text,
        "- [ ] Face reference uploadée dans `/workspace/ComfyUI/input/`",
        [f"<!-- - [ ] {decoys[0]} -->", "<!--", f"- [x] {decoys[1]}", "**Status**: DONE", "-->"],
    )
    return replace(v, name="html", text=text, decoys=v.decoys + decoys)


def _level4(v: Variant) -> Variant:
    return replace(v, name="h4", text=re.sub(r"(?m)^### (\d+\.)", r"#### \1", v.text), heading="####")


def _tabs(v: Variant) -> Variant:
    """Tabs after field keys, inside criteria text, and in code."""
    text = v.text.replace("**Status**: PENDING", "**Status**:\tPENDING")
    text = text.replace("- [ ] SSH accessible", "- [ ] SSH\taccessible")
    text = text.replace("Node 13: VAEDecode", "Node 13:\tVAEDecode")
    return replace(v, name="tabs", text=text)


def _hard_break(v: Variant) -> Variant:
    """Two trailing spaces after the status (a markdown hard break) must survive edits."""
    return replace(v, name="hardbreak", text=v.text.replace("**Status**: PENDING\n", "**Status**: PENDING  \n"))


def _unicode(v: Variant) -> Variant:
    """Titles outside Latin-1, one in decomposed (NFD) form."""
    text = v.text.replace("# RALPH-TASK: Elena Grain Reduction", "# RALPH-TASK: Réduction du grain 🎨 粒子")
    text = text.replace("### 5. Terminer pod", "### 5. ポッドを終了 — Terminer pod ✅")
    text = text.replace("### 6. Documenter résultats", "### 6. Documenter re\u0301sultats")
    return replace(v, name="unicode", text=text)


TRANSFORMS: dict[str, Callable[[Variant], Variant]] = {
    "example": lambda v: v,
    "marker*": _markers("*"),
    "marker+": _markers("+"),
    "ticked": _ticked,
    "nested": _nested,
    "fences": _fences,
    "html": _html,
    "h4": _level4,
    "tabs": _tabs,
    "hardbreak": _hard_break,
    "unicode": _unicode,
}


def _everything(v: Variant) -> Variant:
    for name in ("ticked", "nested", "fences", "html", "tabs", "marker*", "h4", "hardbreak", "unicode"):
        v = TRANSFORMS[name](v)
    return replace(v, name="everything")


def structural() -> list[Variant]:
    base = Variant("example", example_text())
    return [transform(base) for transform in TRANSFORMS.values()] + [_everything(base)]


def variants() -> Iterator[Variant]:
    """Every structural variant × ending × BOM × final newline."""
    for v in structural():
        for ending in ENDINGS:
            for bom in (False, True):
                for final in (True, False):
                    yield replace(v, ending=ending, bom=bom, final_newline=final)
