"""recurrent/traced.py: a forward-only cell's step traced, compiled to C and run by the bptt engine.

The reference everywhere is the user's own `forward` differentiated by autograd (the `autograd` backend's plain
loop) in float64: states and the gradients of x, the initial state and every parameter."""
import shutil
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import recurrent as rc
from recurrent import backends, traced
from recurrent.bench.throughput import LayerNormedGRUCell  # a user's layer-normed GRU

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="compiled steps need g++; none found")
F64 = torch.float64
B, T, I, H = 4, 6, 5, 8


class Peephole(rc.Cell):
    """docs/cells.md's peephole LSTM: one nn.Linear on cat([x, h]), peepholes read as rows of one parameter."""

    state_type = rc.LSTMState

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, 4 * hidden_size)
        self.peep = nn.Parameter(torch.randn(3, hidden_size))

    def forward(self, x, state):
        i, f, g, o = self.linear(torch.cat([x, state.h], dim=1)).chunk(4, dim=1)
        i = torch.sigmoid(i + self.peep[0] * state.c)
        f = torch.sigmoid(f + self.peep[1] * state.c)
        c = f * state.c + i * torch.tanh(g)
        return rc.LSTMState(torch.sigmoid(o + self.peep[2] * c) * torch.tanh(c), c)


class TwoLinears(rc.Cell):
    """A GRU written as a user would: its own products of x and of h, h read directly, scalars, 1 - z."""

    state_type = rc.RNNState

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.x2g = nn.Linear(input_size, 3 * hidden_size)
        self.h2g = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.scale = nn.Parameter(torch.rand(hidden_size) + 0.5)
        self.register_buffer("shift", torch.randn(hidden_size))

    def forward(self, x, state):
        xr, xz, xn = self.x2g(x).chunk(3, 1)
        hr, hz, hn = self.h2g(state.h).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn) * self.scale / 2.0 + self.shift
        return rc.RNNState((1 - z) * n + z * state.h)


class Leaky(rc.Cell):
    """README's LeakyCell: lerp with a Python float, relu, where, division."""

    state_type = rc.RNNState

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.U = nn.Linear(input_size, hidden_size)
        self.W = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, state):
        s = torch.relu(self.U(x) + self.W(state.h)) / (1 + state.h * state.h)
        s = torch.where(s > 0.3, s, -s)
        return rc.RNNState(torch.lerp(state.h, s, 0.25))


def reference(layer):
    plain = rc.Recurrent(type(layer.cells[0][0]), I, H, num_layers=layer.num_layers,
                         bidirectional=layer.bidirectional, backend="autograd").to(F64)
    plain.load_state_dict(layer.state_dict())
    return plain


def run(layer, x, lengths=None, h0=None):
    out, final = layer(x, h0, lengths=lengths)
    loss = out.pow(2).sum() + sum(f.sum() for f in final)
    inputs = [x, *([] if h0 is None else list(h0)), *layer.parameters()]
    return [out, *final, *torch.autograd.grad(loss, inputs)]


