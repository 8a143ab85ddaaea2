"""The unroll engine against stepping the cell by hand, and the length-aware helpers against
per-sequence Python loops.

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch

import recurrent as rc
from recurrent.engine import flip_valid, last_valid

from conftest import CELLS

B, T, I, H = 3, 5, 3, 4
LENGTHS = torch.tensor([T, 2, 4])


def step_by_hand(cell: rc.Cell, x, state, length: int):
    """The reference: call the cell once per valid step of one sequence. x (T, I) -> outputs (length, H), final."""
    state = type(state)(*(s.unsqueeze(0) for s in state))  # a batch of one
    outputs = []
    for t in range(length):
        state = cell(x[t : t + 1], state)
        outputs.append(state.h[0])
    return torch.stack(outputs), type(state)(*(s[0] for s in state))


@pytest.mark.parametrize("backend", ["bptt", "autograd"])
@pytest.mark.parametrize("name", CELLS)
def test_unroll_matches_stepping_the_cell_by_hand(make_cell, name, backend):
    cell = make_cell(name, I, H)
    x = torch.randn(B, T, I, dtype=torch.float64)
    state = cell.state_type(*(torch.randn(B, H, dtype=torch.float64) for _ in cell.state_type._fields))

    out, final = rc.unroll(cell, x, state, lengths=LENGTHS, backend=backend)

    assert out.shape == (B, T, H)
    for b, n in enumerate(LENGTHS.tolist()):
        expected_out, expected_final = step_by_hand(cell, x[b], type(state)(*(s[b] for s in state)), n)
        torch.testing.assert_close(out[b, :n], expected_out)
        assert not out[b, n:].any(), "outputs past a sequence's length must be zero"
        for got, want in zip(final, expected_final):
            torch.testing.assert_close(got[b], want)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_unroll_starts_from_zeros_by_default(make_cell, name):
    cell = make_cell(name, I, H)
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, final = rc.unroll(cell, x)
    ref_out, ref_final = rc.unroll(cell, x, cell.init_state(B, x))
    torch.testing.assert_close(out, ref_out)
    for a, b in zip(final, ref_final):
        torch.testing.assert_close(a, b)


def test_unroll_auto_picks_bptt_only_with_a_backward_step(cells_doc):
    """auto: bptt for a cell with step_backward, autograd for a forward-only cell (same results either way)."""
    x = torch.randn(B, T, I)
    peephole = cells_doc["PeepholeLSTMCell"](I, H)
    out, _ = rc.unroll(peephole, x)  # would raise if auto chose bptt
    torch.testing.assert_close(out, rc.unroll(peephole, x, backend="autograd")[0])


# --- the length-aware helpers -------------------------------------------------------------------------------


def test_flip_valid_reverses_only_the_valid_part():
    x = torch.randn(T, B, 2)  # time-major, as inside the engine
    flipped = flip_valid(x, LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(flipped[:n, b], x[:n, b].flip(0))
        torch.testing.assert_close(flipped[n:, b], x[n:, b])  # padding stays where it was
    torch.testing.assert_close(flip_valid(flipped, LENGTHS), x)  # its own inverse
    torch.testing.assert_close(flip_valid(x, None), x.flip(0))


def test_last_valid_takes_each_sequence_at_its_last_step():
    seq = torch.randn(T, B, H)
    last = last_valid(seq, LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(last[b], seq[n - 1, b])
    torch.testing.assert_close(last_valid(seq, None), seq[-1])


@pytest.mark.parametrize("layer", [rc.LSTM, rc.GRU, rc.RNN])
def test_bptt_under_bf16_autocast_tracks_float32_and_really_runs_bf16(layer):
    """Under CPU autocast the bptt engine does its products in bfloat16 (states and steps stay float32): outputs
    and every gradient stay within bf16 rounding of the float32 run, parameter grads stay float32."""
    torch.manual_seed(0)
    net = layer(16, 32, num_layers=2, backend="bptt")
    x = torch.randn(4, 12, 16)
    results = {}
    for bf16 in (False, True):
        net.zero_grad()
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, _ = net(xi)
        out.float().pow(2).sum().backward()
        results[bf16] = [out.float()] + [xi.grad] + [p.grad.clone() for p in net.parameters()]
    assert all(p.grad.dtype == torch.float32 for p in net.parameters())
    for got, want in zip(results[True], results[False]):
        scale = want.abs().max()
        assert (got - want).abs().max() <= 0.03 * scale, (got - want).abs().max() / scale
    assert not torch.equal(results[True][0], results[False][0])


def test_the_python_bptt_loops_large_buffers_come_from_the_native_pool(monkeypatch):
    """A (T+1, B, H) state buffer of 1 MiB or more is taken from recurrent/native/common.h's pool (no page faults
    on reuse) and goes back to it when autograd frees it; smaller ones are plain tensors."""
    from recurrent import engine, native

    ops = native.load()
    if ops is None:
        pytest.skip(f"native kernels: {native.status()}")
    layer = rc.Recurrent(rc.LayerNormGRUCell, 8, 256, backend="bptt")  # the Python BPTT loop (no C++ loop)
    x = torch.randn(16, 64, 8)  # (T+1) B H float32 = 1.06 MB per state buffer
    in_use = ops.pool_bytes()[1]
    out, _ = layer(x)
    assert ops.pool_bytes()[1] - in_use >= 65 * 16 * 256 * 4
    out.sum().backward()
    del out
    assert ops.pool_bytes()[1] == in_use
    monkeypatch.setattr(engine, "POOLED_MIN", 1 << 40)
    out, _ = layer(x)
    assert ops.pool_bytes()[1] == in_use  # nothing taken from the pool below POOLED_MIN
