"""Layers against trusted references: torch.nn.RNN/LSTM/GRU with copied weights, each sequence of a
padded batch run alone, and the backends against each other.

Key: B batch, T time, I input, H hidden, L layers, D directions.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from collections import Counter

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import recurrent as rc
from recurrent import hardware
from recurrent.state import from_torch_state, to_torch_state

B, T, I, H = 4, 6, 3, 5
LENGTHS = torch.tensor([6, 2, 5, 1])  # unsorted on purpose, with a length-1 sequence and a full one
BACKENDS = ["fused", "bptt", "autograd"]

MODES = {  # name -> (torch.nn class, our class, extra kwargs for both)
    "rnn_tanh": (nn.RNN, rc.RNN, dict(nonlinearity="tanh")),
    "rnn_relu": (nn.RNN, rc.RNN, dict(nonlinearity="relu")),
    "lstm": (nn.LSTM, rc.LSTM, {}),
    "gru": (nn.GRU, rc.GRU, {}),
}


def make_layer(mode: str, num_layers=2, bidirectional=True, dtype=torch.float64, **kwargs) -> rc.Recurrent:
    _, ours, extra = MODES[mode]
    return ours(I, H, num_layers=num_layers, bidirectional=bidirectional, **extra, **kwargs).to(dtype)


def random_state(layer: rc.Recurrent, batch_size: int, dtype=torch.float64):
    """A random (L, D, B, H) initial state, every field a leaf that requires grad."""
    shape = (layer.num_layers, layer.num_directions, batch_size, layer.hidden_size)
    return layer.state_type(*(torch.randn(shape, dtype=dtype, requires_grad=True) for _ in layer.state_type._fields))


def padded_input(dtype=torch.float64):
    """x (B, T, I) whose padding (past each length) holds garbage: it must never matter."""
    return torch.randn(B, T, I, dtype=dtype, requires_grad=True)


def weighted_loss(out, final, weights):
    """A scalar that reaches every output and every final state field, each with its own random weight."""
    w_out, *w_final = weights
    return (out * w_out).sum() + sum((f * w).sum() for f, w in zip(final, w_final))


def loss_weights(out, final):
    # torch.randn(shape), not randn_like: randn_like follows the strides, and out may be a transposed view
    return [torch.randn(t.shape, dtype=t.dtype) for t in (out, *final)]


def run_torch(module: nn.RNNBase, x, state, lengths):
    """torch.nn's forward, packed when there are lengths. Returns out (B, T, D*H) and its (L*D, B, H) fields."""
    hx = tuple(s.reshape(-1, *s.shape[2:]) for s in state)  # (L, D, B, H) -> torch's (L*D, B, H): row l*D + d
    hx = hx if isinstance(module, nn.LSTM) else hx[0]
    if lengths is None:
        out, hn = module(x, hx)
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, hn = module(packed, hx)
        out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
    return out, (hn if isinstance(hn, tuple) else (hn,))


def our_parameter(layer: rc.Recurrent, torch_name: str) -> torch.Tensor:
    """torch.nn's name ('weight_hh_l1_reverse') -> the same parameter of our layer (cells[1][1].weight_hh)."""
    name, l, reverse = re.fullmatch(r"(\w+_[ih]h)_l(\d+)(_reverse)?", torch_name).groups()
    return getattr(layer.cells[int(l)][1 if reverse else 0], name)


