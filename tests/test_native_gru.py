"""The native GRU loop (recurrent/native/gru.cpp) against torch.nn.GRU, the Python BPTT loop and gradcheck.

Key: B batch, T time, I input, H hidden, L layers, D directions, G = 3H.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import recurrent as rc
from recurrent import hardware, kernels, native
from recurrent.native import gru as native_gru
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


def torch_run(module: nn.GRU, x, h0, lengths):
    """torch.nn.GRU on a padded batch: output (B, T, D H) with zeros past each length, and h_n (L D, B, H)."""
    packed = x if lengths is None else nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
    out, h_n = module(packed, h0)
    if lengths is not None:
        out = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    return out, h_n


@pytest.mark.qemu  # AVX2 without AVX-512 or native bfloat16, under qemu (tests/conftest.py)
@needs_native
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_layer_matches_torch_gru(bidirectional, with_lengths):
    """Outputs, final states and every gradient equal torch.nn.GRU's (copied weights), from a carried state."""
    L, D = 2, 2 if bidirectional else 1
    module = nn.GRU(I, H, L, batch_first=True, bidirectional=bidirectional)
    layer = rc.GRU.from_torch(module, backend="bptt")
    x = torch.randn(B, T, I)
    h0 = torch.randn(L * D, B, H)
    lengths = LENGTHS if with_lengths else None

    out, state = layer(x, rc.RNNState(h0.view(L, D, B, H)), lengths=lengths)
    assert "GRULoopBackward" in grad_fns(out)  # the native loop ran
    ref, h_n = torch_run(module, x, h0, lengths)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state.h.reshape(L * D, B, H), h_n, atol=1e-6, rtol=1e-5)

    w = torch.randn_like(out)  # a loss that reaches every output and the final state
    ours = torch.autograd.grad((out * w).sum() + state.h.square().sum(), list(layer.parameters()))
    theirs = torch.autograd.grad((ref * w).sum() + h_n.square().sum(), list(module.parameters()))
    by_name = dict(zip([n for n, _ in module.named_parameters()], theirs))
    for (name, _), got in zip(layer._torch_names(), ours):
        torch.testing.assert_close(got, by_name[name], atol=1e-5, rtol=1e-4, msg=name)


