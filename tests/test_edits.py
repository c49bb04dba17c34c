"""ralph's edits change exactly the lines they mean to, and nothing else — property tests.

Task files come from a small grammar (tasks with criteria, nested criteria, code fences with
decoy checkboxes, results blocks, any line endings, a BOM or not).  Random edit sequences
are applied; the test then removes ralph's results blocks from the text before and after,
and checks that what is left differs only in the status words and checkbox characters the
edits named.  It works that out from the edits themselves, not from ralph's code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ralph.edits import Edit, SetCheck, SetResults, SetStatus, TaskFileWriter, apply_edits
from ralph.errors import ParseError
from ralph.model import RESULTS_BEGIN, RESULTS_END, STATUSES, TaskFile
from ralph.parser import parse_bytes, parse_file
from ralph.textfile import Text
from tests.variants import EXAMPLE, Variant, structural

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATH = Path("RALPH-T.md")

# -- a grammar of valid task files -----------------------------------------------------------

_WORDS = ["pod", "créé", "SSH", "port 8188", "torch >= 2.4", "`/workspace`", "visage", "粒子", "ok", "CFG 7"]
_phrase = st.lists(st.sampled_from(_WORDS), min_size=1, max_size=4).map(" ".join)


@dataclass
class Spec:
    """A generated file, with the criteria it holds (by task; None: Success Criteria)."""

    text: str
    criteria: dict[int | None, list[str]]
    numbers: list[int]


@st.composite
def _criteria(draw: st.DrawFn, prefix: str) -> tuple[list[str], list[str]]:
    """Checkbox lines (some nested, some with a fence inside the item) and their texts."""
    texts = draw(st.lists(_phrase, min_size=0, max_size=5, unique_by=lambda t: t.casefold()))
    lines: list[str] = []
    for i, text in enumerate(texts):
        marker = draw(st.sampled_from(["-", "*", "+", "1."]))
        mark = draw(st.sampled_from([" ", "x", "X"]))
        indent = "  " if i and draw(st.booleans()) else ""
        lines.append(f"{indent}{marker} [{mark}] {prefix}{text}")
        if draw(st.integers(0, 4)) == 0:
            pad = indent + " " * (len(marker) + 1)
            lines += [f"{pad}```", f"{pad}- [ ] decoy in a fence", f"{pad}```"]
    return lines, [prefix + t for t in texts]


@st.composite
def task_files(draw: st.DrawFn) -> Spec:
    numbers = sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=5)))
    heading = draw(st.sampled_from(["###", "####"]))
    criteria: dict[int | None, list[str]] = {}
    lines = [f"# RALPH-TASK: {draw(_phrase)}", ""]
    if draw(st.booleans()):
        box_lines, criteria[None] = draw(_criteria("global "))
        lines += ["## Success Criteria", *box_lines, ""]
    lines += ["## Tasks", ""]
    for n in numbers:
        status = draw(st.sampled_from(STATUSES))
        status = status.lower() if draw(st.integers(0, 5)) == 0 else status
        trail = draw(st.sampled_from(["", "", "  ", " <!-- why -->"]))
        lines += [f"{heading} {n}. {draw(_phrase)}", "**Priority**: HIGH", f"**Status**: {status}{trail}"]
        lines += ["**Acceptance Criteria**:"]
        box_lines, criteria[n] = draw(_criteria(f"t{n} "))
        lines += box_lines
        if draw(st.booleans()):
            lines += ["", "```yaml", "cfg: 7", "- [x] decoy", "```"]
        if draw(st.booleans()):
            lines += ["", "<!--", "**Status**: DONE", "- [ ] decoy in a comment", "-->"]
        if draw(st.booleans()):
            lines += ["", RESULTS_BEGIN, "**Result** (ralph): old", "- [x] old verdict", RESULTS_END]
        lines += ["", *draw(st.sampled_from([["---", ""], [], [""]]))]
    lines += ["## Exit Conditions", "- Pod terminé", ""]
    if draw(st.booleans()):
        lines += [RESULTS_BEGIN, "old summary", RESULTS_END, ""]
    return Spec("\n".join(lines), criteria, numbers)


@st.composite
def encoded(draw: st.DrawFn, spec: Spec) -> bytes:
    ending = draw(st.sampled_from(["lf", "crlf", "cr", "mixed"]))
    variant = Variant("gen", spec.text, ending=ending, bom=draw(st.booleans()), final_newline=draw(st.booleans()))
    return variant.data


_result_lines = st.lists(
    st.one_of(_phrase, _phrase.map(lambda p: f"- {p}"), st.just(""), _phrase.map(lambda p: f"**Result**: {p}")),
    max_size=4,
).map(tuple)


@st.composite
def edits_for(draw: st.DrawFn, spec: Spec) -> list[Edit]:
    targets = spec.numbers + [max(spec.numbers) + 1]  # one task that is not there
    edits: list[Edit] = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["status", "check", "results"]))
        if kind == "status":
            edits.append(SetStatus(draw(st.sampled_from(targets)), draw(st.sampled_from(STATUSES))))
        elif kind == "check":
            task = draw(st.sampled_from([None, *targets]))
            known = spec.criteria.get(task, [])
            text = draw(st.sampled_from([*known, "no such criterion"]))
            if bool(known) and draw(st.booleans()):  # people's spacing and case differ from ralph's
                text = "  " + text.upper().replace(" ", "   ")
            edits.append(SetCheck(task, text, draw(st.booleans())))
        else:
            edits.append(SetResults(draw(st.sampled_from([None, *targets])), draw(_result_lines)))
    return edits


# -- the independent check -------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _strip_results(file: TaskFile, text: Text, inserted: set[int | None]) -> list[tuple[str, str]]:
    """(line, ending) pairs without ralph's results blocks (and the blank line added before a new one)."""
    drop: set[int] = set()
    spans = {t.number: t.results for t in file.tasks} | {None: file.results}
    for target, span in spans.items():
        if span:
            drop.update(range(span[0] - 1, span[1]))
            if target in inserted:
                assert text.lines[span[0] - 2] == "", "a new block is set off by a blank line"
                drop.add(span[0] - 2)
    pairs = list(zip(text.lines, text.endings, strict=False))
    return [pair for i, pair in enumerate(pairs) if i not in drop]


