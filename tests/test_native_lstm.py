"""The native LSTM loop (recurrent/native) against torch.nn.LSTM, the Python BPTT loop and gradcheck.

Key: B batch, T time, I input, H hidden, L layers, D directions, G = 4H.
"""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from torch import nn

import recurrent as rc
from recurrent import hardware, kernels, native
from recurrent.engine import BPTT
from recurrent.native import lstm as native_lstm

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


def python_loop(cell: rc.LSTMCell, x, state, W, b_hh):
    """The reference: engine.BPTT over LSTMCell.step / step_backward. x (T, B, I) -> h, c (T, B, H)."""
    return BPTT.apply(cell, 2, cell.project_input(x), W, b_hh, *state)


@needs_native
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_layer_matches_torch_lstm(bidirectional, with_lengths):
    """Outputs, final states and every gradient equal torch.nn.LSTM's (copied weights), from a carried state."""
    L, D = 2, 2 if bidirectional else 1
    module = nn.LSTM(I, H, L, batch_first=True, bidirectional=bidirectional)
    layer = rc.LSTM.from_torch(module, backend="bptt")
    x = torch.randn(B, T, I)
    h0, c0 = torch.randn(L * D, B, H), torch.randn(L * D, B, H)
    lengths = LENGTHS if with_lengths else None

    out, state = layer(x, rc.LSTMState(h0.view(L, D, B, H), c0.view(L, D, B, H)), lengths=lengths)
    assert "LSTMLoopBackward" in grad_fns(out)  # the native loop ran
    packed = x if lengths is None else nn.utils.rnn.pack_padded_sequence(x, lengths, True, enforce_sorted=False)
    ref, (h_n, c_n) = module(packed, (h0, c0))
    if lengths is not None:
        ref = nn.utils.rnn.pad_packed_sequence(ref, batch_first=True, total_length=T)[0]
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state.h.reshape(L * D, B, H), h_n, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(state.c.reshape(L * D, B, H), c_n, atol=1e-6, rtol=1e-5)

    w = torch.randn_like(out)  # a loss that reaches every output and both final states
    ours = torch.autograd.grad((out * w).sum() + state.h.sum() + state.c.square().sum(), list(layer.parameters()))
    theirs = torch.autograd.grad((ref * w).sum() + h_n.sum() + c_n.square().sum(), list(module.parameters()))
    names = [name for name, _ in layer._torch_names()]
    by_name = dict(zip([n for n, _ in module.named_parameters()], theirs))
    for name, got in zip(names, ours):
        torch.testing.assert_close(got, by_name[name], atol=1e-5, rtol=1e-4, msg=name)


@needs_native
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows, hidden, threads", [(B, H, 1), (48, 64, 2)], ids=["small", "rows-over-2-threads"])
def test_loop_matches_the_python_bptt_loop_in_float64(bias, rows, hidden, threads):
    """rows-over-2-threads: 48 rows of 4H = 256, enough that lstm.cpp's steps split the rows over torch's threads
    (over_rows in common.h), each summing its own bias gradient."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cell = rc.LSTMCell(I, hidden, bias=bias).double()
        x = torch.randn(T, rows, I, dtype=torch.float64, requires_grad=True)
        state = rc.LSTMState(*(torch.randn(rows, hidden, dtype=torch.float64, requires_grad=True) for _ in range(2)))
        W, b_hh = cell.recurrence()
        got = native_lstm.lstm_loop(cell, x, state, W)
        want = python_loop(cell, x, state, W, b_hh)
        dh, dc = torch.randn_like(got[0]), torch.randn_like(got[1])
        inputs = [x, *state, *cell.parameters()]
        got_grads = torch.autograd.grad(got, inputs, (dh, dc))
        want_grads = torch.autograd.grad(want, inputs, (dh, dc))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(got + got_grads, want + want_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@needs_native
def test_gradcheck_in_float64():
    G = 4 * H
    args = (torch.randn(T, B, G, dtype=torch.float64), torch.randn(G, H, dtype=torch.float64) / 2,
            torch.randn(G, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64),
            torch.randn(B, H, dtype=torch.float64))
    args = tuple(a.requires_grad_() for a in args)  # gx, W, bias, h0, c0
    assert torch.autograd.gradcheck(native_lstm.LSTMLoop.apply, args)


@needs_native
def test_bfloat16_products_agree_with_the_python_loop(monkeypatch):
    """Under autocast both paths multiply in bfloat16 and step in float32: they agree to bfloat16 precision."""
    layer = rc.LSTM(I, H, num_layers=2, backend="bptt")
    x = torch.randn(B, T, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = layer(x)
        assert "LSTMLoopBackward" in grad_fns(out) and out.dtype == state.c.dtype == torch.float32
    grads = torch.autograd.grad(out.sum() + state.c.sum(), list(layer.parameters()))
    monkeypatch.setattr(native_lstm, "runs", lambda *args: False)  # the same through engine.BPTT's Python loop
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, ref_state = layer(x)
        assert "LSTMLoopBackward" not in grad_fns(ref)
    ref_grads = torch.autograd.grad(ref.sum() + ref_state.c.sum(), list(layer.parameters()))
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)


def run_layer(layer: rc.LSTM, x: torch.Tensor, bf16: bool):
    """The layer's output, its parameters' gradients and the names in its graph, under autocast if bf16."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out, state = layer(x)
    grads = torch.autograd.grad(out.sum() + state.c.sum(), list(layer.parameters()))
    return out, grads, grad_fns(out)