def check_against_autograd(cell, seed: int, bidirectional: bool = False) -> None:
    """A 2-layer layer of `cell` in float64: auto compiles its step, and outputs, final states and every gradient
    equal autograd of the cell's own forward (the plain loop) to 1e-10."""
    torch.manual_seed(seed)
    layer = rc.Recurrent(cell, I, H, num_layers=2, bidirectional=bidirectional).to(F64)
    x = torch.randn(B, T, I, dtype=F64, requires_grad=True)
    got = run(layer, x)
    assert layer.backend == "bptt" and layer.backend.traced, layer.backend
    for a, b in zip(got, run(reference(layer), x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.qemu  # the generated C built for AVX2 without AVX-512, run under qemu (tests/conftest.py)
@pytest.mark.parametrize("cell", [Peephole, TwoLinears, Leaky])
def test_the_compiled_step_equals_autograd_of_the_cells_own_forward(cell):
    check_against_autograd(cell, seed=0)


def test_bidirectional_with_lengths_and_a_given_state_in_float32():
    torch.manual_seed(1)
    layer = rc.Recurrent(Peephole, I, H, num_layers=2, bidirectional=True)
    x = torch.randn(B, T, I, requires_grad=True)
    h0 = rc.LSTMState(*(torch.randn(2, 2, B, H, requires_grad=True) for _ in range(2)))
    lengths = torch.tensor([6, 2, 5, 1])
    got = run(layer, x, lengths, h0)
    assert layer.backend.traced
    plain = rc.Recurrent(Peephole, I, H, num_layers=2, bidirectional=True, backend="autograd")
    plain.load_state_dict(layer.state_dict())
    for a, b in zip(got, run(plain, x, lengths, h0), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_gradcheck_through_the_layer():
    torch.manual_seed(2)
    layer = rc.Recurrent(Peephole, 3, 4).to(F64)
    x = torch.randn(2, 3, 3, dtype=F64, requires_grad=True)
    peep = layer.cells[0][0].peep
    assert torch.autograd.gradcheck(lambda x, p: layer(x)[0], (x, peep))
    assert layer.backend.traced


def test_every_product_on_cat_x_h_shares_one_gradient_buffer():
    """dgx is dgh when every product takes cat([x, h]): the engine keeps one (T, B, G) buffer, not two."""
    runner = traced.runner(Peephole(I, H), torch.float32)
    gx, gh = torch.randn(B, 4 * H), torch.randn(B, 4 * H)
    state = rc.LSTMState(torch.randn(B, H), torch.randn(B, H))
    new, saved = runner.step(gx, gh, state, *runner.extra_params())
    dgx, dgh, dprev, dextras = runner.step_backward(state, saved, *runner.extra_params())
    assert dgx is dgh and dprev.h is None and dextras[0].shape == (3, H)


class Dropout(rc.Cell):
    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, state):
        return rc.RNNState(F.dropout(torch.tanh(self.linear(torch.cat([x, state.h], 1))), 0.5, True))


class OfC(Peephole):
    def forward(self, x, state):
        return super().forward(x, rc.LSTMState(state.h, state.c @ self.linear.weight[:H, I:]))


class UsesX(rc.Cell):
    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(hidden_size, hidden_size)

    def forward(self, x, state):
        return rc.RNNState(torch.tanh(self.linear(state.h)) + x)


class BatchStatistics(Leaky):
    def forward(self, x, state):
        h = torch.tanh(self.U(x) + self.W(state.h))
        return rc.RNNState(h - h.mean(0))


class OtherWidth(Leaky):
    def forward(self, x, state):
        return rc.RNNState(torch.tanh(self.U(x) + self.W(state.h)) * state.h[:, :1])


@pytest.mark.parametrize("cell, words", [
    (Dropout, "its step draws random numbers (aten.bernoulli"),
    (OfC, "its step uses aten.mm.default"),
    (UsesX, "uses x_t other than through an F.linear"),
    (BatchStatistics, "a mean over the batch inside the step (batch statistics)"),
    (OtherWidth, "aten.slice.Tensor makes a value of shape [3, 1], not in blocks of H=8 columns"),
])
def test_a_cell_outside_what_compiles_runs_the_plain_loop_and_says_why(cell, words):
    torch.manual_seed(3)
    layer = rc.Recurrent(cell, I, H)
    if cell is UsesX:
        layer = rc.Recurrent(cell, H, H)
    x = torch.randn(B, T, layer.input_size)
    out = layer(x)[0]
    assert layer.backend == "autograd" and "its step is not compiled: " in layer.backend.reason
    assert words in layer.backend.reason, layer.backend.reason
    assert out.shape == (B, T, H)


def test_a_wrong_compiled_step_is_refused_by_the_check(monkeypatch):
    """The check compares the compiled step with autograd before it is used: a generator bug (here: sigmoid's
    derivative written wrong) leaves the cell on the plain loop, naming the gradient that differs."""
    monkeypatch.setitem(traced.BINARY, traced.aten.sigmoid_backward.default, "({0} * {1})")
    reason = traced.runner(Peephole(I, H), torch.float32)
    assert isinstance(reason, str) and reason.startswith("the compiled step's d") and "differs from the cell's own " \
        "forward" in reason


def test_a_cell_is_traced_once_per_mode(monkeypatch):
    built = []
    build = traced._build
    monkeypatch.setattr(traced, "_build", lambda cell, dtype: built.append(cell.training) or build(cell, dtype))
    layer = rc.Recurrent(Leaky, I, H)
    x = torch.randn(B, T, I)
    for _ in range(3):
        layer(x)
    layer.eval()
    layer(x)
    assert built == [True, False]


def test_auto_keeps_the_plain_loop_where_steps_are_not_compiled(monkeypatch):
    cell = Peephole(I, H)
    call = backends.Call("cpu", torch.float32, torch.float32, None, B)
    assert backends.choose(cell, "auto", call=call).traced
    assert backends.choose(cell, "auto", call=backends.Call("cpu", torch.float32, torch.float32, torch.bfloat16,
                                                            B)).traced
    f16 = backends.Call("cpu", torch.float32, torch.float32, torch.float16, B)
    assert "not compiled: steps are compiled for the CPU, float32 or float64 (products in bfloat16 under its " \
        "autocast)" in backends.choose(cell, "auto", call=f16).reason
    monkeypatch.setenv("RECURRENT_TRACED", "0")
    assert backends.choose(cell, "auto", call=call).reason.endswith("not compiled: disabled by RECURRENT_TRACED=0")
    monkeypatch.setenv("RECURRENT_TRACED", "1")
    monkeypatch.setenv("RECURRENT_NATIVE", "0")
    assert backends.choose(cell, "auto", call=call).reason.endswith("not compiled: disabled by RECURRENT_NATIVE=0")
    with pytest.raises(ValueError, match="backend='bptt' needs a cell with project_input, step and step_backward"):
        backends.choose(cell, "bptt", call=call)


def test_under_cpu_bf16_autocast_the_products_run_in_bfloat16_and_the_states_in_float32():
    torch.manual_seed(4)
    layer = rc.Recurrent(Peephole, I, H, num_layers=2)
    plain = rc.Recurrent(Peephole, I, H, num_layers=2, backend="autograd")
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I, requires_grad=True)
    with torch.autocast("cpu", torch.bfloat16):
        got, want = run(layer, x), run(plain, x)
    assert layer.backend.traced and got[0].dtype == torch.float32
    reference = run(plain, x)  # float32
    for a, b, c in zip(got, want, reference, strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
        assert (a - c).abs().max() <= 2 * (b - c).abs().max() + 1e-3  # as close to float32 as autocast's own loop


class SkipWhereWidthsMatch(Leaky):
    """Adds x_t to its output where the input is as wide as the state: a deeper layer's cell, not the first's."""

    def forward(self, x, state):
        new = super().forward(x, state)
        return rc.RNNState(new.h + x) if x.shape[1] == self.hidden_size else new


def test_a_layer_runs_compiled_steps_only_if_every_cell_compiles():
    torch.manual_seed(5)
    layer = rc.Recurrent(SkipWhereWidthsMatch, I, H, num_layers=2)
    assert not isinstance(traced.runner(layer.cells[0][0], torch.float32), str)  # the first layer's compiles
    x = torch.randn(B, T, I)
    out = layer(x)[0]
    assert layer.backend == "autograd" and layer.backend.reason.endswith(
        "not compiled: cell 2 of the layer's 2: its forward uses x_t other than through an F.linear with its own "
        "weights")
    plain = rc.Recurrent(SkipWhereWidthsMatch, I, H, num_layers=2, backend="autograd")
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(out, plain(x)[0])


class Activations(rc.Cell):
    """clamp, silu, leaky_relu, softplus, gelu (erf), a boolean mask: each with its backward in the generated C."""

    state_type = rc.RNNState

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.x2g = nn.Linear(input_size, 3 * hidden_size)
        self.h2g = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x, state):
        a, b, c = (self.x2g(x) + self.h2g(state.h)).chunk(3, 1)
        inside = torch.logical_and(a > -0.5, a < 0.5)
        s = F.silu(a) + F.leaky_relu(b, 0.2) + F.softplus(c, beta=2.0) + F.gelu(a - b)
        return rc.RNNState(torch.clamp(s, -2.0, 2.0) * torch.where(inside, 0.5, 1.0) + 0.1 * torch.tanh(state.h))


def test_activations_and_their_backward_equal_autograd():
    check_against_autograd(Activations, seed=6)


class ThreeFields(NamedTuple):
    h: torch.Tensor
    c: torch.Tensor
    m: torch.Tensor


class Slices(rc.Cell):
    """Three state fields; one product sliced by columns then chunked and split; a (2, 2H) parameter read by rows;
    maximum, abs, clamp and exp of a parameter (their backward: masks, masked_fill, sgn)."""

    state_type = ThreeFields

    def __init__(self, input_size, hidden_size):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, 5 * hidden_size)
        self.a = nn.Parameter(torch.randn(hidden_size))
        self.w = nn.Parameter(torch.randn(2, 2 * hidden_size))

    def forward(self, x, state):
        H = self.hidden_size
        z = self.linear(torch.cat([x, state.h], -1))
        u, v = (z[:, :2 * H] * self.w[1] + self.w[0].sigmoid()).chunk(2, -1)
        p, q, r = z[:, 2 * H:].split(H, dim=1)
        m = torch.maximum(state.m, u) - v.abs() * 0.5
        c = state.c * torch.sigmoid(p) + torch.tanh(q) * self.a.exp()
        return ThreeFields(torch.tanh(c) * torch.sigmoid(r) + m.clamp(-1, 1), c, m)


