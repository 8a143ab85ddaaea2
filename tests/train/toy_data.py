"""Tiny labelled files for the training tests (tests/train): sentiment TSV and CoNLL, generated from a seed."""
from __future__ import annotations

import random

WORDS = ["the", "cat", "sat", "on", "a", "mat"]


def sentiment(path, n, seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 5))] + [("good" if label == "pos" else "bad")]
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def conll(path, n, seed):
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        tokens = [(w, "B-PER" if w == "anna" else "O") for w in (rng.choice(WORDS + ["anna"]) for _ in range(4))]
        sentences.append("\n".join(f"{w} X X {t}" for w, t in tokens))
    path.write_text("\n\n".join(sentences) + "\n")
    return str(path)
