"""Synthetic translation tasks: sequences of symbols mapped to sequences, generated from a seeded generator.

    reverse   a c b d  ->  d b c a
    copy      a c b d  ->  a c b d
    sort      c a d a  ->  a a c d

They need no data, a small model learns them in seconds, and `reverse` is the classic test of attention
(Sutskever et al. 2014 reversed the source to shorten the first dependencies; attention makes it unnecessary).
Two views of the same task: `batch` gives tensors with ids 4.. (after <pad> <unk> <s> </s>) for tests and
models, `lines` gives text ("a c b d") for the `train translate --task` pipeline.
"""
from __future__ import annotations

import string

import torch

from recurrent.data.parallel import SPECIALS, Batch, collate

TASKS = ("reverse", "copy", "sort")


class SyntheticTask:
    def __init__(self, name: str, num_symbols: int = 10, min_len: int = 1, max_len: int = 8):
        """Sequences of min_len..max_len symbols, each length equally likely: a model trained on one length
        fails on the others (a reverse task trained on length 8 gets length 6 wrong)."""
        if name not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {name!r}")
        if not 2 <= num_symbols <= 1000:
            raise ValueError(f"num_symbols must be in 2..1000, got {num_symbols!r}")
        if not 1 <= min_len <= max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
        self.name, self.num_symbols, self.min_len, self.max_len = name, num_symbols, min_len, max_len
        letters = string.ascii_lowercase
        self.symbols = list(letters[:num_symbols]) if num_symbols <= 26 else [f"s{i}" for i in range(num_symbols)]

    def target(self, seq: list[int]) -> list[int]:
        if self.name == "reverse":
            return seq[::-1]
        if self.name == "sort":
            return sorted(seq)
        return list(seq)

    def sample(self, n: int, generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
        """n (source, target) pairs of symbol indices 0..num_symbols-1."""
        lengths = torch.randint(self.min_len, self.max_len + 1, (n,), generator=generator).tolist()
        pairs = []
        for length in lengths:
            seq = torch.randint(self.num_symbols, (length,), generator=generator).tolist()
            pairs.append((seq, self.target(seq)))
        return pairs

    def batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A padded batch with symbol i as id 4 + i, ready for Seq2Seq (vocabulary size 4 + num_symbols)."""
        offset = len(SPECIALS)
        pairs = [([s + offset for s in src], [t + offset for t in tgt]) for src, tgt in self.sample(batch_size,
                                                                                                    generator)]
        return collate(pairs, range(batch_size))

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + self.num_symbols

    def lines(self, n: int, generator: torch.Generator) -> tuple[list[str], list[str]]:
        """n source and target lines of space-separated symbols, for the text pipeline."""
        pairs = self.sample(n, generator)
        return ([" ".join(self.symbols[s] for s in src) for src, _ in pairs],
                [" ".join(self.symbols[t] for t in tgt) for _, tgt in pairs])


def exact_match(hypotheses: list[list[int]], references: list[list[int]]) -> float:
    """Fraction of outputs equal to their reference, token for token."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return sum(h == r for h, r in zip(hypotheses, references)) / max(len(references), 1)
