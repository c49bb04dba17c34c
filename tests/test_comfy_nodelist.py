"""The node-list notation of task files: every piece is read, and keeps its file line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from ralph.handlers.comfyui.nodelist import Link, PromptRef, Size, parse_node_list, parse_value

from tests.repo_files import EXAMPLE


def example_block() -> tuple[str, int]:
    """The workflow code block of task 3 and the file line of its first line (1-based)."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    start = next(i for i, text in enumerate(lines) if "Workflow Order" in text) + 1
    assert lines[start].startswith("```")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[start + 1:end]), start + 2


def file_line(needle: str) -> int:
    """1-based line of the first line of the example containing ``needle``."""
    return next(i for i, text in enumerate(EXAMPLE.read_text(encoding="utf-8").splitlines(), 1) if needle in text)


def items(node) -> dict:
    return {(i.name, i.section): i for i in node.items}


def test_example_reads_all_fourteen_nodes_without_problems():
    text, first = example_block()
    parsed = parse_node_list(text, first)
    assert parsed.problems == []
    assert [n.node_id for n in parsed.nodes] == [str(i) for i in range(1, 15)]
    assert [n.class_type for n in parsed.nodes][:3] == ["CheckpointLoaderSimple", "LoraLoader", "InstantIDModelLoader"]
    by_id = {n.node_id: n for n in parsed.nodes}
    assert by_id["11"].title == "KSampler #1 - MAIN GENERATION"
    assert by_id["11"].line == file_line("Node 11:")
    assert by_id["13"].title is None


def test_example_values_and_their_lines():
    text, first = example_block()
    by_id = {n.node_id: n for n in parse_node_list(text, first).nodes}
    params = items(by_id["11"])
    assert params[("CFG", "params")].value == 7.0
    assert params[("sampler", "params")].value == "dpmpp_2m"
    assert params[("denoise", "params")].line == file_line("denoise=0.8")
    assert params[("latent", "inputs")].value == Link("10", 0)
    # An inputs list continued on an indented line: each link keeps its own line.
    apply = items(by_id["9"])
    assert apply[("controlnet", "inputs")].line == file_line("controlnet[6,0],")
    assert apply[("image", "inputs")].line == file_line("image[5,0], model[2,0]")
    assert apply[("weight", "args")].value == 0.85
    # Parenthesised forms.
    assert [(i.name, i.value) for i in by_id["1"].items] == [(None, "bigLove_xl1.safetensors")]
    assert [(i.name, i.value) for i in by_id["2"].items][:2] == [(None, "elena_v4_cloud.safetensors"),
                                                                 ("strength", 1.0)]
    assert [(i.name, i.value) for i in by_id["10"].items] == [(None, Size(832, 1216)), ("batch", 1)]
    assert [(i.name, i.value) for i in by_id["4"].items] == [("provider", "CUDA")]
    assert by_id["7"].items[0].value == PromptRef("positive") and by_id["8"].items[0].value == PromptRef("negative")
    assert [(i.name, i.value) for i in by_id["14"].items][0] == ("filename_prefix", "quality_tests/elena_refiner")
    assert [o.name for o in by_id["12"].outputs] == ["latent"]  # "(refined, less grain)" is a comment


def test_ascii_arrows_quotes_and_comments():
    text = (
        "// a comment\n"
        "Node 3: KSampler (seed: 42) - refiner\n"
        "  -> inputs: model=[\"1\", 0], positive[2,0]\n"
        "  => params: text=\"a, b\", enabled=true, size=512x768\n"
    )
    node, = parse_node_list(text, 10).nodes
    got = {i.name: (i.value, i.line) for i in node.items}
    assert got == {"seed": (42, 11), "model": (Link("1", 0), 12), "positive": (Link("2", 0), 12),
                   "text": ("a, b", 13), "enabled": (True, 13), "size": (Size(512, 768), 13)}
    assert node.title == "KSampler - refiner"
    assert parse_node_list("Node 4: KSampler: refiner pass", 1).nodes[0].class_type == "KSampler"
    assert parse_node_list("Node 5: Image Blank (512x512)", 1).nodes[0].class_type == "Image Blank"  # custom packs


def test_unreadable_lines_are_reported_on_their_line():
    text = "Node 1: VAEDecode\n  → inputs: samples[12,0\nwhat is this\n  → colour: red\nNode 1: SaveImage\n→ params: x="
    parsed = parse_node_list(text, 100)
    got = sorted((p.line, p.code) for p in parsed.problems)
    assert got == [(101, "syntax"), (102, "syntax"), (103, "syntax"), (104, "duplicate-node"), (105, "syntax")]
    assert "unclosed '['" in parsed.problems[0].message
    assert "could not be read" in parsed.problems[-1].message  # the params line of the duplicate node


def test_link_needs_node_and_output():
    parsed = parse_node_list("Node 2: VAEDecode\n → inputs: samples[12]", 1)
    assert parsed.problems and parsed.problems[0].line == 2 and "name[node, output]" in parsed.problems[0].message


def test_empty_block_is_a_problem():
    parsed = parse_node_list("\n\n", 7)
    assert parsed.nodes == [] and [p.line for p in parsed.problems] == [7]


def test_parse_value_kinds():
    assert parse_value("7") == 7 and parse_value("7.5") == 7.5 and parse_value("1e-3") == 0.001
    assert parse_value("False") is False
    assert parse_value("'quoted, text'") == "quoted, text"
    assert parse_value("[9, 2]") == Link("9", 2)
    assert parse_value("1024 x 1024") == Size(1024, 1024)
    assert parse_value("dpmpp_2m") == "dpmpp_2m"


NOTATION = st.sampled_from(["Node ", "Node 1: ", "→ ", "-> ", "inputs: ", "params: ", "outputs: ", "(", ")", "[",
                            "]", ",", "=", ":", " ", "\n", "  ", "x", "12", "3.5", "\"", "'", "`", "#", "KSampler",
                            "POSITIVE prompt", "a[1,0]", "é", "\t"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(NOTATION, max_size=60).map("".join)))
def test_garbage_never_crashes_and_problems_have_lines(text):
    first = 40
    parsed = parse_node_list(text, first)
    last = first + max(len(text.splitlines()), 1) - 1
    for problem in parsed.problems:
        assert problem.line is not None and first <= problem.line <= last, problem
        assert str(problem)
    for node in parsed.nodes:
        assert first <= node.line <= last
        assert all(first <= i.line <= last for i in node.items + node.outputs)