def test_slices_parameter_rows_and_three_state_fields():
    check_against_autograd(Slices, seed=7, bidirectional=True)


def test_a_cell_whose_weights_change_shape_is_traced_again_and_a_wrong_input_is_refused():
    torch.manual_seed(8)
    layer = rc.Recurrent(Leaky, I, H)
    x = torch.randn(B, T, I)
    layer(x)
    cell = layer.cells[0][0]
    runner = traced.runner(cell, torch.float32)
    cell.U = nn.Linear(I + 1, H)  # a wider input: the old trace no longer fits
    assert traced.runner(cell, torch.float32) is not runner
    with pytest.raises(ValueError, match=r"a compiled step takes \(B, 8\) torch.float32 contiguous CPU tensors, got "
                                         r"\(4, 9\) torch.float32"):
        runner.traced.forward([torch.randn(B, H), torch.randn(B, H), torch.randn(B, H + 1)])


def test_without_a_compiler_the_cell_runs_the_plain_loop_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("RECURRENT_BUILD_DIR", str(tmp_path / "cache"))  # nothing cached: g++ must run
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    layer = rc.Recurrent(Leaky, I, H)
    out = layer(torch.randn(B, T, I))[0]
    assert layer.backend == "autograd" and "not compiled: no C++ compiler (" in layer.backend.reason, layer.backend
    assert out.shape == (B, T, H)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_a_first_call_without_grad_compiles_the_step_all_the_same(mode):
    """An evaluation before training (no_grad, inference_mode) traces and checks with grad on: it used to leave
    the cell on the plain loop for good ("element 0 of tensors does not require grad")."""
    torch.manual_seed(9)
    layer = rc.Recurrent(Peephole, I, H)
    plain = rc.Recurrent(Peephole, I, H, backend="autograd")
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I)
    with mode():
        out = layer(x)[0]
    assert layer.backend.traced, layer.backend
    torch.testing.assert_close(out, plain(x)[0].detach())
    layer(x)[0].sum().backward()
    assert layer.backend.traced and all(p.grad is not None for p in layer.parameters())