# --- from_torch: the same outputs, final states and gradients as torch.nn -----------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=["L1", "L2", "L3"])
@pytest.mark.parametrize("mode", MODES)
def test_from_torch_matches_torch(mode, num_layers, bidirectional, with_lengths, backend):
    torch_class, ours_class, extra = MODES[mode]
    module = torch_class(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True, **extra)
    layer = ours_class.from_torch(module, backend=backend)
    assert layer.backend == backend
    lengths = LENGTHS if with_lengths else None

    x = padded_input(torch.float32)
    state = random_state(layer, B, torch.float32)
    out, final = layer(x, state, lengths)
    x_t = x.detach().clone().requires_grad_()
    state_t = [s.detach().clone().requires_grad_() for s in state]
    out_t, final_t = run_torch(module, x_t, state_t, lengths)

    tol = dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out, out_t, **tol)
    for f, f_t in zip(final, final_t):
        assert f.shape == (num_layers, 2 if bidirectional else 1, B, H)
        torch.testing.assert_close(f.reshape(-1, B, H), f_t, **tol)  # torch's row l*D + d

    weights = loss_weights(out, final)
    weighted_loss(out, final, weights).backward()
    weighted_loss(out_t, [f.view_as(w) for f, w in zip(final_t, weights[1:])], weights).backward()
    torch.testing.assert_close(x.grad, x_t.grad, **tol)
    for s, s_t in zip(state, state_t):
        torch.testing.assert_close(s.grad, s_t.grad, **tol)
    for name, p_t in module.named_parameters():
        torch.testing.assert_close(our_parameter(layer, name).grad, p_t.grad, **tol, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_to_torch_round_trip(mode, backend):
    layer = make_layer(mode, num_layers=2, bidirectional=True, bias=False, dtype=torch.float32, backend=backend)
    module = layer.to_torch()
    assert isinstance(module, MODES[mode][0]) and module.batch_first and not module.bias
    x = torch.randn(B, T, I)
    out, final = layer(x)
    out_t, final_t = module(x)
    torch.testing.assert_close(out, out_t, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(to_torch_state(final), final_t, atol=1e-5, rtol=1e-4)

    again = type(layer).from_torch(module)
    for (name, p), (name2, p2) in zip(layer.state_dict().items(), again.state_dict().items()):
        assert name == name2 and torch.equal(p, p2)
    with torch.no_grad():  # a copy, not shared storage
        module.weight_hh_l0.add_(1.0)
    assert torch.equal(again.cells[0][0].weight_hh, layer.cells[0][0].weight_hh)


def test_from_torch_of_a_time_major_module_is_batch_first():
    module = nn.GRU(I, H, num_layers=2, bidirectional=True).double()  # batch_first=False
    layer = rc.GRU.from_torch(module, backend="bptt")
    assert next(layer.parameters()).dtype == torch.float64
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, final = layer(x)
    out_t, h_t = module(x.transpose(0, 1))
    torch.testing.assert_close(out, out_t.transpose(0, 1))
    torch.testing.assert_close(final.h, from_torch_state(h_t, rc.RNNState, 2).h)


# --- a padded batch is each sequence run alone --------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_padded_batch_equals_each_sequence_alone(mode, backend):
    layer = make_layer(mode, num_layers=2, bidirectional=True, backend=backend)
    x, state = padded_input(), random_state(layer, B)
    params = list(layer.parameters())

    out, final = layer(x, state, LENGTHS)
    weights = loss_weights(out, final)
    grads = torch.autograd.grad(weighted_loss(out, final, weights), [x, *state, *params])

    total = 0.0
    for b, n in enumerate(LENGTHS.tolist()):
        state_b = type(state)(*(s[:, :, b : b + 1] for s in state))
        out_b, final_b = layer(x[b : b + 1, :n], state_b)  # unpadded, no lengths
        torch.testing.assert_close(out[b, :n], out_b[0])
        assert not out[b, n:].any(), "outputs past a sequence's length must be zero"
        for f, f_b in zip(final, final_b):
            torch.testing.assert_close(f[:, :, b], f_b[:, :, 0])
        w_b = [weights[0][b : b + 1, :n], *(w[:, :, b : b + 1] for w in weights[1:])]
        total = total + weighted_loss(out_b, final_b, w_b)
    grads_alone = torch.autograd.grad(total, [x, *state, *params])

    assert not grads[0][LENGTHS.unsqueeze(1) <= torch.arange(T)].any(), "padding must get no gradient"
    for g, g_alone in zip(grads, grads_alone):
        torch.testing.assert_close(g, g_alone)


@pytest.mark.parametrize("backend", ["fused", "bptt", "autograd"])
def test_padding_values_never_matter_even_nan(backend):
    layer = make_layer("lstm", num_layers=2, bidirectional=True, backend=backend)
    x = torch.randn(B, T, I, dtype=torch.float64)
    padding = LENGTHS.unsqueeze(1) <= torch.arange(T)  # (B, T): True past each length
    results = []
    for pad in (0.0, float("nan")):
        layer.zero_grad()
        out, final = layer(x.masked_fill(padding.unsqueeze(-1), pad), lengths=LENGTHS)
        (out.sum() + final.h.sum()).backward()
        results.append((out, final.h, *(p.grad for p in layer.parameters())))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_final_state_is_read_from_the_outputs(backend):
    """The state picture of Recurrent's docstring: h[-1, 0] is out at len-1 (forward half), h[-1, 1] out at 0."""
    layer = make_layer("lstm", num_layers=2, bidirectional=True, backend=backend)
    out, final = layer(padded_input(), lengths=LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(final.h[-1, 0, b], out[b, n - 1, :H])
        torch.testing.assert_close(final.h[-1, 1, b], out[b, 0, H:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_carried_state_continues_the_sequence(backend):
    """Two chunks with the state carried between them are one long run (truncated BPTT relies on it)."""
    layer = make_layer("lstm", num_layers=2, bidirectional=False, backend=backend)
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, final = layer(x)
    out1, state = layer(x[:, :2])
    out2, final2 = layer(x[:, 2:], rc.detach(state))
    torch.testing.assert_close(torch.cat([out1, out2], dim=1), out)
    for a, b in zip(final2, final):
        torch.testing.assert_close(a, b)


# --- the backends agree -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_backends_agree_on_outputs_and_gradients(mode):
    """fused, bptt and autograd: same outputs, states and gradients, on a padded batch from a learned state."""
    layer = make_layer(mode, num_layers=2, bidirectional=True, learnable_init=True)
    with torch.no_grad():
        for p in layer.initial.values():
            p.normal_()
    x = padded_input()
    results = {}
    for backend in BACKENDS:
        layer.backend = backend
        out, final = layer(x, lengths=LENGTHS)
        torch.manual_seed(1)  # the same loss weights for every backend
        loss = weighted_loss(out, final, loss_weights(out, final))
        results[backend] = (out, *final, *torch.autograd.grad(loss, [x, *layer.parameters()]))
    for backend in ("bptt", "autograd"):
        for got, want in zip(results[backend], results["fused"]):
            torch.testing.assert_close(got, want)


# --- which backend runs, and why ----------------------------------------------------------------------------


def test_backend_reports_name_and_reason(cells_doc):
    lstm = rc.LSTM(I, H)
    assert lstm.backend == "fused" and "fused kernel" in lstm.backend.reason
    assert str(lstm.backend).startswith("fused (")

    generic = rc.Recurrent(rc.ElmanCell, I, H)  # a cell with step_backward and no C++ loop
    assert generic.backend == "bptt" and generic.backend.reason == "ElmanCell supplies step_backward"

    custom = rc.Recurrent(cells_doc["PeepholeLSTMCell"], I, H)
    assert custom.backend == "autograd" and custom.backend.reason == "PeepholeLSTMCell has no step_backward"

    lstm.backend = "bptt"
    assert lstm.backend == "bptt" and lstm.backend.reason.startswith("forced by backend='bptt'")
    assert "runs in C++" in lstm.backend.reason  # a plain LSTMCell: the native loop (recurrent.native)
    lstm.backend = "autograd"
    assert lstm.backend == "autograd" and "backend='autograd'" in lstm.backend.reason
    assert "backend='autograd'" in repr(lstm)


def count_cell_calls(layer: rc.Recurrent, monkeypatch) -> Counter:
    """Run forward and backward once; count calls of each cell's step and step_backward (the cell protocol)."""
    calls = Counter()
    for cell in (c for layer_cells in layer.cells for c in layer_cells):
        for name in ("step", "step_backward"):
            def spy(*args, _method=getattr(cell, name), _name=name):
                calls[_name] += 1
                return _method(*args)

            monkeypatch.setattr(cell, name, spy)
    out, final = layer(torch.randn(B, T, I, dtype=torch.float64))
    out.sum().backward()
    return calls


def test_setting_backend_switches_the_path_that_runs(monkeypatch):
    layer = make_layer("lstm", num_layers=2, bidirectional=True)
    assert count_cell_calls(layer, monkeypatch) == Counter()  # fused: torch's kernel, no cell code

    layer.backend = "bptt"
    n_cells = 2 * 2
    assert count_cell_calls(layer, monkeypatch) == Counter(step=n_cells * T, step_backward=n_cells * T)

    layer.backend = "autograd"
    assert count_cell_calls(layer, monkeypatch) == Counter(step=n_cells * T)  # autograd differentiates step


# --- learnable initial state --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_learnable_init_is_used_and_learned(mode, backend):
    layer = make_layer(mode, num_layers=2, bidirectional=True, learnable_init=True, backend=backend)
    assert sorted(layer.initial.keys()) == sorted(layer.state_type._fields)
    x = padded_input()
    out0, _ = layer(x, lengths=LENGTHS)
    torch.testing.assert_close(out0, layer(x, make_zero_state(layer), LENGTHS)[0])  # starts at zeros

    with torch.no_grad():
        for p in layer.initial.values():
            p.normal_()
    out, final = layer(x, lengths=LENGTHS)
    assert not torch.allclose(out, out0), "changing the initial state must change the output"

    # the reference: the same initial vectors given explicitly, repeated over the batch
    explicit = layer.state_type(*(layer.initial[f].detach().repeat(1, 1, B, 1).requires_grad_()
                                  for f in layer.state_type._fields))
    out_ref, final_ref = layer(x, explicit, LENGTHS)
    torch.testing.assert_close(out, out_ref)
    weights = loss_weights(out, final)
    weighted_loss(out, final, weights).backward()
    weighted_loss(out_ref, final_ref, weights).backward()
    for f, s in zip(layer.state_type._fields, explicit):
        grad = layer.initial[f].grad
        assert grad is not None and grad.abs().sum() > 0
        torch.testing.assert_close(grad, s.grad.sum(2, keepdim=True))  # (L, D, 1, H): summed over the batch


def make_zero_state(layer: rc.Recurrent):
    shape = (layer.num_layers, layer.num_directions, B, layer.hidden_size)
    return layer.state_type(*(torch.zeros(shape, dtype=torch.float64) for _ in layer.state_type._fields))


# --- dropout between layers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_only_in_training_and_only_when_asked(backend):
    layer = make_layer("lstm", num_layers=2, bidirectional=True, dropout=0.5, backend=backend)
    plain = make_layer("lstm", num_layers=2, bidirectional=True, dropout=0.0, backend=backend)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I, dtype=torch.float64)

    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0]), "train mode with dropout: a new mask each call"

    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])  # eval: no dropout at all
    assert torch.equal(layer(x)[0], layer(x)[0])

    plain.train()
    assert torch.equal(plain(x)[0], plain(x)[0]), "dropout=0 is deterministic in train mode"


