"""Truncated-BPTT batching, checked against hand-built examples.

Key: B batch (streams), L stream length, t window length.
"""
from __future__ import annotations

import pytest
import torch

from recurrent.data import batchify, bptt_batches, num_bptt_batches
from recurrent.errors import UserError


def test_batchify_contiguous_streams_drop_the_remainder():
    streams = batchify(torch.arange(21), batch_size=4)  # 21 // 4 = 5 per stream, token 20 dropped
    assert streams.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert streams.dtype == torch.long


def test_batchify_too_few_tokens():
    with pytest.raises(UserError, match="7 tokens are too few for batch_size 4"):
        batchify(torch.arange(7), batch_size=4)  # 1 token per stream: no target
    assert batchify(torch.arange(8), batch_size=4).shape == (4, 2)


def test_bptt_batches_hand_built():
    streams = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7],
                            [10, 11, 12, 13, 14, 15, 16, 17]])  # (B=2, L=8)
    windows = [(x.tolist(), y.tolist()) for x, y in bptt_batches(streams, bptt=3)]
    assert windows == [
        ([[0, 1, 2], [10, 11, 12]], [[1, 2, 3], [11, 12, 13]]),
        ([[3, 4, 5], [13, 14, 15]], [[4, 5, 6], [14, 15, 16]]),
        ([[6], [16]], [[7], [17]]),  # the last window is short: its last target is the last token
    ]
    assert num_bptt_batches(streams, 3) == 3


@pytest.mark.parametrize("bptt", [1, 4, 7, 50])
def test_bptt_windows_continue_each_stream(bptt):
    streams = batchify(torch.arange(3 * 23), batch_size=3)  # (3, 23)
    batches = list(bptt_batches(streams, bptt))
    assert len(batches) == num_bptt_batches(streams, bptt)
    xs, ys = zip(*batches)
    # side by side, the windows are each stream once, so the state carried from a window is the next one's
    torch.testing.assert_close(torch.cat(xs, dim=1), streams[:, :-1], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(ys, dim=1), streams[:, 1:], rtol=0, atol=0)
    assert all(x.size(1) == bptt for x in xs[:-1])


def window_lengths(L: int, bptt: int, seed: int) -> list[int]:
    streams = torch.zeros(2, L, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    return [x.size(1) for x, _ in bptt_batches(streams, bptt, random_length=True, generator=generator)]


def test_random_length_deterministic_for_a_seed_and_bounded():
    bptt, L = 35, 35 * 300
    lengths = window_lengths(L, bptt, seed=0)
    assert lengths == window_lengths(L, bptt, seed=0)
    assert lengths != window_lengths(L, bptt, seed=1)
    assert sum(lengths) == L - 1  # every token is a target once
    assert all(5 <= t <= bptt + 20 for t in lengths[:-1])
    # AWD-LSTM's rule: base = bptt (p = 0.95) or bptt / 2, t ~ int(Normal(base, 5)). int() truncates, about -0.5.
    # The std of t is about 6.3, so over ~300 windows the mean's standard error is about 0.4.
    mean = sum(lengths[:-1]) / len(lengths[:-1])
    assert abs(mean - (0.95 * bptt + 0.05 * bptt / 2 - 0.5)) < 1.6
    halves = sum(t < bptt - 10 for t in lengths)  # the bptt / 2 draws, 2 std below bptt
    assert 0 < halves < 0.15 * len(lengths)


def test_random_length_small_bptt_floor_and_cap():
    lengths = window_lengths(2000, bptt=2, seed=3)
    assert all(2 <= t <= 22 for t in lengths[:-1])  # floor min(5, bptt), cap bptt + 20
    assert max(lengths) > 5  # Normal(2, 5) does go above 5


def test_random_length_uses_the_global_rng_without_a_generator():
    streams = torch.zeros(1, 500, dtype=torch.long)
    torch.manual_seed(7)
    a = [x.size(1) for x, _ in bptt_batches(streams, 20, random_length=True)]
    torch.manual_seed(7)
    b = [x.size(1) for x, _ in bptt_batches(streams, 20, random_length=True)]
    assert a == b


def test_bptt_bad_arguments():
    with pytest.raises(UserError, match="bptt must be a positive int, got 0"):
        next(bptt_batches(torch.zeros(2, 5, dtype=torch.long), bptt=0))
    with pytest.raises(ValueError, match=r"streams must be \(B, L\), got shape \(5,\)"):
        next(bptt_batches(torch.zeros(5, dtype=torch.long), bptt=2))