def check_edit_result(before: bytes, after: bytes, edits: list[Edit], spec: Spec) -> None:
    old, old_text = parse_bytes(before, PATH)
    new, new_text = parse_bytes(after, PATH)
    assert new_text.bom == old_text.bom
    assert bool(new_text.endings[-1]) == bool(old_text.endings[-1]), "a final newline is neither added nor lost"

    # What each target should end as: the last edit for it wins.
    status = {t.number: t.status for t in old.tasks}
    checks: dict[tuple[int | None, str], bool] = {}
    results: dict[int | None, tuple[str, ...]] = {}
    numbers = set(status)
    for edit in edits:
        if edit.task is not None and edit.task not in numbers:
            continue
        if isinstance(edit, SetStatus):
            status[edit.task] = edit.status
        elif isinstance(edit, SetCheck):
            if _norm(edit.criterion) in {_norm(c) for c in spec.criteria.get(edit.task, [])}:
                checks[(edit.task, _norm(edit.criterion))] = edit.checked
        else:
            results[edit.task] = edit.lines
    assert {t.number: t.status for t in new.tasks} == status
    for task in [None, *new.tasks]:
        criteria = task.criteria if task else new.success_criteria
        number = task.number if task else None
        olds = {_norm(c.text): c.checked for c in (old.task(number).criteria if task else old.success_criteria)}
        assert {_norm(c.text): c.checked for c in criteria} == {
            text: checks.get((number, text), was) for text, was in olds.items()
        }
        span = task.results if task else new.results
        if number in results:
            assert span is not None
            assert new_text.lines[span[0] - 1 : span[1]] == [RESULTS_BEGIN, *results[number], RESULTS_END]

    # Outside the results blocks, only status words and box characters may differ.
    had = {t.number for t in old.tasks if t.results} | ({None} if old.results else set())
    inserted = set(results) - had
    old_rest = _strip_results(old, old_text, set())
    new_rest = _strip_results(new, new_text, inserted)
    assert len(old_rest) == len(new_rest)
    status_lines = {t.fields["status"].line for t in new.tasks}
    for (a, a_end), (b, b_end) in zip(old_rest, new_rest, strict=False):
        if a == b:
            # Allowed: the old last line's ending when a block is appended to an unterminated
            # file, and CR to CRLF where an added empty line would otherwise merge with it.
            assert a_end == b_end or (not a_end and b_end) or (a_end, b_end) == ("\r", "\r\n"), (a, a_end, b_end)
            continue
        if re.match(r"\*\*Status\*\*:", a):
            assert re.sub(r"(\*\*Status\*\*:[ \t]*)[A-Za-z_]+", r"\1", a) == re.sub(
                r"(\*\*Status\*\*:[ \t]*)[A-Za-z_]+", r"\1", b
            ), (a, b)
        else:
            diff = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
            assert len(a) == len(b) and len(diff) == 1 and {a[diff[0]], b[diff[0]]} <= {" ", "x", "X"}, (a, b)
            assert a[diff[0] - 1] == "[" and a[diff[0] + 1] == "]"
    assert status_lines  # the file still has its tasks