@pytest.mark.parametrize("backend", ["bptt", "autograd"])
def test_dropout_is_not_applied_after_the_last_layer(backend):
    layer = make_layer("gru", num_layers=1, bidirectional=True, dropout=0.5, backend=backend).train()
    x = torch.randn(B, T, I, dtype=torch.float64)
    assert torch.equal(layer(x)[0], layer(x)[0])


# --- torch's state layout -----------------------------------------------------------------------------------


def test_detach_keeps_values_and_cuts_the_graph():
    state = rc.LSTMState(torch.randn(2, 1, B, H, requires_grad=True) * 2, torch.randn(2, 1, B, H))
    cut = rc.detach(state)
    assert type(cut) is rc.LSTMState and not cut.h.requires_grad
    assert torch.equal(cut.h, state.h) and torch.equal(cut.c, state.c)


def test_torch_state_layout_round_trip():
    h = torch.randn(3, 2, B, H)  # (L, D, B, H)
    c = torch.randn(3, 2, B, H)
    flat_h, flat_c = to_torch_state(rc.LSTMState(h, c))
    assert flat_h.shape == (6, B, H)
    torch.testing.assert_close(flat_h[2 * 1 + 1], h[1, 1])  # torch's row l*D + d
    back = from_torch_state((flat_h, flat_c), rc.LSTMState, 2)
    assert torch.equal(back.h, h) and torch.equal(back.c, c)
    assert torch.equal(from_torch_state(to_torch_state(rc.RNNState(h)), rc.RNNState, 2).h, h)


