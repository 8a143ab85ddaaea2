"""Batches of similar-length sequences, so that little of each batch is padding.

    for indices in bucket_batches(lengths, batch_size=32, generator=g):   # a list of example indices
        ...

Shuffled: the examples are shuffled, cut into pools of `pool` batches, each pool is sorted by length and cut
into batches, and the batches are shuffled (as torchtext's BucketIterator). Unshuffled (evaluation): sorted by
length, longest first, so the batch order is deterministic.
"""
from __future__ import annotations

import torch
from torch import Tensor


def bucket_batches(lengths: list[int], batch_size: int, generator: torch.Generator | None = None,
                   pool: int = 50) -> list[list[int]]:
    """Index batches covering every example once. generator=None: no shuffling."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    if generator is None:
        order = sorted(range(n), key=lambda i: -lengths[i])
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = torch.randperm(n, generator=generator).tolist()
    batches = []
    span = batch_size * pool
    for p in range(0, n, span):
        chunk = sorted(order[p:p + span], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def pad(sequences: list[list[int]], value: int = 0) -> tuple[Tensor, Tensor]:
    """Lists of ids -> (padded (B, T) long tensor, lengths (B,))."""
    lengths = torch.tensor([len(s) for s in sequences])
    out = torch.full((len(sequences), int(lengths.max())), value, dtype=torch.long)
    for b, s in enumerate(sequences):
        out[b, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out, lengths
