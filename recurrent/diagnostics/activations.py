"""Which hidden units track what? Per-character activations of a char-level LM, text features, and an HTML page.

Key: N characters, H hidden units.

Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and understanding recurrent networks") found LSTM cells that
switch on inside quotes, count the position in a line, or track the depth of an expression. We look for such
units the simple way: compute a few features of the text, one value per character, and rank the units by the
Pearson correlation of their activation with each feature over the text. Then we colour each character by a
unit's activation, blue (-1) through white (0) to red (+1), and write it all into one self-contained HTML page.

Every feature is *causal*, like the hidden state: its value at character t describes the text up to and
including t (after reading an opening quote we are inside the quotes; after the closing one, outside).
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

QUOTES = {'"': '"', "\u201c": "\u201d"}  # opening -> closing: straight double quotes, and curly “ ”
BRACKETS = {"(": ")", "[": "]", "{": "}"}


# --- features: one value per character --------------------------------------------------------------------


def inside_quotes(text: str) -> np.ndarray:
    """1.0 while inside double quotes ("..." or “...”), from the opening quote up to (not including) the
    closing one; 0.0 elsewhere. Single quotes are left out: in prose they are mostly apostrophes."""
    out = np.zeros(len(text))
    closing = None  # the quote that would close the current quotation
    for i, c in enumerate(text):
        if closing is not None and c == closing:
            closing = None
        elif closing is None and c in QUOTES:
            closing = QUOTES[c]
        out[i] = closing is not None
    return out


def line_position(text: str) -> np.ndarray:
    """The column of each character: 0 for the first character of a line. A newline ends its line."""
    out = np.zeros(len(text))
    column = 0
    for i, c in enumerate(text):
        out[i] = column
        column = 0 if c == "\n" else column + 1
    return out


def indentation(text: str) -> np.ndarray:
    """The number of leading spaces and tabs of the current line read so far (each counts 1)."""
    out = np.zeros(len(text))
    depth, leading = 0, True
    for i, c in enumerate(text):
        if leading and c in " \t":
            depth += 1
        elif c != "\n":
            leading = False
        out[i] = depth
        if c == "\n":
            depth, leading = 0, True
    return out


def bracket_depth(text: str) -> np.ndarray:
    """How many (, [ and { are open after reading each character; an unmatched closer leaves it at 0."""
    out = np.zeros(len(text))
    depth = 0
    for i, c in enumerate(text):
        if c in BRACKETS:
            depth += 1
        elif c in BRACKETS.values():
            depth = max(depth - 1, 0)
        out[i] = depth
    return out


FEATURES = {"inside quotes": inside_quotes, "position in line": line_position, "indentation": indentation,
            "bracket depth": bracket_depth}


def text_features(text: str) -> dict[str, np.ndarray]:
    """Every feature of FEATURES, each (N,)."""
    return {name: feature(text) for name, feature in FEATURES.items()}


# --- ranking units ------------------------------------------------------------------------------------------


def pearson(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson r of each unit's activation (N, H) with a feature (N,) -> (H,); nan where either is constant."""
    a = acts - acts.mean(axis=0)  # (N, H)
    f = feature - feature.mean()  # (N,)
    denominator = np.sqrt((a * a).sum(axis=0) * (f @ f))  # (H,)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f @ a) / denominator
    return np.where(denominator > 1e-12, r, np.nan)


@dataclass
class UnitScore:
    unit: int
    r: float  # Pearson correlation with the feature


def rank_units(acts: np.ndarray, features: dict[str, np.ndarray], top: int = 3) -> dict[str, list[UnitScore]]:
    """For each feature, the `top` units by |r|, best first; an empty list for a feature constant over the text."""
    ranking = {}
    for name, feature in features.items():
        r = pearson(acts, feature)  # (H,)
        best = [int(u) for u in np.argsort(-np.abs(r), kind="stable") if np.isfinite(r[u])]  # nan sorts last
        ranking[name] = [UnitScore(u, float(r[u])) for u in best[:top]]
    return ranking


def units_to_show(ranking: dict[str, list[UnitScore]], acts: np.ndarray, n: int) -> list[int]:
    """n distinct units: each feature's best, then each feature's second best, ...; then the most variable."""
    chosen: list[int] = []
    for rank in range(max((len(s) for s in ranking.values()), default=0)):
        for scores in ranking.values():
            if rank < len(scores) and scores[rank].unit not in chosen and len(chosen) < n:
                chosen.append(scores[rank].unit)
    for u in np.argsort(-acts.var(axis=0), kind="stable"):
        if len(chosen) >= n:
            break
        if int(u) not in chosen:
            chosen.append(int(u))
    return chosen


# --- running the model ----------------------------------------------------------------------------------------


@torch.inference_mode()
def hidden_activations(model, ids: Tensor, layer: int = -1, chunk: int = 1024) -> Tensor:
    """h_t (N, H) of one layer of a LanguageModel over the token ids (N,), one stream with its state carried.

    `layer` indexes model.layers (-1: the last). The text runs in chunks of `chunk` tokens, the state carried
    from one to the next, so the result is that of one pass. The model should be in eval mode (no dropout).
    """
    L = len(model.layers)
    if not -L <= layer < L:
        raise ValueError(f"layer must be in {-L}..{L - 1} for a model of {L} layers, got {layer}")
    layers = model.layers[: layer % L + 1]
    states = [None] * len(layers)
    outs = []
    for start in range(0, len(ids), chunk):
        x = model.embedding(ids[start : start + chunk].view(1, -1))  # (1, T, E)
        for l, rnn in enumerate(layers):
            x, states[l] = rnn(x, states[l])  # (1, T, H)
        outs.append(x[0])
    return torch.cat(outs)  # (N, H)


# --- the page ---------------------------------------------------------------------------------------------------

LEVELS = 40  # colour steps across [-1, 1]: classes v0 (blue, -1) .. v20 (white, 0) .. v40 (red, +1)


def colour(value: float) -> str:
    """#rrggbb on a blue-white-red scale for a value in [-1, 1] (clipped)."""
    v = min(max(value, -1.0), 1.0)
    blue, red = (67, 147, 195), (214, 96, 77)  # ColorBrewer RdBu's lighter ends: dark text stays legible
    end = red if v > 0 else blue
    rgb = [round(255 + (e - 255) * abs(v)) for e in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def shown_char(c: str) -> str:
    """The character as the page shows it, HTML-escaped: a newline as ↵ (then a line break), control characters as
    their Unicode control pictures (␀, ␉ ...), so that every character has a visible, colourable box."""
    if c == "\n":
        return "\u21b5\n"
    if c == "\t":
        return "\u2409"
    if ord(c) < 0x20:
        return chr(0x2400 + ord(c))
    if ord(c) == 0x7F:
        return "\u2421"
    if 0x80 <= ord(c) < 0xA0:
        return "\ufffd"
    return html.escape(c, quote=True)


def unit_block(text: str, values: np.ndarray) -> str:
    """The text with one <span> per character, coloured by `values` (N,); its value in the tooltip."""
    spans = []
    for c, v in zip(text, values):
        level = round((min(max(float(v), -1.0), 1.0) + 1) / 2 * LEVELS)
        spans.append(f'<span class="v{level}" title="{v:+.3f}">{shown_char(c)}</span>')
    return "".join(spans)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
pre.text { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; line-height: 1.45;
           white-space: pre-wrap; word-break: break-all; border: 1px solid #ddd; padding: 0.6em; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
.legend { display: inline-block; width: 240px; height: 14px; vertical-align: middle;
          background: linear-gradient(to right, #4393c3, #ffffff, #d6604d); border: 1px solid #aaa; }
h2 { font-size: 1.05em; margin-top: 1.6em; }
"""


def render_page(text: str, acts: np.ndarray, units: list[int], ranking: dict[str, list[UnitScore]],
                title: str, description: str = "") -> str:
    """A self-contained HTML page: the ranking table, a legend, and one coloured block of `text` per unit."""
    e = html.escape
    classes = "\n".join(f".v{i} {{ background: {colour(2 * i / LEVELS - 1)}; }}" for i in range(LEVELS + 1))
    rows = []
    for name, scores in ranking.items():
        cells = ", ".join(f'<a href="#unit-{s.unit}">unit {s.unit}</a> (r = {s.r:+.2f})' for s in scores)
        rows.append(f"<tr><td>{e(name)}</td><td>{cells or 'constant over this text'}</td></tr>")
    blocks = []
    for u in units:
        notes = [f"{e(name)} r = {s.r:+.2f}" for name, scores in ranking.items() for s in scores if s.unit == u]
        heading = f"unit {u}" + (f" &mdash; {'; '.join(notes)}" if notes else " &mdash; (most variable)")
        blocks.append(f'<h2 id="unit-{u}">{heading}</h2>\n<pre class="text">{unit_block(text, acts[:, u])}</pre>')
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>{STYLE}
{classes}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<p>{e(description)}</p>
<p>Activation: <span class="legend"></span> &nbsp;blue &minus;1, white 0, red +1 (hover a character for its
value). Units ranked by Pearson correlation of their activation with each feature of the text.</p>
<table>
<tr><th>feature</th><th>best units</th></tr>
{chr(10).join(rows)}
</table>
{chr(10).join(blocks)}
</body>
</html>
"""
