"""Every line number ralph reports points at the line that really holds the thing.

ralph edits a file by line, so a wrong line number edits the wrong line.  These tests check
the parser's positions against the file text for every variant of the real task file, pin
the mistune internals ``ralph.positions`` leans on, and compare the stamped block lines with
the text (and with markdown-it-py as a referee) over many generated documents.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from importlib.metadata import version
from pathlib import Path

import mistune
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from mistune.block_parser import BlockParser
from mistune.core import BlockState
from packaging.specifiers import SpecifierSet

from ralph.model import TaskFile
from ralph.parser import parse_bytes
from ralph.positions import Token, parse_blocks
from ralph.textfile import Text
from tests.variants import Variant, variants

ROOT = Path(__file__).resolve().parents[1]
BOX = re.compile(r"^[ \t>]*(?:[-*+]|\d{1,9}[.)])[ \t]+\[(?P<mark>[ xX])\][ \t]+(?P<text>.*)$")


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def assert_positions(file: TaskFile, text: Text, heading: str = "###") -> None:
    """Check each reported line against the text of that line in the file."""
    lines = text.lines

    def at(line: int) -> str:
        assert 1 <= line <= len(lines), f"line {line} is outside the file ({len(lines)} lines)"
        return lines[line - 1]

    assert re.match(r"#[ \t]", at(file.title_line)) and _norm(file.title) in _norm(at(file.title_line))
    criteria = [c for t in file.tasks for c in t.criteria] + file.success_criteria
    for criterion in criteria:
        found = BOX.match(at(criterion.line))
        assert found, f"line {criterion.line} holds no checkbox: {at(criterion.line)!r}"
        assert _norm(found["text"]) == _norm(criterion.text)
        assert (found["mark"] != " ") == criterion.checked
    for task in file.tasks:
        assert re.match(rf"{heading}[ \t]+{task.number}[.)][ \t]", at(task.line)), at(task.line)
        assert _norm(task.title) in _norm(at(task.line))
        assert task.line <= task.end_line <= len(lines)
        for c in task.criteria:
            assert task.line < c.line <= task.end_line
        for _key, field in task.fields.items():
            source = at(field.line)
            assert re.match(rf"[ \t]*\*\*{re.escape(field.key)}", source), source
            assert task.line < field.line <= task.end_line
        status = at(task.fields["status"].line)
        assert re.match(rf"\*\*Status\*\*:[ \t]*{task.status}\b", status, re.I), status
        for block in task.code_blocks:
            assert re.match(r"[ \t>]*(```|~~~)", at(block.line)), at(block.line)
            body = block.text.split("\n")[0]
            assert body.strip() in at(block.first_line)
        # Between the end of the task and the next heading: only blank lines and a rule.
        for line in range(task.end_line + 1, len(lines) + 1):
            if at(line).startswith("#"):
                break
            assert re.fullmatch(r"[ \t]*|-{3,}", at(line)), at(line)
    for item in file.exit_conditions:
        assert re.match(r"[-*+][ \t]+", at(item.line)) and item.text in at(item.line)


@pytest.mark.parametrize("variant", list(variants()), ids=lambda v: v.id)
def test_positions_of_every_variant(variant: Variant) -> None:
    file, text = parse_bytes(variant.data, Path("RALPH-001.md"))
    assert_positions(file, text, variant.heading)
    assert tuple(len(t.criteria) for t in file.tasks) == variant.criteria
    texts = {_norm(c.text) for t in file.tasks for c in t.criteria}
    for decoy in variant.decoys:
        assert _norm(decoy) not in texts, f"{decoy!r} sits in code or a comment, not a criterion"


def test_example_lines_pinned() -> None:
    """A few positions worked out by hand from the example, as a check on the checker."""
    file, text = parse_bytes(next(variants()).data, Path("RALPH-001.md"))
    assert [t.line for t in file.tasks] == [21, 32, 48, 116, 126, 135]
    assert [c.line for c in file.tasks[1].criteria] == list(range(36, 43))
    assert [c.line for c in file.success_criteria] == [9, 10, 11]
    assert [b.line for b in file.tasks[2].code_blocks] == [56]
    assert file.tasks[2].prompts["positive"].line == 111


# -- mistune: the pinned range and the internals positions.py relies on ----------------------


def test_installed_mistune_within_pyproject_range() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("mistune"))
    assert version("mistune") in SpecifierSet(spec.removeprefix("mistune")), (version("mistune"), spec)
    assert mistune.__version__ == version("mistune")


def test_mistune_internals_used_by_positions() -> None:
    """The hooks ralph.positions overrides still exist and still mean what it assumes."""
    for name in ("append_token", "prepend_token", "add_paragraph", "child_state", "process", "get_line"):
        assert callable(getattr(BlockState, name)), name
    assert callable(BlockParser.parse_method)
    state = BlockState()
    state.process("- a\n")
    assert state.cursor == 0 and state.src == "- a\n"
    child = state.child_state("a\n")
    assert child.src == "a\n" and child.parent is state
    # Plain mistune still records no positions: if it starts to, positions.py may be redundant.
    plain = BlockState()
    plain.process("# T\n\n- a\n")
    BlockParser().parse(plain)
    assert all("line" not in t for t in plain.tokens)


def test_mistune_token_shapes_used_by_parser() -> None:
    tokens = parse_blocks("# T\n\n~~~~ py x\ncode\n~~~~\n\n    ind\n\n<!--\nc\n-->\n- [x] a\n  ```\n  b\n")
    heading, _, fence, _, indented, html, lst = tokens  # the indented block takes its blank line
    assert heading["type"] == "heading" and heading["attrs"]["level"] == 1 and heading["text"] == "T"
    assert fence["type"] == "block_code" and fence["style"] == "fenced"
    assert (fence["marker"], fence["attrs"]["info"], fence["raw"]) == ("~~~~", "py x", "code\n")
    assert indented["style"] == "indent" and indented["raw"] == "ind"
    assert html["type"] == "block_html" and html["raw"] == "<!--\nc\n-->\n"
    item = lst["children"][0]
    assert lst["type"] == "list" and item["type"] == "list_item"
    assert item["children"][0]["type"] == "block_text" and item["children"][0]["text"].startswith("[x] a")
    assert item["children"][1]["raw"] == "b\n"  # a fence left open ends with its item
    assert [t["line"] for t in (heading, fence, indented, html, item["children"][0], item["children"][1])] == [
        0, 2, 6, 8, 11, 12,
    ]


# -- stamped lines against the text, over generated documents --------------------------------

_words = st.text(alphabet="abcdeé xyz`*_", min_size=1, max_size=12).map(str.strip).filter(bool)
_word = st.sampled_from(["alpha", "beta", "gamma", "été", "ポッド", "x_y", "a*b*", "`c`"])
_phrase = st.lists(_word, min_size=1, max_size=4).map(" ".join)


@st.composite
def _list_block(draw: st.DrawFn, depth: int = 0) -> list[str]:
    marker = draw(st.sampled_from(["-", "*", "+", "1.", "2)"]))
    indent = " " * (len(marker) + 1)
    lines: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        box = draw(st.sampled_from(["", "[ ] ", "[x] ", "[X] "]))
        lines.append(f"{marker} {box}{draw(_phrase)}")
        extra = draw(st.sampled_from(["", "", "cont", "fence", "nested", "blank", "open-fence"]))
        if extra == "cont":
            lines.append(indent + draw(_phrase))
        elif extra == "fence":
            lines += [indent + "```", indent + f"- [ ] {draw(_phrase)}", indent + "```"]
        elif extra == "open-fence":
            lines += [indent + "~~~", indent + draw(_phrase)]
        elif extra == "nested" and depth < 2:
            lines += [indent + line for line in draw(_list_block(depth + 1))]
        elif extra == "blank":
            lines += ["", indent + draw(_phrase)]
    return lines


@st.composite
def _block(draw: st.DrawFn) -> list[str]:
    kind = draw(
        st.sampled_from(["atx", "setext", "para", "list", "fence", "indent", "quote", "html", "rule", "status"])
    )
    if kind == "atx":
        return [f"{'#' * draw(st.integers(1, 4))} {draw(_phrase)}"]
    if kind == "setext":
        # After a blank line: mistune lets a setext underline end a list item's lazy
        # paragraph, where CommonMark does not, and the referee would disagree on that.
        return ["", draw(_phrase), draw(st.sampled_from(["===", "---"]))]
    if kind == "para":
        return [draw(_phrase) for _ in range(draw(st.integers(1, 3)))]
    if kind == "list":
        return draw(_list_block())
    if kind == "fence":
        fence = draw(st.sampled_from(["```", "~~~", "````"]))
        return [fence + draw(st.sampled_from(["", "yaml"])), f"- [ ] {draw(_phrase)}", "# not a heading", fence]
    if kind == "indent":  # after a blank line: mistune reads it as lazy text after a container
        return ["", "    " + draw(_phrase), "    - [ ] " + draw(_phrase)]
    if kind == "quote":
        return ["> " + line for line in draw(st.one_of(_list_block(), st.just([draw(_phrase)])))]
    if kind == "html":
        return ["<!--", f"- [ ] {draw(_phrase)}", "-->"]
    if kind == "rule":  # "---" right under a paragraph is a setext underline: see above
        return draw(st.sampled_from([["", "---"], ["***"], ["_ _ _"]]))
    return [f"**Status**: {draw(st.sampled_from(['PENDING', 'DONE']))}"]


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for block in draw(st.lists(_block(), min_size=1, max_size=12)):
        lines += block + draw(st.sampled_from([[""], [""], [], ["", ""]]))
    return "\n".join(lines) + "\n"


def _flat(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for token in tokens:
        out.append(token)
        out += _flat(token.get("children") or [])
    return out


_CONTAINER = re.compile(r"^(?:[ \t]*(?:>|[-*+]|\d{1,9}[.)])(?=[ \t]|$)[ \t]?)*")


def _assert_stamp_matches_text(token: Token, lines: list[str]) -> None:
    line = token["line"]
    source = lines[line]
    body = _CONTAINER.sub("", source, count=1).strip()
    kind = token["type"]
    if kind in ("paragraph", "block_text"):
        first = token["text"].split("\n", 1)[0].strip()
        assert body == first or source.strip().endswith(first), (line, source, first)
    elif kind == "heading":
        text = token["text"].split("\n", 1)[0].strip()  # a setext heading may span lines
        assert text in source, (line, source, text)
    elif kind == "block_code" and token["style"] == "fenced":
        assert token["marker"] in source, (line, source)
    elif kind == "block_code":
        assert token["raw"].split("\n", 1)[0].strip() in source, (line, source)
    elif kind == "block_html":
        assert token["raw"].split("\n", 1)[0].strip() in source, (line, source)
    elif kind == "thematic_break":
        assert re.fullmatch(r"[ \t>]*(?:[-*_][ \t]*){3,}", source), (line, source)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans())
def test_stamped_lines_hold_their_blocks(doc: str, ending: str, bom: bool) -> None:
    data = (("\ufeff" if bom else "") + doc.replace("\n", ending)).encode()
    text = Text.decode(data)
    tokens = _flat(parse_blocks(text.normalised()))
    for token in tokens:
        if "line" in token and token["type"] != "blank_line":
            _assert_stamp_matches_text(token, text.lines)


def _referee_starts(doc: str) -> dict[str, list[int]]:
    md = MarkdownIt("commonmark")
    starts: dict[str, list[int]] = {"heading": [], "code": [], "html": []}
    for token in md.parse(doc):
        if token.map is None:
            continue
        if token.type == "heading_open":
            starts["heading"].append(token.map[0])
        elif token.type in ("fence", "code_block"):
            starts["code"].append(token.map[0])
        elif token.type == "html_block":
            starts["html"].append(token.map[0])
    return starts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_block_starts_agree_with_markdown_it(doc: str) -> None:
    """Headings, code and HTML blocks start on the lines CommonMark's reference port says."""
    ours: dict[str, list[int]] = {"heading": [], "code": [], "html": []}
    for token in _flat(parse_blocks(doc)):
        kind = {"heading": "heading", "block_code": "code", "block_html": "html"}.get(token["type"])
        if kind:
            ours[kind].append(token["line"])
    assert {k: sorted(v) for k, v in ours.items()} == {k: sorted(v) for k, v in _referee_starts(doc).items()}
