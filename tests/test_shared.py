"""Shared-weight products (recurrent/shared.py): a forward-only cell's loop with its nn.Linear products packed and
their weight gradients summed after the loop gives the plain loop's values and gradients: in float64 with the
take-over forced (plain products), and in float32 through oneDNN; from a carried state, on a partial loss, twice.

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import recurrent as rc
from recurrent import backends, shared
from recurrent.backends import Call
from recurrent.engine import _loop

B, T, I, H = 4, 6, 3, 5
F64 = torch.float64


class Peephole(rc.Cell):
    """docs/cells.md's peephole LSTM: one nn.Linear on [x, h], peepholes used pointwise."""

    state_type = rc.LSTMState

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        self.peep = nn.Parameter(torch.empty(3, hidden_size).uniform_(-0.5, 0.5))

    def forward(self, x, state):  # x (B, I); h, c (B, H)
        i, f, g, o = self.linear(torch.cat([x, state.h], dim=1)).chunk(4, dim=1)
        i, f = torch.sigmoid(i + self.peep[0] * state.c), torch.sigmoid(f + self.peep[1] * state.c)
        c = f * state.c + i * torch.tanh(g)
        return rc.LSTMState(torch.sigmoid(o + self.peep[2] * c) * torch.tanh(c), c)


class TwoLinears(rc.Cell):
    """Two nn.Linear, one without bias, and a weight also used outside F.linear."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.u = nn.Linear(input_size, hidden_size)
        self.w = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, state):
        return rc.RNNState(torch.tanh(self.u(x) + self.w(state.h) + 0.1 * self.w.weight.sum(0)))


def both(cell, x, state, loss):
    """Each field at every step and the gradients (x, state, parameters), on shared.run and on the plain loop."""
    results = []
    for run in (shared.run, _loop):
        seqs = run(cell, x, state)
        inputs = [x, *(s for s in state if s.requires_grad), *cell.parameters()]
        results.append((*seqs, *torch.autograd.grad(loss(seqs), inputs)))
    return results


class StateFirst(rc.Cell):
    """cat([h, x], [x, h, h]) and a product of x_t reused: only the cat that starts with x_t is split."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.a = nn.Linear(hidden_size + input_size, hidden_size)
        self.b = nn.Linear(input_size + 2 * hidden_size, hidden_size)

    def forward(self, x, state):
        h = state.h
        return rc.RNNState(torch.tanh(self.a(torch.cat([h, x], 1)) + self.b(torch.cat([x, h, h], dim=-1))))


# per cell: the products taken over at each step, (B, K), after the input projection is hoisted out of the loop
PER_STEP = {"Peephole": [(B, H)],  # cat([x, h]): x's part hoisted, h's taken over
            "TwoLinears": [(B, H)],  # u(x) hoisted whole, w(h) taken over
            "StateFirst": [(B, H + I), (B, 2 * H)]}  # cat([h, x]) whole; cat([x, h, h]): [h, h]'s part


