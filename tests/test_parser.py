"""The parser: what it reads from task files, and the errors it gives for files it must refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from ralph.edits import SetStatus, TaskFileWriter
from ralph.errors import ParseError
from ralph.model import RESULTS_BEGIN, RESULTS_END
from ralph.parser import parse_bytes, parse_file
from tests.variants import (
    EXAMPLE,
    EXAMPLE_CRITERIA,
    EXAMPLE_EXITS,
    EXAMPLE_PRIORITIES,
    EXAMPLE_SUCCESS,
    Variant,
    variants,
)

HEAD = "# RALPH-TASK: T\n\n## Tasks\n\n"


def parse(text: str):
    return parse_bytes(text.encode(), Path("t.md"))[0]


@pytest.mark.parametrize("variant", list(variants()), ids=lambda v: v.id)
def test_every_variant_reads_as_the_example(variant: Variant) -> None:
    file, _ = parse_bytes(variant.data, Path("t.md"))
    assert [t.number for t in file.tasks] == [1, 2, 3, 4, 5, 6]
    assert tuple(t.priority for t in file.tasks) == EXAMPLE_PRIORITIES
    assert {t.status for t in file.tasks} == {"PENDING"}
    assert tuple(len(t.criteria) for t in file.tasks) == variant.criteria
    assert len(file.success_criteria) == variant.success
    assert len(file.exit_conditions) == EXAMPLE_EXITS
    ticked = sum(c.checked for t in file.tasks for c in t.criteria) + sum(c.checked for c in file.success_criteria)
    assert ticked == variant.checked
    assert file.tasks[2].code("") is not None, "task 3's workflow block"
    assert "BigLove" in file.context["checkpoint"].value


def test_example_contents() -> None:
    file, _ = parse_file(EXAMPLE)
    assert file.title == "Elena Grain Reduction - Refiner Pass"
    assert tuple(len(t.criteria) for t in file.tasks) == EXAMPLE_CRITERIA
    assert len(file.success_criteria) == EXAMPLE_SUCCESS
    assert file.tasks[0].notes and "runpod-quality-tests.mjs" in file.tasks[0].notes
    assert file.tasks[2].prompts["negative"].text.startswith("grainy, noisy")
    assert "KSampler #2 - REFINER PASS" in file.tasks[2].code_blocks[0].text
    assert file.tasks[1].criteria[1].text == "torch >= 2.4.0 (fix comfy_kitchen)"
    assert [c.text for c in file.tasks[4].criteria] == ["Pod terminé (pas juste pause)",
                                                        "Confirmation via API qu'aucun pod actif"]


# -- regressions: structures that hid lines from the parser ---------------------------------


def test_a_line_right_after_indented_code_is_read() -> None:
    """Indented code was counted two lines longer (as if fenced), hiding the status below it."""
    file = parse(HEAD + "### 1. A\n\n    indented code\n**Status**: DONE\n- [ ] a\n")
    assert file.tasks[0].status == "DONE" and file.tasks[0].fields["status"].line == 8


def test_a_fence_left_open_in_an_item_ends_with_the_item() -> None:
    """The next item is markdown again: its checkbox is a criterion, and fields below are read."""
    file = parse(HEAD + "### 1. A\n**Status**: PENDING\n- [ ] a\n  ```\n  code\n- [ ] b\n**Priority**: LOW\n")
    task = file.tasks[0]
    assert [(c.text, c.line) for c in task.criteria] == [("a", 7), ("b", 10)]
    assert task.priority == "LOW"


def test_fields_inside_an_html_comment_are_not_read() -> None:
    """A commented-out status above the real one used to win."""
    text = HEAD + "### 1. A\n<!--\n**Status**: DONE\n- [x] old\n-->\n**Status**: PENDING\n- [ ] new\n"
    task = parse(text).tasks[0]
    assert task.status == "PENDING" and task.fields["status"].line == 10
    assert [c.text for c in task.criteria] == ["new"]


def test_checkboxes_in_code_comments_and_results_are_not_criteria() -> None:
    text = HEAD + (
        "### 1. A\n**Status**: PENDING\n"
        "- [ ] real\n"
        "  - [X] nested real\n"
        "<!-- - [ ] comment -->\n"
        "```\n- [ ] fenced\n```\n\n"
        "    - [ ] indented code\n\n"
        "> - [x] quoted real\n\n"
        f"{RESULTS_BEGIN}\n- [x] ralph's own line\n{RESULTS_END}\n"
    )
    task = parse(text).tasks[0]
    assert [(c.text, c.checked) for c in task.criteria] == [("real", False), ("nested real", True),
                                                            ("quoted real", True)]
    assert task.results == (18, 20)


def test_tasks_without_a_tasks_section_and_other_heading_forms() -> None:
    file = parse("# T\n\n### 1) First\n**Status**: pending\n\n#### 2. Second\n**Status**: Done\n")
    assert [(t.number, t.title, t.status) for t in file.tasks] == [(1, "First", "PENDING"), (2, "Second", "DONE")]


def test_items_that_are_not_criteria() -> None:
    task = parse(HEAD + "### 1. A\n**Status**: PENDING\n- [ ]\n- [x]done\n- [ ] ok\n").tasks[0]
    assert [c.text for c in task.criteria] == ["ok"]


# -- errors: the line, a clear message, and no write -----------------------------------------

EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")


def _nth(text: str, old: str, new: str, nth: int) -> str:
    """``text`` with the ``nth`` (1-based) occurrence of ``old`` replaced."""
    parts = text.split(old)
    return old.join(parts[:nth]) + new + old.join(parts[nth:])


CASES = {
    "unknown status": (
        _nth(EXAMPLE_TEXT, "**Status**: PENDING", "**Status**: WAITING", 2),
        34,
        ["unknown status 'WAITING'", "PENDING", "NEEDS_REVIEW"],
    ),
    "missing status": (
        _nth(EXAMPLE_TEXT, "**Status**: PENDING\n", "", 3),
        48,
        ["task 3", "no '**Status**: PENDING' line"],
    ),
    "duplicate task numbers": (
        EXAMPLE_TEXT.replace("### 4. ", "### 2. "), 116, ["task number 2 already used on line 32"]),
    "unterminated results block": (
        EXAMPLE_TEXT.replace(
            "**Notes**: BigLove = 6.5GB", f"{RESULTS_BEGIN}\n- ralph wrote this\n\n**Notes**: BigLove = 6.5GB"
        ),
        44,
        ["results block has no closing", RESULTS_END],
    ),
    "no title": (EXAMPLE_TEXT.replace("# RALPH-TASK:", "RALPH-TASK:", 1), 1, ["no title", "# RALPH-TASK:"]),
    "unknown priority": (
        EXAMPLE_TEXT.replace("**Priority**: MEDIUM", "**Priority**: URGENT"), 136, ["unknown priority"]),
    "box ralph cannot edit": (
        EXAMPLE_TEXT.replace("- [ ] SSH accessible", "-\n  [ ] SSH accessible"),
        27,
        ["checkbox", "cannot edit in place"],
    ),
}


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("case", list(CASES))
def test_errors_name_the_line_and_nothing_is_written(case: str, ending: str, tmp_path: Path) -> None:
    text, line, words = CASES[case]
    data = text.replace("\n", ending).encode()
    path = tmp_path / "RALPH-001.md"
    path.write_bytes(data)
    with pytest.raises(ParseError) as caught:
        parse_file(path)
    error = caught.value
    assert error.line == line, str(error)
    for word in words:
        assert word in error.message
    assert str(error).startswith(f"{path}:{line}: ")
    with pytest.raises(ParseError):
        TaskFileWriter(path).apply([SetStatus(1, "DONE")])
    assert path.read_bytes() == data


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_invalid_utf8_is_a_parse_error_at_its_line(ending: bytes, tmp_path: Path) -> None:
    data = EXAMPLE.read_bytes().replace(b"\n", ending).replace(b"Terminer pod", b"Termin\xe9 pod")
    path = tmp_path / "RALPH-001.md"
    path.write_bytes(data)
    with pytest.raises(ParseError) as caught:
        TaskFileWriter(path).apply([SetStatus(1, "DONE")])
    assert caught.value.line == 126 and "UTF-8" in caught.value.message
    assert path.read_bytes() == data


def test_an_unreadable_file_is_a_parse_error(tmp_path: Path) -> None:
    with pytest.raises(ParseError) as caught:
        parse_file(tmp_path / "missing.md")
    assert "cannot read" in caught.value.message
