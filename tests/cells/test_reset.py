"""`Recurrent.forward(..., reset=)`: restarting one stream's state at a document boundary equals running the
segments separately, for every registered cell (whatever backend it would pick), stacked and bidirectional, with
lengths, a carried state and a learned initial state; values and gradients.

Key: B batch, T time, I input, H hidden.
"""
import itertools

import pytest
import torch

import recurrent as rc
from recurrent.cells import registry

I, H, T = 3, 4, 9
LENGTHS = [9, 7, 8]
BOUNDARIES = {0: [3, 6], 1: [5], 2: []}  # stream -> steps that start a new document (stream 2: none)


def make(name: str) -> rc.Recurrent:
    torch.manual_seed(0)
    entry = registry.spec(name)
    kwargs = {"num_layers": 2, "bidirectional": True, "learnable_init": True}
    layer = (entry.layer(I, H, **kwargs) if entry.layer is not None else rc.Recurrent(entry.cell, I, H, **kwargs))
    layer = layer.double()
    with torch.no_grad():
        for p in layer.initial.values():  # a learned initial state that is not zeros, so restarting to it shows
            p.normal_()
    return layer


def segments(b: int) -> list[tuple[int, int]]:
    cuts = [0, *BOUNDARIES[b], LENGTHS[b]]
    return list(itertools.pairwise(cuts))


@pytest.mark.parametrize("name", registry.names())
def test_reset_equals_running_each_document_separately(name):
    layer = make(name)
    x = torch.randn(len(LENGTHS), T, I, dtype=torch.float64)
    reset = torch.zeros(len(LENGTHS), T, dtype=torch.bool)
    for b, cuts in BOUNDARIES.items():
        reset[b, cuts] = True
    reset[2, 8] = True  # past stream 2's length: ignored

    out, state = layer(x, lengths=torch.tensor(LENGTHS), reset=reset)
    assert layer.backend == "autograd" and "reset= given" in layer.backend.reason
    loss = out.pow(2).sum() + sum(s.sum() for s in state)
    params = list(layer.parameters())  # (dotrnn never reads the initial h: its recurrence carries s)
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)

    ref_loss = 0
    for b in range(len(LENGTHS)):
        runs = [layer(x[b : b + 1, start:end]) for start, end in segments(b)]  # each document alone
        for (start, end), (seg, _) in zip(segments(b), runs):
            torch.testing.assert_close(out[b, start:end], seg[0])
            ref_loss = ref_loss + seg.pow(2).sum()
        # the final state: forward, the last document's; backward (it reads the stream from its end), the first's
        finals = [runs[-1][1], runs[0][1]]
        for s, *r in zip(state, *finals):
            for d in range(2):
                torch.testing.assert_close(s[:, d, b], r[d][:, d, 0])
                ref_loss = ref_loss + r[d][:, d].sum()
    assert (out[1, 7:] == 0).all()
    for a, r in zip(grads, torch.autograd.grad(ref_loss, params, allow_unused=True, materialize_grads=True)):
        torch.testing.assert_close(a, r)

    layer(x)  # without reset the layer goes back to the backend it plans for this call (per shape on the CPU)
    assert layer.backend == layer._backend_for(x)


def test_reset_at_the_first_step_drops_a_carried_state_for_that_stream_only():
    torch.manual_seed(1)
    layer = rc.GRU(I, H, bidirectional=True, learnable_init=True).double()
    with torch.no_grad():
        layer.initial["h"].normal_()
    x = torch.randn(2, 5, I, dtype=torch.float64)
    carried = rc.RNNState(torch.randn(1, 2, 2, H, dtype=torch.float64))
    reset = torch.tensor([[True, False, False, False, False], [False] * 5])
    out, _ = layer(x, carried, reset=reset)
    fresh, _ = layer(x[:1])  # stream 0: from the learned initial state
    kept, _ = layer(x[1:], rc.RNNState(carried.h[:, :, 1:]))  # stream 1: from its carried state
    # the forward direction sees the reset; the backward direction reads the stream from its end, so it starts
    # from the carried state in both (a reset at step 0 is a boundary before the sequence, not inside it)
    torch.testing.assert_close(out[0, :, :H], fresh[0, :, :H])
    carried0, _ = layer(x[:1], rc.RNNState(carried.h[:, :, :1]))
    assert not torch.allclose(out[0, :, :H], carried0[0, :, :H])  # (the carried state would have mattered)
    torch.testing.assert_close(out[1], kept[0])


def test_no_reset_at_all_is_the_plain_call():
    layer = make("lstm")
    x = torch.randn(2, 5, I, dtype=torch.float64)
    out, state = layer(x, reset=torch.zeros(2, 5, dtype=torch.bool))
    ref, ref_state = layer(x)
    assert layer.backend == "fused"
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(state.c, ref_state.c)


def test_a_bad_reset_is_refused():
    layer = make("gru")
    x = torch.randn(2, 5, I, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"reset must be a \(batch, time\) = \(2, 5\) bool tensor, got \(2, 4\)"):
        layer(x, reset=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"reset must be .*got \(2, 5\) torch.int64"):
        layer(x, reset=torch.zeros(2, 5, dtype=torch.long))