@needs_native
@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bfloat16"])
def test_the_loop_without_onednn_agrees_with_onednn_and_the_python_loop(bf16, monkeypatch):
    """Where oneDNN cannot multiply W's dtype (its bfloat16 kernels need AVX-512), kernels.uses_onednn is False and
    the loop's products are at::mm: the same results as with oneDNN's products (where they run here) and as the
    Python loop on torch's products."""
    layer = rc.LSTM(I, H, num_layers=2, backend="bptt")
    x = torch.randn(B, T, I)
    refs = []
    if not bf16 or hardware.cpu().onednn_bf16:
        refs.append(run_layer(layer, x, bf16))  # the native loop, oneDNN's products
    monkeypatch.setattr(kernels, "uses_onednn", lambda W: False)  # for our loop and kernels.linear alike
    out, grads, names = run_layer(layer, x, bf16)
    assert "LSTMLoopBackward" in names
    monkeypatch.setattr(native_lstm, "runs", lambda *args: False)  # engine.BPTT's Python loop
    refs.append(run_layer(layer, x, bf16))
    assert "LSTMLoopBackward" not in refs[-1][2]
    out_tol, grad_tol = (dict(atol=2e-2, rtol=0), dict(atol=5e-2, rtol=5e-2)) if bf16 else \
        (dict(atol=1e-6, rtol=1e-5), dict(atol=1e-5, rtol=1e-4))
    for ref_out, ref_grads, _ in refs:
        torch.testing.assert_close(out, ref_out, **out_tol)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, **grad_tol)


def test_only_plain_lstm_cells_run_natively(cells_doc):
    class Custom(rc.LSTMCell):
        def step(self, gx, gh, state):
            return super().step(gx, gh, state)

    assert native_lstm.is_plain_lstm(rc.LSTMCell(I, H))
    assert not native_lstm.is_plain_lstm(Custom(I, H))
    assert not native_lstm.is_plain_lstm(rc.GRUCell(I, H))
    assert not native_lstm.is_plain_lstm(cells_doc["PeepholeLSTMCell"](I, H))


def test_without_a_compiler_bptt_falls_back_with_one_warning(monkeypatch, tmp_path):
    """No g++: load() warns once and returns None, and the bptt backend gives the same results in Python."""
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    layer = rc.LSTM(I, H, backend="bptt").double()
    x = torch.randn(B, T, I, dtype=torch.float64)
    with pytest.warns(UserWarning, match="native LSTM kernels unavailable") as caught:
        out, _ = layer(x)
        layer(x)
    assert len(caught) == 1 and "FileNotFoundError" in native.status()
    assert "LSTMLoopBackward" not in grad_fns(out)
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("RECURRENT_NATIVE", "0")  # switched off: no warning, same results
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(layer(x)[0], out)
    assert native.status() == "disabled by RECURRENT_NATIVE=0"


