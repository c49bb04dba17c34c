"""mistune's block parser, taught to say on which line each block starts.

mistune 3 records no source positions.  Its block state keeps a cursor into the text it is
parsing, and list items and block quotes are parsed from derived child strings whose lines
map one to one onto the file's lines.  Two small subclasses stamp every block token with
its 0-based file line (``token["line"]``):

* ``_State`` stamps tokens as they are appended, and gives each child state the file line
  its text starts on;
* ``_Parser`` records where the block being parsed starts, because a few rules (lists,
  block quotes) move the cursor before they append their token.

This leans on mistune internals, so pyproject pins the range and tests/test_positions.py
compares every stamped line against the text.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from re import Match
from typing import Any

from mistune.block_parser import BlockParser
from mistune.core import BlockState

Token = dict[str, Any]

_EMPTY_LIST_ITEM = re.compile(r"^[ \t]*(?:[*+-]|\d{1,9}[.)])[ \t]*$")


class _State(BlockState):
    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.first_line = 0  # file line of this state's first source line
        self.block_start: int | None = None  # offset of the block being parsed
        self.container: str | None = None  # "list" or "block_quote" while parsing one
        self.item_start = 0  # offset of the current list item's marker line
        self._line_starts: list[int] | None = None

    def process(self, src: str) -> None:
        super().process(src)
        self._line_starts = None

    def line_at(self, offset: int) -> int:
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.src)]
        return self.first_line + bisect_right(self._line_starts, offset) - 1

    def _stamp(self, token: Token, offset: int) -> None:
        token.setdefault("line", self.line_at(offset))

    def append_token(self, token: Token) -> None:
        self._stamp(token, self.cursor if self.block_start is None else self.block_start)
        super().append_token(token)

    def prepend_token(self, token: Token) -> None:
        self._stamp(token, self.cursor if self.block_start is None else self.block_start)
        super().prepend_token(token)

    def add_paragraph(self, text: str) -> None:
        # Paragraph text is always added from the cursor, which sits at its start.
        super().add_paragraph(text)
        self._stamp(self.tokens[-1], self.cursor)

    def child_state(self, src: str, lazy_line_starts: Any = None) -> BlockState:
        child = super().child_state(src, lazy_line_starts)
        assert isinstance(child, _State)
        if self.container == "list":
            marker_line = self.get_line(self.item_start)
            # An item whose marker line is empty starts its text on the next line.
            child.first_line = self.line_at(self.item_start) + bool(_EMPTY_LIST_ITEM.match(marker_line))
            # The list parser has consumed the next item's marker line, if there is one.
            self.item_start = self.src.rfind("\n", 0, max(self.cursor - 1, 0)) + 1
        elif self.container == "block_quote" and self.block_start is not None:
            child.first_line = self.line_at(self.block_start)
        return child


class _Parser(BlockParser):
    state_cls = _State

    def parse_method(self, m: Match[str], state: BlockState) -> int | None:
        assert isinstance(state, _State)
        saved = state.block_start, state.container, state.item_start
        state.block_start = m.start()
        state.container = m.lastgroup if m.lastgroup in ("list", "block_quote") else None
        state.item_start = m.start()
        try:
            return super().parse_method(m, state)
        finally:
            state.block_start, state.container, state.item_start = saved


_parser = _Parser()


def parse_blocks(text: str) -> list[Token]:
    """Block tokens of ``text`` (lines ending in ``\\n``), each with its 0-based ``line``.

    Inline markup is not parsed: headings, paragraphs and list items keep their raw text.
    """
    state = _State()
    state.process(text)
    _parser.parse(state)
    return state.tokens
