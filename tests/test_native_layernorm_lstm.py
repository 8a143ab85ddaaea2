"""The native LayerNorm LSTM loop (recurrent/native/gru.cpp) against autograd through LayerNormLSTMCell.step, the
Python BPTT loop and gradcheck. There is no torch.nn LayerNorm LSTM: autograd differentiating the cell's forward
step is the reference. Key: B batch, T time, I input, H hidden, G = 4H.
"""
from __future__ import annotations

import pytest
import torch

import recurrent as rc
from recurrent import hardware, kernels, native
from recurrent.native import layernorm_lstm as native_ln
from recurrent.native import loops

B, T, I, H = 3, 6, 5, 4
LENGTHS = torch.tensor([T, 2, 4])

needs_native = pytest.mark.skipif(native.load() is None, reason=f"native kernels unavailable: {native.status()}")


def grad_fns(t: torch.Tensor) -> set[str]:
    """The names of every node in t's autograd graph."""
    names, todo, seen = set(), [t.grad_fn], set()
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo += [f for f, _ in fn.next_functions]
    return names


def make_layer(dtype=torch.float32) -> rc.Recurrent:
    """2 layers, both directions, with every LayerNorm parameter moved off its initial 1 or 0."""
    torch.manual_seed(0)
    layer = rc.Recurrent(rc.LayerNormLSTMCell, I, H, num_layers=2, bidirectional=True).to(dtype)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "ln" in name:
                p.add_(torch.randn_like(p) / 3)
    return layer


def run_layer(layer: rc.Recurrent, backend: str, x, state, lengths, bf16: bool = False):
    """Output, final state, and the gradients of x, the initial state and every parameter; and the graph's names."""
    layer.backend = backend
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out, final = layer(x, state, lengths=lengths)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * w).sum() + final.h.square().sum() + final.c.sum()
    return [out, *final, *torch.autograd.grad(loss, [x, *state, *layer.parameters()])], grad_fns(out)


def inputs(dtype):
    x = torch.randn(B, T, I, dtype=dtype, requires_grad=True)
    state = rc.LSTMState(*(torch.randn(2, 2, B, H, dtype=dtype, requires_grad=True) for _ in range(2)))
    return x, state


@needs_native
def test_layer_matches_autograd_through_the_cell():
    """float32, lengths, a carried state, stacked and bidirectional: values and every gradient equal autograd's
    through LayerNormLSTMCell.step (the autograd backend)."""
    layer, (x, state) = make_layer(), inputs(torch.float32)
    got, names = run_layer(layer, "bptt", x, state, LENGTHS)
    assert "LayerNormLSTMLoopBackward" in names  # the native loop ran
    want, names = run_layer(layer, "autograd", x, state, LENGTHS)
    assert "LayerNormLSTMLoopBackward" not in names
    torch.testing.assert_close(got[:3], want[:3], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[3:], want[3:], atol=1e-5, rtol=1e-4)


@needs_native
def test_a_size_that_fills_no_16_wide_block_matches_autograd():
    """H = 37: the layer norms' sums run over whole blocks of 16 and a remainder (4H = 148, H = 37)."""
    torch.manual_seed(0)
    layer = rc.Recurrent(rc.LayerNormLSTMCell, I, 37)
    x = torch.randn(2, 3, I, requires_grad=True)
    state = rc.LSTMState(*(torch.randn(1, 1, 2, 37, requires_grad=True) for _ in range(2)))
    got, names = run_layer(layer, "bptt", x, state, None)
    assert "LayerNormLSTMLoopBackward" in names
    want, _ = run_layer(layer, "autograd", x, state, None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@needs_native
def test_layer_equals_the_python_bptt_loop_in_float64(monkeypatch):
    """The same as engine.BPTT over LayerNormLSTMCell.step / step_backward, to 1e-10."""
    layer, (x, state) = make_layer(torch.float64), inputs(torch.float64)
    got, names = run_layer(layer, "bptt", x, state, LENGTHS)
    assert "LayerNormLSTMLoopBackward" in names
    monkeypatch.setattr(native_ln, "runs", lambda *args: False)
    want, names = run_layer(layer, "bptt", x, state, LENGTHS)
    assert "LayerNormLSTMLoopBackward" not in names and "BPTTBackward" in names
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@needs_native
def test_gradcheck_in_float64():
    G, f64 = 4 * H, torch.float64
    args = (torch.randn(T, B, G, dtype=f64), torch.randn(G, H, dtype=f64) / 2, 1 + torch.randn(G, dtype=f64) / 3,
            torch.randn(G, dtype=f64) / 3, 1 + torch.randn(G, dtype=f64) / 3, 1 + torch.randn(H, dtype=f64) / 3,
            torch.randn(H, dtype=f64) / 3, torch.randn(B, H, dtype=f64), torch.randn(B, H, dtype=f64))
    args = tuple(a.requires_grad_() for a in args)  # ux, W, γ_x, β_x, γ_h, γ_c, β_c, h0, c0
    assert torch.autograd.gradcheck(native_ln.LayerNormLSTMLoop.apply, args)


@pytest.mark.qemu  # AVX2 without AVX-512 or native bfloat16, under qemu (tests/conftest.py)
@needs_native
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "at-mm"])
def test_bfloat16_products_agree_with_the_python_loop(onednn, monkeypatch):
    """Under autocast both loops multiply in bfloat16 and step in float32: they agree to bfloat16 precision."""
    if onednn and not hardware.cpu().onednn_bf16:
        pytest.skip("oneDNN's bfloat16 kernels do not run on this CPU")
    if not onednn:
        monkeypatch.setattr(kernels, "uses_onednn", lambda W: False)
    layer, (x, state) = make_layer(), inputs(torch.float32)
    got, names = run_layer(layer, "bptt", x, state, None, bf16=True)
    assert "LayerNormLSTMLoopBackward" in names and got[0].dtype == torch.float32
    monkeypatch.setattr(native_ln, "runs", lambda *args: False)
    want, _ = run_layer(layer, "bptt", x, state, None, bf16=True)
    torch.testing.assert_close(got[:3], want[:3], atol=3e-2, rtol=0)
    torch.testing.assert_close(got[3:], want[3:], atol=5e-2, rtol=5e-2)


def test_only_plain_layernorm_lstm_cells_run_natively():
    class Custom(rc.LayerNormLSTMCell):
        def project_input(self, x):
            return super().project_input(x) * 2

    assert loops.find(rc.LayerNormLSTMCell(I, H)) == "layernorm_lstm"
    assert loops.find(Custom(I, H)) is None and loops.find(rc.LayerNormGRUCell(I, H)) is None


@needs_native
def test_rows_split_over_threads_give_the_python_loop_in_float64(monkeypatch):
    """B = 48 rows of 4H = 256: enough that gru.cpp's steps split the rows over torch's threads (over_rows), each
    summing its own γ and β gradients in its own scratch. Equal to engine.BPTT's Python loop to 1e-10, 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        layer = rc.Recurrent(rc.LayerNormLSTMCell, I, 64).double()
        x = torch.randn(48, T, I, dtype=torch.float64, requires_grad=True)
        state = rc.LSTMState(*(torch.randn(1, 1, 48, 64, dtype=torch.float64, requires_grad=True) for _ in range(2)))
        got, names = run_layer(layer, "bptt", x, state, None)
        assert "LayerNormLSTMLoopBackward" in names
        monkeypatch.setattr(native_ln, "runs", lambda *args: False)
        want, _ = run_layer(layer, "bptt", x, state, None)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