@pytest.mark.parametrize("rows", [256, 5])  # 5: weight gradients summed in several blocks of rows (B = 4)
@pytest.mark.parametrize("cell_class", [Peephole, TwoLinears, StateFirst])
def test_float64_equals_the_plain_loop(monkeypatch, cell_class, rows):
    monkeypatch.setattr(shared, "takes", lambda W: True)  # take over float64 products too (plain matmuls)
    monkeypatch.setattr(shared._Products, "ROWS", rows)
    monkeypatch.setattr(shared._Hoisted, "ROWS", rows)
    calls = []
    apply = shared._Products.apply
    monkeypatch.setattr(shared._Products, "apply", lambda self, a: calls.append(a.shape) or apply(self, a))
    cell = cell_class(I, H).double()
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    state = cell.state_type(*(torch.randn(B, H, dtype=F64, requires_grad=True) for _ in cell.state_type._fields))
    w = torch.randn(T, B, H, dtype=F64)
    got, want = both(cell, x, state, lambda seqs: (seqs[0] * w).sum() + seqs[-1][-1].pow(2).sum())
    assert calls == PER_STEP[cell_class.__name__] * T
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    got, want = both(cell, x, state, lambda seqs: seqs[0][:2].sum())  # a loss that reaches only steps 0 and 1
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch was built without oneDNN")
def test_float32_through_onednn_equals_the_plain_loop_and_backward_twice(monkeypatch):
    calls = []
    apply = shared._Products.apply
    monkeypatch.setattr(shared._Products, "apply", lambda self, a: calls.append(a.shape) or apply(self, a))
    cell = Peephole(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    state = rc.LSTMState(torch.zeros(B, H), torch.zeros(B, H))
    seqs = shared.run(cell, x, state)
    assert calls == [(B, H)] * T  # every step's product with h was taken over, x's hoisted
    loss = seqs[0].pow(2).sum()
    first = torch.autograd.grad(loss, [x, *cell.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [x, *cell.parameters()])
    want = torch.autograd.grad(_loop(cell, x, state)[0].pow(2).sum(), [x, *cell.parameters()])
    for a, b, c in zip(first, second, want, strict=True):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b, c, atol=1e-5, rtol=1e-4)


def sized(batch: int, dtype=torch.float32, autocast=None) -> Call:
    return Call("cpu", dtype, dtype, autocast, batch)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch was built without oneDNN")
def test_auto_shares_products_for_large_forward_only_cells_on_cpu_float32_only(monkeypatch):
    monkeypatch.setenv("RECURRENT_TRACED", "0")  # where a cell's step is not compiled (recurrent/traced.py)
    cell = Peephole(I, 64)
    large, small = backends.SHARED_MIN // 64, backends.SHARED_MIN // 64 - 1
    plan = backends.choose(cell, "auto", call=sized(large))
    assert plan == "autograd" and plan.shared and plan.reason == (
        f"Peephole has no step_backward, and its step is not compiled: disabled by RECURRENT_TRACED=0; at B*H = {large * 64} >= {backends.SHARED_MIN} its nn.Linear products are "
        "packed once per sequence, their weight gradients one product after the loop, the input's part once for "
        "the whole sequence (recurrent/shared.py)")
    plan = backends.choose(cell, "auto", call=sized(large, autocast=torch.bfloat16))
    assert plan.shared and "the input's part of its nn.Linear products runs once for the whole sequence" in plan.reason
    for call in (sized(small), sized(large, F64), sized(large, autocast=torch.float16),
                 Call("cuda", torch.float32, torch.float32, None, large)):
        assert not backends.choose(cell, "auto", call=call).shared, call
    assert not backends.choose(cell, "autograd", call=sized(large)).shared  # forced autograd: the plain reference

    class NoLinear(rc.Cell):
        def forward(self, x, state):
            return rc.RNNState(torch.tanh(x.sum(-1, keepdim=True) + state.h))

    assert not backends.choose(NoLinear(I, 64), "auto", call=sized(large)).shared  # nothing to share


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch was built without oneDNN")
def test_a_layer_on_shared_products_equals_the_plain_loop_on_a_padded_bidirectional_batch(monkeypatch):
    monkeypatch.setattr(backends, "SHARED_MIN", 1)
    monkeypatch.setenv("RECURRENT_TRACED", "0")
    layer = rc.Recurrent(Peephole, I, H, num_layers=2, bidirectional=True)
    reference = rc.Recurrent(Peephole, I, H, num_layers=2, bidirectional=True, backend="autograd")
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 1])
    results = []
    for model in (layer, reference):
        out, final = model(x, lengths=lengths)
        results.append((out, *final, *torch.autograd.grad(out.pow(2).sum() + final.c.sum(),
                                                          [x, *model.parameters()])))
    assert layer.backend.shared and not reference.backend.shared
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_under_bf16_autocast_the_input_part_is_hoisted_and_the_loop_matches_the_plain_one(monkeypatch):
    """CPU bf16 autocast: nothing is packed (oneDNN packs float32 weights), x's part of cat([x, h]) runs once for
    the sequence in bfloat16 and h's part per step; values and gradients as the plain loop's to bfloat16 rounding."""
    linears = []
    real = shared.F.linear
    monkeypatch.setattr(shared.F, "linear", lambda a, W, b=None: linears.append(tuple(a.shape)) or real(a, W, b))
    torch.manual_seed(5)
    cell = Peephole(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    state = rc.LSTMState(torch.randn(B, H), torch.randn(B, H))
    results = []
    for run in (shared.run, _loop):
        linears.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            seqs = run(cell, x, state)
        if run is shared.run:  # the cell's own calls (B, I + H), each taken over: x's part once, h's per step
            assert sorted(linears) == sorted([(B, I + H)] * T + [(T, B, I)] + [(B, H)] * T)
        results.append((seqs[0].float(), *torch.autograd.grad(seqs[0].float().pow(2).sum(), [x, *cell.parameters()])))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