def lm_step_reference(table, tokens, weights, biases, states, dec_W, dec_b, low):
    """What native lm_step computes, in torch: LSTMCell.step's equations, products with weights (and inputs)
    rounded to `low`, sums in float32."""
    def product(W, x):
        return x.to(low).float() @ W.to(low).float().t()

    hs, cs = [], []
    x = None
    for l, ((h, c), W, b) in enumerate(zip(states, weights, biases)):
        pre = table[tokens] + product(W, h) + b if l == 0 else product(W, torch.cat([x, h], 1)) + b  # (B, G)
        i, f, g, o = pre.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        x = torch.sigmoid(o) * torch.tanh(c)
        hs.append(x), cs.append(c)
    return x @ dec_W.t() + dec_b, hs, cs


@needs_native
@pytest.mark.parametrize("low", [torch.float32, torch.bfloat16])
def test_lm_step_matches_torch_for_odd_sizes_and_either_thread_count(low):
    """Three layers of sizes that fill no 16-wide block (G = 20, 28, 36; K odd), batch 3 and batch 1: equal to
    the torch reference, and the same bits whether the products run on one thread or are split over two."""
    torch.manual_seed(0)
    ops, V, sizes = native.load(), 7, [5, 7, 9]
    table = torch.randn(V, 4 * sizes[0])
    weights = [torch.randn(4 * sizes[0], sizes[0])] + [torch.randn(4 * sizes[l], sizes[l - 1] + sizes[l])
                                                       for l in (1, 2)]
    biases = [torch.randn(4 * s) for s in sizes]
    dec_W, dec_b = torch.randn(V, sizes[-1]), torch.randn(V)
    packed = [ops.gemv_pack([W], low) for W in weights[:1]] + [ops.gemv_pack(list(W.split([I, H], 1)), low)
                                                              for W, I, H in zip(weights[1:], sizes, sizes[1:])]
    dec_P = ops.gemv_pack([dec_W], torch.float32)
    for batch in (3, 1):
        tokens = torch.randint(V, (batch,))
        states = [(torch.randn(batch, s), torch.randn(batch, s)) for s in sizes]
        want = lm_step_reference(table, tokens, weights, biases, states, dec_W, dec_b, low)
        runs = [ops.lm_step(table, tokens, packed, biases, [h for h, _ in states], [c for _, c in states],
                            dec_P, dec_b, threads) for threads in (1, 2)]
        tol = 1e-5 if low == torch.float32 else 1e-4  # the reference rounds the same inputs to bfloat16
        torch.testing.assert_close(runs[0][0], want[0], atol=tol, rtol=tol)
        for got, ref in zip(runs[0][1] + runs[0][2], want[1] + want[2]):
            torch.testing.assert_close(got, ref, atol=tol, rtol=tol)
        for one, two in zip(runs[0][1] + runs[0][2] + [runs[0][0]], runs[1][1] + runs[1][2] + [runs[1][0]]):
            assert torch.equal(one, two)


@needs_native
def test_lm_step_splits_a_large_product_over_two_threads_with_the_same_bits():
    """A product of 64 blocks of 16 outputs is split between the caller and the helper thread: same result as
    one thread, over many calls in a row (the helper spins between them) and after a pause (it sleeps)."""
    import time

    torch.manual_seed(1)
    ops, V, H = native.load(), 3, 256
    table, W, b = torch.randn(V, 4 * H), torch.randn(4 * H, H), torch.randn(4 * H)
    P, dec_P = ops.gemv_pack([W], torch.bfloat16), ops.gemv_pack([torch.randn(V, H)], torch.float32)
    dec_b = torch.zeros(V)
    h, c = torch.randn(1, H), torch.randn(1, H)
    one = ops.lm_step(table, torch.tensor([1]), [P], [b], [h], [c], dec_P, dec_b, 1)
    for pause in (0, 0, 0, 0.05, 0, 0.05):
        time.sleep(pause)
        two = ops.lm_step(table, torch.tensor([1]), [P], [b], [h], [c], dec_P, dec_b, 2)
        assert all(torch.equal(x, y) for x, y in zip([one[0], *one[1], *one[2]], [two[0], *two[1], *two[2]]))