def test_detach_cuts_the_graph_of_nested_states():
    lstm, gru = rc.LSTM(3, 4), rc.GRU(3, 4)
    x = torch.randn(2, 5, 3)
    states = (lstm(x)[1], gru(x)[1])  # a model's tuple of layer states
    cut = rc.detach(states)
    assert type(cut) is tuple and type(cut[0]) is rc.LSTMState and type(cut[1]) is rc.RNNState
    for before, after in zip([*states[0], *states[1]], [*cut[0], *cut[1]]):
        assert before.grad_fn is not None and after.grad_fn is None and torch.equal(before, after)
    assert rc.detach(None) is None


def fake_cpu(monkeypatch, **changes):
    """Make the capability probe describe another CPU (e.g. onednn_bf16=True on one without AVX-512)."""
    real = hardware.cpu()
    monkeypatch.setattr(hardware, "cpu", lambda: dataclasses.replace(real, **changes))


@pytest.mark.parametrize("onednn_bf16", [True, False], ids=["onednn-bf16", "no-onednn-bf16"])
@pytest.mark.parametrize("native_builds", [True, False], ids=["native", "no-native"])
def test_auto_backend_under_cpu_bf16_autocast_on_each_kind_of_cpu(monkeypatch, onednn_bf16, native_builds):
    """auto's choice per call, for CPUs with and without oneDNN's bf16 kernels, with and without the C++ loop:
    no choice may crash (oneDNN's bf16 LSTM without AVX-512) or silently run float32 (torch's fused GRU, RNN)."""
    from recurrent import native

    fake_cpu(monkeypatch, onednn_bf16=onednn_bf16)
    if not native_builds:
        monkeypatch.setattr(native, "load", lambda: None)
    elif native.load() is None:
        pytest.skip(f"native kernels unavailable: {native.status()}")
    lstm, gru, rnn = rc.LSTM(6, 8), rc.GRU(6, 8), rc.RNN(6, 8)
    forced = rc.GRU(6, 8, backend="fused")
    x = torch.randn(3, 5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = "bptt" if native_builds or not onednn_bf16 else "fused"
        assert lstm._backend_for(x) == expected
        assert gru._backend_for(x) == "bptt" and rnn._backend_for(x) == "bptt"  # bf16 products in the engine
        assert forced._backend_for(x) == "fused"  # forced: stays, and casts to bf16 itself
    assert lstm._backend_for(x) == "fused" and gru._backend_for(x) == "fused"  # no autocast: torch's kernels


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_forced_fused_under_cpu_bf16_autocast_really_runs_bf16(mode):
    """A layer forced onto fused runs its kernel in bfloat16 on every CPU (torch's own loop where oneDNN's bf16
    LSTM does not run), close to float32; before, a fused GRU silently ran float32 and an LSTM crashed without
    AVX-512."""
    torch.manual_seed(0)
    _, ours, kw = MODES[mode]
    layer = ours(I, H, num_layers=2, backend="fused", **kw)
    x = torch.randn(B, T, I)
    ref, ref_state = layer(x, lengths=LENGTHS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = layer(x, lengths=LENGTHS)
    assert out.dtype == state.h.dtype == torch.bfloat16 and layer.backend == "fused"
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(state.h.float(), ref_state.h, atol=3e-2, rtol=3e-2)


def test_auto_lstm_under_cpu_bf16_autocast_runs_the_native_bptt_loop():
    """The C++ loop under autocast gives exactly the forced bptt layer's float32 output, and layer.backend says
    what ran in the last call: bptt under autocast, fused without."""
    from recurrent import native

    if native.load() is None:
        pytest.skip(f"native kernels unavailable: {native.status()}")
    torch.manual_seed(0)
    auto = rc.LSTM(6, 8, num_layers=2)
    bptt = copy.deepcopy(auto)
    bptt.backend = "bptt"
    x = torch.randn(3, 5, 6)
    assert auto.backend == "fused"  # before any call: the plan
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = auto(x)[0], bptt(x)[0]
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert auto.backend == "bptt" and "C++ loop" in auto.backend.reason
    auto(x)
    assert auto.backend == "fused"
