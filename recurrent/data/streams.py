"""Truncated-BPTT batches for language modelling (Zaremba et al. 2014; Merity et al. 2018, AWD-LSTM).

Key: N tokens, B batch (parallel streams), L stream length, t window length (<= bptt).

The corpus is cut into B contiguous streams, read side by side. Each batch is the next window of t tokens of
every stream, so the state left by one batch is exactly the state the next batch needs:

    streams = batchify(vocab.encode(corpus.train), batch_size=B)   # (B, L)
    state = None
    for x, y in bptt_batches(streams, bptt=35):                    # x, y (B, t); y[:, i] == x[:, i + 1]
        logits, state = model(x, state)
        state = detach(state)  # cut the graph: BPTT spans one batch
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from recurrent.errors import UserError

COMPACT_IDS = (torch.uint8, torch.int16, torch.int32)  # ids stored small (recurrent/data/corpus_stream.py)
MIN_RANDOM_LENGTH = 5  # AWD-LSTM: a window is never shorter than 5 tokens ...
MAX_EXTRA_LENGTH = 20  # ... and (our cap) never longer than bptt + 20, 4 standard deviations above bptt


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """(N,) -> (B, N // B): row b is the contiguous slice ids[b*L : (b+1)*L]; the last N % B tokens are dropped.
    A view, never a copy: of a memory-mapped corpus too (recurrent/data/corpus_stream.py)."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D (N,), got shape {tuple(ids.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive int, got {batch_size!r}")
    N, B = ids.numel(), batch_size
    L = N // B
    if L < 2:
        raise UserError(f"{N} tokens are too few for batch_size {B}: each stream needs at least 2 tokens "
                        f"(an input and its target)")
    return ids[: B * L].view(B, L)  # (B, L)


def bptt_batches(streams: Tensor, bptt: int, random_length: bool = False,
                 generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive windows over the streams: x = streams[:, i : i+t] and y = streams[:, i+1 : i+1+t], each (B, t).
    Streams of compact ids (uint8, int16, int32) give int64 windows.

    Fixed length: t = bptt, and the last window is shorter if the streams run out.

    random_length (AWD-LSTM's variable BPTT, so every token is a window start in some epoch):
        base = bptt with probability 0.95, else bptt / 2
        t = max(5, int(Normal(base, 5)))
    then capped at bptt + 20 (ours: AWD-LSTM leaves it open and warns of out-of-memory) and at the end of the
    streams. The floor 5 becomes bptt when bptt < 5. Lengths are drawn from `generator` (torch's global RNG
    if None), so a seeded generator gives the same windows. AWD-LSTM also scales the learning rate by t / bptt;
    that is the trainer's choice, and t is x.size(1).
    """
    if streams.dim() != 2:
        raise ValueError(f"streams must be (B, L), got shape {tuple(streams.shape)}")
    if not isinstance(bptt, int) or bptt < 1:
        raise UserError(f"bptt must be a positive int, got {bptt!r}")
    L = streams.size(1)
    i = 0
    while i < L - 1:
        t = _random_length(bptt, generator) if random_length else bptt
        t = min(t, L - 1 - i)  # the last target is the last token
        yield _ids(streams[:, i : i + t]), _ids(streams[:, i + 1 : i + 1 + t])  # x, y (B, t)
        i += t


def _ids(window: Tensor) -> Tensor:
    """int64 ids, what nn.Embedding and cross_entropy take: a compact window (uint8/int16/int32, as a memory-mapped
    corpus holds them) is copied up; an int64 one stays a view."""
    return window.long() if window.dtype in COMPACT_IDS else window


def _random_length(bptt: int, generator: torch.Generator | None) -> int:
    base = bptt if torch.rand((), generator=generator).item() < 0.95 else bptt / 2
    t = int(torch.normal(float(base), 5.0, size=(), generator=generator).item())
    return min(max(min(MIN_RANDOM_LENGTH, bptt), t), bptt + MAX_EXTRA_LENGTH)


def num_bptt_batches(streams: Tensor, bptt: int) -> int:
    """How many windows bptt_batches yields with a fixed length (a progress bar's total)."""
    return math.ceil((streams.size(1) - 1) / bptt)