@SETTINGS
@given(st.data())
def test_random_edits_change_only_their_lines_and_are_idempotent(data: st.DataObject) -> None:
    spec = data.draw(task_files())
    before = data.draw(encoded(spec))
    edits = data.draw(edits_for(spec))
    file, text = parse_bytes(before, PATH)
    missing = apply_edits(file, text, edits)
    after = text.encode()
    check_edit_result(before, after, edits, spec)

    gone = [e for e in edits if e.task is not None and e.task not in spec.numbers]
    gone += [
        e
        for e in edits
        if isinstance(e, SetCheck)
        and e.task in [None, *spec.numbers]
        and _norm(e.criterion) not in {_norm(c) for c in spec.criteria.get(e.task, [])}
    ]
    assert len(missing) == len(gone)

    again_file, again_text = parse_bytes(after, PATH)
    assert file == again_file, "the edited parse is what a parse of the new text says"
    assert apply_edits(again_file, again_text, edits) == missing
    assert again_text.encode() == after, "the same edits twice change nothing more"


@SETTINGS
@given(st.data())
def test_writer_applies_edits_to_the_file(data: st.DataObject) -> None:
    spec = data.draw(task_files())
    before = data.draw(encoded(spec))
    edits = data.draw(edits_for(spec))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PATH.name
        path.write_bytes(before)
        file, missing = TaskFileWriter(path).apply(edits)
        after = path.read_bytes()
        check_edit_result(before, after, edits, spec)
        assert [t.status for t in file.tasks] == [t.status for t in parse_file(path)[0].tasks]
        assert TaskFileWriter(path).apply(edits)[1] == missing
        assert path.read_bytes() == after

        # One writer, edits in batches: the parse it keeps between writes stays the file's.
        path.write_bytes(before)
        writer = TaskFileWriter(path)
        for batch in (edits[: len(edits) // 2], edits[len(edits) // 2 :], edits):
            file, _ = writer.apply(batch)
            assert file == parse_file(path)[0]


@pytest.mark.parametrize("variant", structural(), ids=lambda v: v.name)
@pytest.mark.parametrize("ending", ["lf", "crlf", "cr", "mixed"])
def test_each_example_criterion_toggles_alone(variant: Variant, ending: str) -> None:
    """Every criterion of every variant, ticked by itself, changes that one character."""
    from dataclasses import replace

    data = replace(variant, ending=ending).data
    file, _ = parse_bytes(data, PATH)
    for task in [None, *file.tasks]:
        for criterion in task.criteria if task else file.success_criteria:
            number = task.number if task else None
            parsed, text = parse_bytes(data, PATH)
            assert apply_edits(parsed, text, [SetCheck(number, criterion.text, not criterion.checked)]) == []
            out = text.encode()
            assert len(out) == len(data)
            diff = [i for i in range(len(data)) if data[i] != out[i]]
            assert len(diff) == 1 and {data[diff[0]], out[diff[0]]} <= set(b" xX")


# -- random markdown never crashes the parser ------------------------------------------------

_md_line = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "# RALPH-TASK: t", "## Tasks", "## Exit Conditions", "## Success Criteria", "### 1. a", "#### 1. b",
            "### 2) c", "**Status**: PENDING", "**Status**: NOPE", "**Priority**: LOW", "- [ ] c", "- [x] d",
            "  - [X] e", "-", "  [ ] f", "```", "~~~", "    code", "> - [ ] q", "<!--", "-->", RESULTS_BEGIN,
            RESULTS_END, "---", "===", "\t- [ ] t", "1. [ ] n", "", "<div>", "**Handler**: `shell`",
        ]
    ),
)
_markdownish = st.lists(_md_line, max_size=40).map("\n".join)


@SETTINGS
@given(st.one_of(st.text(), _markdownish), st.sampled_from(["\n", "\r\n", "\r"]))
def test_random_markdown_gives_a_task_file_or_a_parse_error(doc: str, ending: str) -> None:
    data = doc.replace("\n", ending).encode("utf-8", "surrogatepass")
    try:
        file, text = parse_bytes(data, PATH)
    except ParseError as error:
        assert error.line is None or 1 <= error.line <= len(re.findall(rb"\r\n|\r|\n", data)) + 1
        return
    assert text.encode() == data
    for task in file.tasks:
        assert 1 <= task.line <= task.end_line <= len(text.lines)
        for criterion in task.criteria:
            assert task.line < criterion.line <= task.end_line


# -- a person's edit between ralph's read and ralph's write ----------------------------------


class _PersonEditsAfterRead(type(Path())):  # type: ignore[misc]
    """A path whose first read is followed at once by a person saving their own change."""

    def person(self, change: bytes) -> _PersonEditsAfterRead:
        self._change = change
        return self

    def read_bytes(self) -> bytes:
        data = super().read_bytes()
        change = getattr(self, "_change", None)
        if change is not None:
            self._change = None
            self.write_bytes(change)
        return data


