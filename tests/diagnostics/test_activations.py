"""Activation diagnostics: text features on hand-built strings, Pearson r against numpy, a planted unit ranked
first, chunked activations against stepping the cells one token at a time, the HTML page (escaping, unicode,
one span per character per unit), and a screenshot of the page in a real headless Chromium.

Key: N characters, H hidden units.
"""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from recurrent.diagnostics.activations import (bracket_depth, colour, hidden_activations, indentation,
                                               inside_quotes, line_position, pearson, rank_units, render_page,
                                               shown_char, text_features, units_to_show)
from recurrent.models.lm import LanguageModel, LMConfig, Stepper


def test_inside_quotes_from_the_opening_quote_to_before_the_closing_one():
    assert inside_quotes('a "bc" d').tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert inside_quotes("x “y” z").tolist() == [0, 0, 1, 1, 0, 0, 0]  # curly quotes
    assert inside_quotes('it\'s "a" \'b\'').tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]  # ' is ignored
    assert inside_quotes('"open\nstill').tolist() == [1] * 11  # a quotation may span lines
    assert inside_quotes('"a”"').tolist() == [1, 1, 1, 0]  # a curly closer does not close a straight quote


def test_line_position_counts_columns_and_the_newline_ends_its_line():
    assert line_position("ab\ncd\n\ne").tolist() == [0, 1, 2, 0, 1, 2, 0, 0]


def test_indentation_counts_leading_spaces_and_tabs_read_so_far():
    assert indentation("  a b\n\tc\nd").tolist() == [1, 2, 2, 2, 2, 2, 1, 1, 1, 0]
    assert indentation("    \nx").tolist() == [1, 2, 3, 4, 4, 0]  # a blank line's spaces


def test_bracket_depth_nests_and_ignores_unmatched_closers():
    assert bracket_depth("f(a[b]{c})").tolist() == [0, 1, 1, 2, 2, 1, 2, 2, 1, 0]
    assert bracket_depth(")) (").tolist() == [0, 0, 0, 1]
    assert bracket_depth("((x))").tolist() == [1, 2, 2, 1, 0]


def test_pearson_matches_numpy_and_is_nan_for_constants():
    rng = np.random.default_rng(0)
    acts, feature = rng.normal(size=(50, 4)), rng.normal(size=50)
    acts[:, 2] = 0.7  # a dead unit
    expected = [np.corrcoef(acts[:, u], feature)[0, 1] for u in (0, 1, 3)]
    r = pearson(acts, feature)
    np.testing.assert_allclose(r[[0, 1, 3]], expected, rtol=1e-12)
    assert np.isnan(r[2])
    assert np.isnan(pearson(acts, np.ones(50))).all()  # a feature constant over the text


def test_a_planted_unit_is_ranked_first():
    text = 'He said "hello (there)" and left.\n    Then "bye [now]".\n' * 3
    features = text_features(text)
    rng = np.random.default_rng(1)
    acts = np.tanh(rng.normal(size=(len(text), 6)))  # (N, H)
    acts[:, 3] = features["inside quotes"]  # unit 3 is the quote detector
    acts[:, 5] = -0.1 * features["bracket depth"] + 0.01 * rng.normal(size=len(text))  # unit 5: brackets, negated
    ranking = rank_units(acts, features, top=2)
    assert ranking["inside quotes"][0].unit == 3 and ranking["inside quotes"][0].r == pytest.approx(1.0)
    assert ranking["bracket depth"][0].unit == 5 and ranking["bracket depth"][0].r < -0.9  # ranked by |r|
    assert len(ranking["position in line"]) == 2
    assert rank_units(acts, {"constant": np.zeros(len(text))})["constant"] == []
    shown = units_to_show(ranking, acts, 5)
    assert shown[:2] == [3, ranking["position in line"][0].unit] and len(set(shown)) == 5


