"""Lossless text I/O: bytes in, the same bytes out, whatever endings, BOM or final newline."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ralph.edits import TaskFileWriter
from ralph.textfile import DecodeError, Text, read_text, write_atomically
from tests.variants import Variant, variants

ALL = list(variants())

# Characters that end lines for str.splitlines() but are text for markdown, plus the real endings.
_TRICKY = "\r\n\f\v\x1c\x1d\x1e\x85\u2028\u2029\ufeff\t "
_texts = st.text(alphabet=st.one_of(st.sampled_from(_TRICKY), st.characters(codec="utf-8")), max_size=200)


@pytest.mark.parametrize("variant", ALL, ids=lambda v: v.id)
def test_decode_encode_is_identity_on_every_variant(variant: Variant) -> None:
    text = Text.decode(variant.data)
    assert text.encode() == variant.data
    assert text.bom == variant.bom
    assert bool(text.endings[-1]) == variant.final_newline
    assert not any(re.search("[\r\n]", line) for line in text.lines)


@pytest.mark.parametrize("variant", ALL, ids=lambda v: v.id)
def test_parse_and_empty_write_leave_bytes_identical(variant: Variant, tmp_path: Path) -> None:
    path = tmp_path / "RALPH-001.md"
    path.write_bytes(variant.data)
    mtime = path.stat().st_mtime_ns
    file, missing = TaskFileWriter(path).apply([])
    assert missing == []
    assert path.read_bytes() == variant.data
    assert path.stat().st_mtime_ns == mtime, "nothing to change: the file is not even rewritten"
    assert len(file.tasks) == 6


@settings(max_examples=200, deadline=None)
@given(_texts, st.booleans())
def test_any_utf8_text_round_trips(body: str, bom: bool) -> None:
    data = (("\ufeff" if bom else "") + body).encode("utf-8")
    text = Text.decode(data)
    assert text.encode() == data
    assert len(text.lines) == len(text.endings)
    assert all(ending in ("\n", "\r\n", "\r") for ending in text.endings[:-1])
    assert not any(re.search("[\r\n]", line) for line in text.lines)
    # Only CR, LF and CRLF split lines: form feeds, NEL and U+2028 stay inside a line.
    assert len(text.lines) == len(re.findall(r"\r\n|\r|\n", text.encode().decode("utf-8"))) + bool(
        text.lines and not text.endings[-1]
    )
    assert text.normalised().count("\n") == len(text.lines)


def test_splitting_keeps_unicode_separators_inside_lines() -> None:
    text = Text.decode("a\fb\x85c\u2028d\r\ne\rf\n\ng".encode())
    assert text.lines == ["a\fb\x85c\u2028d", "e", "f", "", "g"]
    assert text.endings == ["\r\n", "\r", "\n", "\n", ""]


def test_only_a_leading_bom_is_a_bom() -> None:
    text = Text.decode("\ufeff# T\n\ufeffx\n".encode())
    assert text.bom and text.lines == ["# T", "\ufeffx"]
    assert text.encode() == "\ufeff# T\n\ufeffx\n".encode()


def test_empty_file() -> None:
    text = Text.decode(b"")
    assert text.lines == [] and text.encode() == b""


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"\xff# T\n", 1),
        (b"# T\n\nok\n\xc3(\n", 4),
        (b"# T\r\n\r\nok\r\n\xc3(\r\n", 4),
        (b"# T\r\rok\r\xc3(\r", 4),  # CR-only: each CR ends a line
        (b"# T\r\n\rok\n\xe2\x82\n", 4),  # mixed, truncated sequence
        (b"\xef\xbb\xbf# T\nok \xed\xa0\x80\n", 2),  # a BOM, then an encoded surrogate
    ],
)
def test_invalid_utf8_names_the_line_of_the_bad_byte(data: bytes, line: int) -> None:
    with pytest.raises(DecodeError) as caught:
        Text.decode(data)
    assert caught.value.line == line
    assert "UTF-8" in str(caught.value)


def test_dominant_newline_is_used_for_inserted_lines() -> None:
    text = Text.decode(b"a\r\nb\r\nc\nd")
    assert text.newline == "\r\n"
    text.replace(1, 1, ["new"])
    assert text.encode() == b"a\r\nnew\r\nb\r\nc\nd"
    assert Text.decode(b"single line").newline == "\n"


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
def test_replace_at_an_unterminated_end(ending: str) -> None:
    base = f"a{ending}b{ending}c".encode()
    appended = Text.decode(base)
    appended.replace(3, 3, ["d", "e"])
    assert appended.encode() == f"a{ending}b{ending}c{ending}d{ending}e".encode()
    last = Text.decode(base)
    last.replace(2, 3, ["C1", "C2"])
    assert last.encode() == f"a{ending}b{ending}C1{ending}C2".encode()
    removed = Text.decode(base)
    removed.replace(1, 3, [])
    assert removed.encode() == b"a"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["", "a", "b é", "\t"]), st.sampled_from(["\n", "\r\n", "\r"])), max_size=8),
    st.booleans(),
    st.data(),
)
def test_replace_touches_only_its_range(pairs: list[tuple[str, str]], final: bool, data: st.DataObject) -> None:
    """Lines outside the range keep their bytes, and the result reads back as exactly the new lines."""
    lines = [line for line, _ in pairs]
    endings = [ending for _, ending in pairs]
    if endings and not final:
        endings[-1] = ""
    text = Text.split("".join(line + ending for line, ending in zip(lines, endings, strict=False)))
    lines, endings = text.lines[:], text.endings[:]  # a CR then an empty LF line is one CRLF
    start = data.draw(st.integers(0, len(lines)))
    stop = data.draw(st.integers(start, len(lines)))
    new = data.draw(st.lists(st.sampled_from(["", "x", "yz"]), max_size=3))
    # An empty last line without a newline is no bytes at all: not representable.
    expected = lines[:start] + new + lines[stop:]
    assume(not (lines and not endings[-1] and stop == len(lines) and expected and not expected[-1]))
    text.replace(start, stop, new)
    again = Text.decode(text.encode())
    assert again.lines == expected
    assert again.endings[: max(start - 1, 0)] == endings[: max(start - 1, 0)]
    tail = len(lines) - stop
    if tail > 1:
        assert again.endings[-tail:-1] == endings[stop:-1]
    if again.lines and lines:
        assert bool(again.endings[-1]) == bool(endings[-1]), "a final newline is kept, and none is added"


def test_read_text_returns_bytes_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.md"
    path.write_bytes(b"# T\r\nx")
    data, text = read_text(path)
    assert data == b"# T\r\nx" and text.lines == ["# T", "x"]


def test_write_atomically_keeps_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "f.md"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    write_atomically(path, b"new\r\n")
    assert path.read_bytes() == b"new\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.md"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f.md"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.md"]