EXAMPLE_TEXT = EXAMPLE.read_text(encoding="utf-8")
PERSON_EDITS = {
    "line added above a task": (
        EXAMPLE_TEXT.replace("### 2. Setup", "Note ajoutée par une personne.\n\n### 2. Setup"), []),
    "criterion reworded": (
        EXAMPLE_TEXT.replace("- [ ] SSH accessible", "- [ ] SSH accessible avec la clé ed25519"),
        ["criterion 'SSH accessible' is no longer in the file"],
    ),
    "criterion removed": (EXAMPLE_TEXT.replace("- [ ] SSH accessible\n", ""), ["criterion 'SSH accessible'"]),
    "task removed": (
        EXAMPLE_TEXT[: EXAMPLE_TEXT.index("### 5.")] + EXAMPLE_TEXT[EXAMPLE_TEXT.index("### 6.") :],
        ["task 5 is no longer in the file"],
    ),
}
EDITS: list[Edit] = [
    SetStatus(1, "DONE"),
    SetCheck(1, "SSH accessible", True),
    SetCheck(1, "Pod créé avec GPU (RTX A5000 ou équivalent)", True),
    SetStatus(5, "DONE"),
    SetResults(2, ("**Result** (ralph): DONE",)),
]


@pytest.mark.parametrize("case", list(PERSON_EDITS))
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_a_persons_edit_between_read_and_write_is_kept(case: str, ending: str, tmp_path: Path) -> None:
    person, reported = PERSON_EDITS[case]
    person_bytes = person.replace("\n", ending).encode()
    path = _PersonEditsAfterRead(tmp_path / "RALPH-001.md")
    path.write_bytes(EXAMPLE_TEXT.replace("\n", ending).encode())
    file, missing = TaskFileWriter(path.person(person_bytes)).apply(EDITS)
    after = path.read_bytes()
    for text in reported:
        assert any(text in m for m in missing), missing
    assert len(missing) == len(reported)

    # The person's bytes are all there: undoing ralph's edits gives them back exactly.
    block = rf"{ending}{re.escape(RESULTS_BEGIN)}.*?{re.escape(RESULTS_END)}{ending}"
    undone = re.sub(block, "", after.decode(), flags=re.S)
    undone = undone.replace("**Status**: DONE", "**Status**: PENDING")
    undone = undone.replace("- [x] SSH accessible", "- [ ] SSH accessible").replace("- [x] Pod créé", "- [ ] Pod créé")
    assert undone.encode() == person_bytes
    assert file.task(1).status == "DONE" and file.task(1).criteria[0].checked
    assert (file.task(5) is None) == (case == "task removed")
    assert file.task(2).results is not None


def test_same_target_results_twice_in_one_apply(tmp_path: Path) -> None:
    """The last block for a target wins; two blocks are never both written over one span."""
    path = tmp_path / "RALPH-001.md"
    path.write_bytes(EXAMPLE.read_bytes())
    for _ in range(2):
        TaskFileWriter(path).apply([SetResults(2, ("first", "a", "b")), SetResults(2, ("second",))])
        text = path.read_text(encoding="utf-8")
        assert text.count(RESULTS_BEGIN) == 1 and "second" in text and "first" not in text


def test_file_summary_after_an_unknown_last_section_is_found_again(tmp_path: Path) -> None:
    """A block appended after ``## Notes`` used to be lost on re-read: every run added one."""
    path = tmp_path / "RALPH-001.md"
    path.write_bytes((EXAMPLE_TEXT + "\n## Notes\n- [ ] pas un critère de succès\n").encode())
    for run in range(3):
        file, missing = TaskFileWriter(path).apply([SetResults(None, (f"- [x] summary {run}",))])
        assert missing == []
    text = path.read_text(encoding="utf-8")
    assert text.count(RESULTS_BEGIN) == 1 and "summary 2" in text and text.endswith(RESULTS_END + "\n")
    assert file.results is not None and len(file.success_criteria) == 3
    assert [c.text for c in file.tasks[-1].criteria][-1] == "Paramètres optimaux notés si succès"


def test_file_summary_with_no_section_after_the_tasks_is_refused(tmp_path: Path) -> None:
    """Appended after the last task it would read back as that task's block: reported instead."""
    data = EXAMPLE_TEXT[: EXAMPLE_TEXT.index("## Constraints")].encode()
    path = tmp_path / "RALPH-001.md"
    path.write_bytes(data)
    file, missing = TaskFileWriter(path).apply([SetResults(None, ("summary",)), SetResults(6, ("six",))])
    assert missing == ["the file has no Exit Conditions section to hold ralph's summary"]
    assert file.results is None and file.task(6).results is not None
    assert path.read_text(encoding="utf-8").count(RESULTS_BEGIN) == 1
