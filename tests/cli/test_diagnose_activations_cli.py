"""Smoke runs of `recurrent diagnose activations` on tiny runs trained in tmp_path, through the real entry point
(`recurrent.cli.main.main`), and the one-line exit-2 errors for bad input."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from recurrent.cli.main import main

SAMPLE = 'print("hi <b> & [x]")\n    f(x)  # 世界\n'
TEXT = ('def f(x):\n    return g("a", [x, (x)])  # é 世界\n' + SAMPLE) * 10  # every character of SAMPLE


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A char-level and a word-level two-layer GRU, each trained for 2 steps, and the text they saw."""
    root = tmp_path_factory.mktemp("activations")
    data = root / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    for level in ("char", "word"):
        code = main(["train", "lm", "--data", str(data), "--out", str(root / level), "--level", level,
                     "--cell", "gru", "--hidden-size", "6", "--num-layers", "2", "--batch-size", "2", "--bptt", "8",
                     "--max-steps", "2", "--no-progress"])
        assert code == 0
    return root


class Spans(HTMLParser):
    """The number of character spans in each <pre> block."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self.counts.append(0)
        elif tag == "span" and self.counts:
            self.counts[-1] += 1


def test_diagnose_activations_writes_the_page(runs, tmp_path, capsys):
    text, out = tmp_path / "sample.txt", tmp_path / "units.html"
    text.write_text(SAMPLE, encoding="utf-8")
    code = main(["diagnose", "activations", str(runs / "char"), "--text", str(text), "--out", str(out),
                 "--units", "4", "--layer", "0"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert f"gru layer 0 of 2, 6 units, over {len(SAMPLE)} characters" in stdout
    for feature in ("inside quotes", "position in line", "indentation", "bracket depth"):
        assert re.search(rf"^{feature} +unit \d r=[+-]\d\.\d\d, unit \d", stdout, re.M), stdout
    assert re.search(r"^wrote .*units\.html \(4 of 6 units: \d, \d, \d, \d\)$", stdout, re.M)
    page = out.read_text(encoding="utf-8")
    spans = Spans()
    spans.feed(page)
    assert spans.counts == [len(SAMPLE)] * 4  # one block per unit, one span per character
    assert ">&lt;</span>" in page and ">世</span>" in page


def test_more_units_than_the_layer_has_shows_them_all(runs, tmp_path, capsys):
    text, out = tmp_path / "sample.txt", tmp_path / "units.html"
    text.write_text(SAMPLE, encoding="utf-8")
    assert main(["diagnose", "activations", str(runs / "char"), "--text", str(text), "--out", str(out)]) == 0
    assert "(6 of 6 units: " in capsys.readouterr().out  # --units 8 by default, the last layer has 6
    spans = Spans()
    spans.feed(out.read_text(encoding="utf-8"))
    assert spans.counts == [len(SAMPLE)] * 6


def test_word_level_run_is_refused(runs, tmp_path, capsys):
    text = tmp_path / "sample.txt"
    text.write_text(SAMPLE, encoding="utf-8")
    assert main(["diagnose", "activations", str(runs / "word"), "--text", str(text)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"recurrent: error: {runs / 'word'} is a word-level model; activations need a "
                                f"char-level model (one hidden state per character)"]


@pytest.mark.parametrize("flags, text, message", [
    ([], None, "missing.txt: no such file or directory"),
    ([], "", "sample.txt is empty"),
    (["--units", "0"], SAMPLE, "--units must be >= 1, got 0"),
    (["--layer", "2"], SAMPLE, "--layer must be in -2..1 for this 2-layer model, got 2"),
])
def test_bad_input_exits_2_with_one_line(runs, tmp_path, capsys, flags, text, message):
    path = tmp_path / ("missing.txt" if text is None else "sample.txt")
    if text is not None:
        path.write_text(text, encoding="utf-8")
    assert main(["diagnose", "activations", str(runs / "char"), "--text", str(path), *flags]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""
    assert len(lines) == 1 and lines[0].startswith("recurrent: error: ") and message in lines[0], captured.err


def test_a_character_training_never_saw_reads_as_unk(runs, tmp_path, capsys):
    text, out = tmp_path / "sample.txt", tmp_path / "units.html"
    text.write_text("print(ü)\n", encoding="utf-8")
    assert main(["diagnose", "activations", str(runs / "char"), "--text", str(text), "--out", str(out)]) == 0
    spans = Spans()
    spans.feed(out.read_text(encoding="utf-8"))
    assert spans.counts == [9] * 6  # ü has its span too


def test_not_a_language_model_run(tmp_path, capsys):
    (tmp_path / "tagger").mkdir()
    (tmp_path / "tagger" / "config.json").write_text('{"task": "tag"}')
    assert main(["diagnose", "activations", str(tmp_path / "tagger"), "--text", "x.txt"]) == 2
    assert "is a 'tag' run; diagnose activations needs a char-level language model" in capsys.readouterr().err