def run_layer(layer: rc.Recurrent, x, state, lengths, bf16: bool = False):
    """Output, final state and the gradients of x, the initial state and every parameter; and the graph's names."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out, final = layer(x, state, lengths=lengths)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    grads = torch.autograd.grad((out * w).sum() + final.h.square().sum(), [x, state.h, *layer.parameters()])
    return [out, final.h, *grads], grad_fns(out)


@needs_native
@pytest.mark.parametrize("bias", [True, False])
def test_stacked_bidirectional_layer_equals_the_python_bptt_loop_in_float64(bias, monkeypatch):
    """Same values and gradients (x, h0 and every weight) as engine.BPTT over GRUCell.step / step_backward, to
    1e-10: with lengths and a carried state, 2 layers, both directions."""
    layer = rc.Recurrent(lambda i, h: rc.GRUCell(i, h, bias=bias), I, H, num_layers=2, bidirectional=True,
                         backend="bptt").double()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    state = rc.RNNState(torch.randn(2, 2, B, H, dtype=torch.float64, requires_grad=True))
    got, names = run_layer(layer, x, state, LENGTHS)
    assert "GRULoopBackward" in names
    monkeypatch.setattr(native_gru, "runs", lambda *args: False)  # the same through engine.BPTT's Python loop
    want, names = run_layer(layer, x, state, LENGTHS)
    assert "GRULoopBackward" not in names and "BPTTBackward" in names
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@needs_native
def test_gradcheck_in_float64():
    G = 3 * H
    args = (torch.randn(T, B, G, dtype=torch.float64), torch.randn(G, H, dtype=torch.float64) / 2,
            torch.randn(G, dtype=torch.float64), torch.randn(G, dtype=torch.float64),
            torch.randn(B, H, dtype=torch.float64))
    args = tuple(a.requires_grad_() for a in args)  # gx, W, b_ih, b_hh, h0
    assert torch.autograd.gradcheck(native_gru.GRULoop.apply, args)


@needs_native
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "at-mm"])
@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bfloat16"])
def test_products_in_either_dtype_and_either_library_agree_with_the_python_loop(bf16, onednn, monkeypatch):
    """float32 products, and bfloat16 ones under autocast (states float32), through oneDNN or at::mm (where oneDNN
    cannot multiply W's dtype: kernels.uses_onednn): the same as the Python loop, to that dtype's precision."""
    if onednn and bf16 and not hardware.cpu().onednn_bf16:
        pytest.skip("oneDNN's bfloat16 kernels do not run on this CPU")
    if not onednn:
        monkeypatch.setattr(kernels, "uses_onednn", lambda W: False)  # for our loop and kernels.linear alike
    layer = rc.GRU(I, H, num_layers=2, backend="bptt")
    x, state = torch.randn(B, T, I, requires_grad=True), rc.RNNState(torch.randn(2, 1, B, H, requires_grad=True))
    got, names = run_layer(layer, x, state, None, bf16)
    assert "GRULoopBackward" in names and got[0].dtype == torch.float32
    monkeypatch.setattr(native_gru, "runs", lambda *args: False)
    want, names = run_layer(layer, x, state, None, bf16)
    assert "GRULoopBackward" not in names
    out_tol, grad_tol = ({"atol": 2e-2, "rtol": 0}, {"atol": 5e-2, "rtol": 5e-2}) if bf16 else \
        ({"atol": 1e-6, "rtol": 1e-5}, {"atol": 1e-5, "rtol": 1e-4})
    torch.testing.assert_close(got[:2], want[:2], **out_tol)
    torch.testing.assert_close(got[2:], want[2:], **grad_tol)


def test_only_plain_gru_cells_run_natively():
    class Custom(rc.GRUCell):
        def step(self, gx, gh, state):
            return super().step(gx, gh, state)

    assert native_gru.is_plain_gru(rc.GRUCell(I, H)) and loops.find(rc.GRUCell(I, H)) == "gru"
    assert not native_gru.is_plain_gru(Custom(I, H)) and loops.find(Custom(I, H)) is None
    assert not native_gru.is_plain_gru(rc.LayerNormGRUCell(I, H))
    assert not native_gru.is_plain_gru(rc.LSTMCell(I, H)) and loops.find(rc.LSTMCell(I, H)) == "lstm"

    class Same(Custom):  # declares that its overrides keep GRUCell's equations
        same_equations = True

    assert native_gru.is_plain_gru(Same(I, H))
    replaced = rc.GRUCell(I, H)
    replaced.step = lambda gx, gh, state: None
    assert native_gru.not_plain_because(replaced, rc.GRUCell, native_gru.EQUATIONS) == (
        "GRUCell has step replaced on the instance")
    assert native_gru.not_plain_because(Custom(I, H), rc.GRUCell, native_gru.EQUATIONS).startswith(
        "Custom overrides step")


@needs_native
def test_the_backend_says_the_cpp_loop_runs():
    layer = rc.Recurrent(rc.GRUCell, I, H)
    backend = layer._backend_for(torch.randn(B, T, I))
    assert backend.native and backend.reason == "GRUCell supplies step_backward; time loop: the C++ loop (recurrent.native)"
    forced = rc.GRU(I, H, backend="bptt")._backend_for(torch.randn(B, T, I, dtype=torch.float16))
    assert not forced.native and "no kernel for torch.float16 states" in forced.reason


@needs_native
def test_rows_split_over_threads_give_the_python_loop_in_float64(monkeypatch):
    """B = 48 rows of 3H = 192: enough that gru.cpp's steps split the rows over torch's threads (over_rows), each
    summing its own bias gradients. Values and gradients equal engine.BPTT's Python loop to 1e-10, on 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        layer = rc.Recurrent(rc.GRUCell, I, 64, backend="bptt").double()
        x = torch.randn(48, T, I, dtype=torch.float64, requires_grad=True)
        state = rc.RNNState(torch.randn(1, 1, 48, 64, dtype=torch.float64, requires_grad=True))
        got, names = run_layer(layer, x, state, None)
        assert "GRULoopBackward" in names
        monkeypatch.setattr(native_gru, "runs", lambda *args: False)
        want, _ = run_layer(layer, x, state, None)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
