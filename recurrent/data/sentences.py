"""One sentence a line with its condition, for a conditioned language model (recurrent/train/conditional.py) and
its evaluation: `label<TAB>text` lines, or text lines with a feature file beside them (a row a line).
Key: B sentences, T tokens, F features. A sentence reads "sep w_1 .. w_n sep", sep being <eos> (word level) or a
newline (char level), as a generation prime of "\\n" does. Padded targets are -100, which the loss leaves out.
"""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

from recurrent.data.features import read_features
from recurrent.data.text import Vocab, read_text
from recurrent.errors import UserError


def read_sentences(path, kind: str, features=None, width: int = 0) -> tuple[list[str], list | None]:
    """(texts, conditions), one per line: `label<TAB>text` (kind "label": the labels), or text with its row of
    `features` (kind "vector": rows (F,)), or text alone (kind "none": None). Errors name file:line."""
    texts, labels = [], []
    for line, text in enumerate(read_text(path).splitlines(), 1):
        if kind == "label":
            label, tab, text = text.partition("\t")
            if not tab or not label.strip():
                raise UserError(f"{path}:{line}: expected label<TAB>text, got {label[:60]!r}")
            labels.append(label.strip())
        if not text.strip():
            raise UserError(f"{path}:{line}: empty text")
        texts.append(text)
    if kind != "vector":
        return texts, labels or None
    rows = read_features(features, width)
    if len(rows) != len(texts):
        raise UserError(f"{features}: {len(rows)} feature rows for the {len(texts)} lines of {path}")
    return texts, list(torch.from_numpy(rows))


def encode(texts: list[str], conditions: list | None, vocab: Vocab, labels: list[str] | None, path) -> list[tuple]:
    """(ids "sep w_1 .. w_n sep", condition: a label id, a feature row (F,) or None) per sentence."""
    conditions = conditions or [None] * len(texts)
    if labels is not None:
        for line, label in enumerate(conditions, 1):
            if label not in labels:
                raise UserError(f"{path}:{line}: label {label!r} never appears in training; known labels: {labels}")
        conditions = [torch.tensor(labels.index(c)) for c in conditions]
    return [(vocab.encode("\n" + t + "\n"), c) for t, c in zip(texts, conditions)]  # word level: <eos> w.. <eos>


def collate(items: list) -> tuple:
    """Encoded sentences -> x (B, T), y (B, T) padded with -100, and the conditions (B,) or (B, F) or None."""
    x = pad_sequence([ids[:-1] for ids, _ in items], batch_first=True)  # (B, T)
    y = pad_sequence([ids[1:] for ids, _ in items], batch_first=True, padding_value=-100)  # (B, T)
    return x, y, None if items[0][1] is None else torch.stack([c for _, c in items])