@needs_native
@pytest.mark.parametrize("low", [torch.float32, torch.bfloat16])
def test_lm_step_gives_a_row_the_same_bits_alone_or_in_any_batch(low):
    """The products run rows in tiles of three, two and one (AVX-512): each row's logits and states are the same
    bits in batches of 1 to 8 as alone, so a served request's tokens do not depend on who else is generating."""
    torch.manual_seed(2)
    ops, V, sizes = native.load(), 11, [37, 21]
    table = torch.randn(V, 4 * sizes[0])
    W0, W1 = torch.randn(4 * sizes[0], sizes[0]), torch.randn(4 * sizes[1], sizes[0] + sizes[1])
    packed = [ops.gemv_pack([W0], low), ops.gemv_pack(list(W1.split(sizes, 1)), low)]
    biases = [torch.randn(4 * s) for s in sizes]
    dec_P, dec_b = ops.gemv_pack([torch.randn(V, sizes[1])], torch.float32), torch.randn(V)
    tokens = torch.randint(V, (8,))
    hs, cs = [torch.randn(8, s) for s in sizes], [torch.randn(8, s) for s in sizes]

    def step(rows):
        logits, h, c = ops.lm_step(table, tokens[rows], packed, biases, [x[rows] for x in hs], [x[rows] for x in cs],
                                   dec_P, dec_b, 1)
        return [logits, *h, *c]

    alone = [step(slice(i, i + 1)) for i in range(8)]
    for batch in range(2, 9):
        together = step(slice(0, batch))
        for i in range(batch):
            assert all(torch.equal(t[i:i + 1], a) for t, a in zip(together, alone[i])), (batch, i)


@needs_native
def test_a_large_buffer_freed_after_a_step_is_the_next_steps():
    """common.h: the loop's large buffers (here h and c, (T+1, B, H) float32 = 2.1 MB each) go back to a pool when
    freed, and the next step of the same size takes those blocks (no fresh pages to fault in); same values."""
    torch.manual_seed(0)
    cell = rc.LSTMCell(I, 256)
    x = torch.randn(64, 32, I)
    state = rc.LSTMState(torch.zeros(32, 256), torch.zeros(32, 256))
    W, _ = cell.recurrence()
    blocks = lambda seqs: {s.untyped_storage().data_ptr() for s in seqs}  # noqa: E731
    with torch.no_grad():
        seqs = native_lstm.lstm_loop(cell, x, state, W)
        first, want = blocks(seqs), [s.clone() for s in seqs]
        del seqs
        seqs = native_lstm.lstm_loop(cell, x, state, W)
    assert blocks(seqs) <= first and len(blocks(seqs)) == 2
    torch.testing.assert_close(list(seqs), want, atol=0, rtol=0)


@needs_native
def test_the_pool_keeps_no_more_free_bytes_than_were_ever_in_use_at_once():
    """A step at T=64 and then one at T=200 leave blocks of both sizes free; the pool keeps no more free bytes than
    the most it ever handed out at once (the smallest go), and every block handed out comes back."""
    pool = torch.ops.recurrent_native.pool_bytes
    cell = rc.LSTMCell(I, 256)
    W, _ = cell.recurrence()
    _, in_use, _ = pool()
    with torch.no_grad():
        for T in (64, 200):
            state = rc.LSTMState(torch.zeros(32, 256), torch.zeros(32, 256))
            native_lstm.lstm_loop(cell, torch.randn(T, 32, I), state, W)
    free, in_use_after, peak = pool()
    assert in_use_after == in_use  # nothing kept out of the pool
    assert 0 < free <= peak


@needs_native
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_loop_on_a_pool_of_its_own():
    """After a fork the child gets a fresh pool (the parent's lock may have been held by another thread); its
    loop runs and gives the parent's values, and the parent's pool is untouched."""
    torch.manual_seed(0)
    cell = rc.LSTMCell(I, 256)
    x = torch.randn(64, 32, I)
    state = rc.LSTMState(torch.zeros(32, 256), torch.zeros(32, 256))
    W, _ = cell.recurrence()
    with torch.no_grad():
        want = native_lstm.lstm_loop(cell, x, state, W)[0]
    before = torch.ops.recurrent_native.pool_bytes()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one byte, 1 if its pool starts empty and the loop gives the parent's values
        ok = 0
        try:
            torch.set_num_threads(1)
            fresh = torch.ops.recurrent_native.pool_bytes() == [0, 0, 0]
            with torch.no_grad():
                got = native_lstm.lstm_loop(cell, x, state, W)[0]
            ok = int(fresh and torch.equal(got, want))
        finally:
            os.write(write, bytes([ok]))
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    assert answer == b"\x01"
    assert torch.ops.recurrent_native.pool_bytes() == before