def test_a_users_layer_norm_compiles_means_over_a_row_and_their_backward():
    check_against_autograd(LayerNormedGRUCell, seed=10, bidirectional=True)


class Transcendentals(Activations):
    """log, log1p, erf, exp over a wide range of inputs: in float32 the generated loop runs pointwise.h's own
    branch-free log_, log1p_ and erf_ (the float64 check runs libm's), so they are compared in float32 here."""

    def forward(self, x, state):
        a, b, c = (4 * (self.x2g(x) + self.h2g(state.h))).chunk(3, 1)  # pre-activations of several units
        s = torch.log(1e-3 + torch.sigmoid(a)) + torch.log1p(torch.exp(b)) - F.softplus(b) + torch.erf(c)
        return rc.RNNState(torch.tanh(s + F.gelu(c) * 0.1 + state.h))


@pytest.mark.parametrize("cell", [Transcendentals, Activations])
def test_the_float32_transcendentals_match_torch(cell):
    torch.manual_seed(11)
    layer = rc.Recurrent(cell, I, H, num_layers=2)
    x = torch.randn(B, T, I, requires_grad=True)
    got = run(layer, x)
    assert layer.backend.traced, layer.backend
    plain = rc.Recurrent(cell, I, H, num_layers=2, backend="autograd")
    plain.load_state_dict(layer.state_dict())
    exact = reference(layer)  # float64, the plain loop
    x64 = x.detach().double().requires_grad_()
    for ours, torch32, truth in zip(got, run(plain, x), run(exact, x64), strict=True):
        # as close to float64 as torch's own float32 (libm and Sleef), within a few float32 roundings
        assert (ours.double() - truth).abs().max() <= 4 * (torch32.double() - truth).abs().max() + 1e-6