def test_units_to_show_fills_with_the_most_variable_units():
    acts = np.zeros((10, 4))
    acts[:, 2] = np.arange(10)
    acts[:, 0] = np.arange(10) % 2
    assert units_to_show({"f": []}, acts, 2) == [2, 0]


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_chunked_activations_equal_stepping_the_cells_one_character_at_a_time(layer):
    model = LanguageModel(LMConfig(vocab_size=9, cell="lstm", hidden_size=6, embedding_size=4, num_layers=2)).eval()
    ids = torch.randint(9, (11,))
    acts = hidden_activations(model, ids, layer=layer, chunk=4)  # the state carried across three chunks
    stepper, states, expected = Stepper(model), None, []
    with torch.no_grad():
        for token in ids:
            if states is None:
                out = model(token.view(1, 1))
                states = stepper.from_layer_states(out.state)
            else:
                _, states = stepper.step(token.view(1), states)
            expected.append(states[layer].h[0])
    torch.testing.assert_close(acts, torch.stack(expected), rtol=1e-5, atol=1e-6)  # (N, H)
    with pytest.raises(ValueError, match="layer must be in -2..1"):
        hidden_activations(model, ids, layer=2)


def test_colour_scale():
    assert colour(0.0) == "#ffffff"
    assert colour(-1.0) == "#4393c3" and colour(-5.0) == "#4393c3"  # clipped
    assert colour(1.0) == "#d6604d"


class PageParser(HTMLParser):
    """The text of each <pre class="text"> block, one entry per <span>, and the id of each unit heading."""

    def __init__(self):
        super().__init__()
        self.blocks, self.ids, self._span = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "pre":
            self.blocks.append([])
        elif tag == "span" and self.blocks and attrs.get("class", "").startswith("v"):
            self._span = ""
        elif tag == "h2":
            self.ids.append(attrs["id"])

    def handle_data(self, data):
        if self._span is not None:
            self._span += data

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.blocks[-1].append(self._span)
            self._span = None


def page_of(text: str, units: list[int], H: int = 4) -> str:
    acts = np.tanh(np.random.default_rng(0).normal(size=(len(text), H)))
    ranking = rank_units(acts, text_features(text), top=1)
    return render_page(text, acts, units, ranking, title="t <&> \"x\"", description="d")


def test_page_has_one_span_per_character_per_unit_and_escapes_html():
    text = '<b>Tom & "Jerry"</b>\n\tx < y && 世界 é 🙂\x00'
    page = page_of(text, units=[2, 0, 3])
    parsed = PageParser()
    parsed.feed(page)
    assert parsed.ids == ["unit-2", "unit-0", "unit-3"]
    expected = [{"\n": "↵\n", "\t": "␉", "\x00": "␀"}.get(c, c) for c in text]  # what each span shows
    assert parsed.blocks == [expected] * 3
    assert "<b>" not in page and "&lt;b&gt;Tom" not in page  # escaped per character, in its own span
    assert ">&lt;</span>" in page and ">&amp;</span>" in page and ">&quot;</span>" in page
    assert "<title>t &lt;&amp;&gt; &quot;x&quot;</title>" in page
    assert "\x00" not in page and '<meta charset="utf-8">' in page


def test_page_is_self_contained():
    page = page_of('print("hi")\n', units=[0])
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page and "https://" not in page and "url(" not in page


def test_shown_char_keeps_unicode_and_replaces_controls():
    assert shown_char("é") == "é" and shown_char("🙂") == "🙂" and shown_char("\x1b") == "␛"
    assert shown_char("\x7f") == "␡" and shown_char("\x85") == "\ufffd" and shown_char("'") == "&#x27;"


CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); "
                                             "the page is not screenshotted")
def test_page_renders_red_and_blue_in_headless_chromium(tmp_path):
    import matplotlib.image

    text = 'def f(x):\n    return "a (b)" + x  # 世界 <&>\n' * 6
    ramp = np.linspace(-1, 1, len(text))  # blue through white to red along the text
    acts = np.stack([ramp, -ramp, np.sin(np.arange(len(text)) / 5)], axis=1)  # (N, 3)
    ranking = rank_units(acts, text_features(text), top=1)
    (tmp_path / "units.html").write_text(render_page(text, acts, [0, 1, 2], ranking, "screenshot"), encoding="utf-8")
    png = tmp_path / "units.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,900",
           f"file://{tmp_path / 'units.html'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    image = matplotlib.image.imread(png)[..., :3]  # (900, 1200, 3) floats in [0, 1]
    assert image.shape[:2] == (900, 1200)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # text, colours, anti-aliasing: not blank
    r, g, b = (image[..., i] * 255 for i in range(3))
    red = (r > 190) & (g < 130) & (b < 110)  # near #d6604d
    blue = (b > 170) & (r < 100) & (g > 120) & (g < 170)  # near #4393c3
    assert red.sum() > 500 and blue.sum() > 500, (red.sum(), blue.sum())
