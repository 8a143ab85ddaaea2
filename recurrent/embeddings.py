"""Pretrained word vectors from a local word2vec/GloVe text file. Nothing is ever downloaded.

    vectors, found = load_embeddings("glove.6B.100d.txt", itos, embedding.weight)

The file has one word per line followed by its numbers, separated by spaces; an optional first line
"COUNT DIM" (word2vec's text format) is skipped. A word of the vocabulary takes the vector of the same word in the
file, or else of its lowercase form; other rows keep their initial values.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from recurrent.errors import UserError


def load_embeddings(path, itos: list[str], weight: Tensor) -> tuple[Tensor, int]:
    """A copy of `weight` (V, E) with the rows of words found in the file replaced; and how many were found.
    A line with the wrong number of values, or a value that is not a number, is a UserError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    V, E = weight.shape
    exact_rows: dict[str, list[int]] = {}  # file word -> the rows of the same word
    lower_rows: dict[str, list[int]] = {}  # file word -> the rows of words whose lowercase form it is
    for i, word in enumerate(itos):
        exact_rows.setdefault(word, []).append(i)
        if word.lower() != word:
            lower_rows.setdefault(word.lower(), []).append(i)
    out, exact, found = weight.detach().clone(), set(), set()
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for line_no, line in enumerate(f, start=1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    if int(parts[1]) != E:
                        raise UserError(f"{path}:1: vectors have {parts[1]} dimensions, the model's embeddings {E}")
                    continue
                if len(parts) != E + 1:
                    raise UserError(f"{path}:{line_no}: expected a word and {E} numbers, got {len(parts) - 1} "
                                    f"numbers (set --embedding-size to the file's dimension)")
                word = parts[0]
                for rows, is_exact in ((exact_rows, True), (lower_rows, False)):
                    for i in rows.get(word, []):
                        if i in exact or (not is_exact and i in found):
                            continue
                        try:
                            out[i] = torch.tensor([float(x) for x in parts[1:]])
                        except ValueError:
                            raise UserError(f"{path}:{line_no}: a value is not a number") from None
                        found.add(i)
                        if is_exact:
                            exact.add(i)
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8: {e}") from None
    return out, len(found)


def init_embedding(embedding: torch.nn.Embedding, path, itos: list[str], log=print) -> None:
    """Copy the vectors of `path` into `embedding` for every word of `itos` found there, and say how many."""
    weight, found = load_embeddings(path, itos, embedding.weight)
    with torch.no_grad():
        embedding.weight.copy_(weight)
    log(f"{path}: vectors for {found} of {len(itos)} words")
