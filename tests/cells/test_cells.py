"""Cells against trusted references: one step against torch.nn's cells (copied weights), and the
hand-derived backward steps (the `bptt` backend) against numerical gradients (gradcheck, float64).

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

import recurrent as rc
from recurrent.engine import run_cell

from conftest import CELLS

B, T, I, H = 3, 5, 3, 4

TORCH_CELLS = {  # our cell -> (torch.nn cell, its extra kwargs)
    "elman_tanh": (nn.RNNCell, dict(nonlinearity="tanh")),
    "elman_relu": (nn.RNNCell, dict(nonlinearity="relu")),
    "lstm": (nn.LSTMCell, {}),
    "gru": (nn.GRUCell, {}),
}


def random_state(state_type: type, *shape: int):
    return state_type(*(torch.randn(*shape, dtype=torch.float64) for _ in state_type._fields))


def torch_step(torch_cell: nn.Module, x, state):
    """One torch.nn step, returned as our named state."""
    if isinstance(torch_cell, nn.LSTMCell):
        return rc.LSTMState(*torch_cell(x, tuple(state)))
    return rc.RNNState(torch_cell(x, state.h))


# --- one step against torch.nn ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", TORCH_CELLS)
def test_step_matches_torch_cell(make_cell, name, bias):
    cell = make_cell(name, I, H, bias=bias)
    torch_class, kwargs = TORCH_CELLS[name]
    torch_cell = torch_class(I, H, bias=bias, **kwargs).double()
    torch_cell.load_state_dict(cell.state_dict())  # same names: weight_ih, weight_hh, bias_ih, bias_hh

    xs = torch.randn(2, B, I, dtype=torch.float64)
    for start in (cell.init_state(B, xs), random_state(cell.state_type, B, H)):  # zero, then carried
        ours, theirs = start, start
        for x in xs:  # two steps, so the second starts from a state the cell made itself
            ours, theirs = cell(x, ours), torch_step(torch_cell, x, theirs)
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a, b)

    # and the gradients of one step, to the weights
    loss_w = torch.randn(B, H, dtype=torch.float64)
    (cell(xs[0], start).h * loss_w).sum().backward()
    (torch_step(torch_cell, xs[0], start).h * loss_w).sum().backward()
    for n, p in cell.named_parameters():
        torch.testing.assert_close(p.grad, getattr(torch_cell, n).grad, msg=n)


@pytest.mark.parametrize("name", CELLS)
def test_init_state_is_zeros_of_the_right_shape(make_cell, name):
    cell = make_cell(name, I, H)
    like = torch.randn(1, dtype=torch.float64)
    state = cell.init_state(B, like)
    assert type(state) is cell.state_type and state._fields[0] == "h"
    for field in state:
        assert field.shape == (B, H) and field.dtype == torch.float64
        assert not field.any()


def test_indrnn_step_follows_its_equation(make_cell):
    """The IndRNN example gets forward() for free from project_input + step: check it by its equation."""
    cell = make_cell("indrnn", I, H)
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    expected = torch.relu(x @ cell.weight_ih.t() + cell.bias + cell.u * h)
    torch.testing.assert_close(cell(x, rc.RNNState(h)).h, expected)


# --- the hand-derived backward steps: gradcheck in float64 --------------------------------------------------


class Unroll(nn.Module):
    """unroll() as a module, so that functional_call can feed the cell's parameters in as inputs."""

    def __init__(self, cell: rc.Cell, lengths, backend: str):
        super().__init__()
        self.cell, self.lengths, self.backend = cell, lengths, backend

    def forward(self, x, state):
        out, final = rc.unroll(self.cell, x, state, self.lengths, backend=self.backend)
        return (out, *final)


def gradcheck_unroll(cell: rc.Cell, lengths=None, backend: str = "bptt") -> bool:
    """gradcheck of every output (all steps and the final state) w.r.t. x, the initial state and every parameter."""
    module = Unroll(cell, lengths, backend)
    names = [f"cell.{n}" for n, _ in cell.named_parameters()]
    n_fields = len(cell.state_type._fields)

    def f(x, *tensors):
        state = cell.state_type(*tensors[:n_fields])
        return functional_call(module, dict(zip(names, tensors[n_fields:])), (x, state))

    x = torch.randn(B, T, cell.input_size, dtype=torch.float64, requires_grad=True)
    state = [s.requires_grad_() for s in random_state(cell.state_type, B, cell.hidden_size)]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    return torch.autograd.gradcheck(f, (x, *state, *params))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("name", CELLS)
def test_bptt_gradients_pass_gradcheck(make_cell, name, bias, with_lengths):
    cell = make_cell(name, 2, 3, bias=bias)  # smaller still: gradcheck costs a forward per input number
    assert cell.has_backward()
    lengths = torch.tensor([T, 2, 4]) if with_lengths else None
    assert gradcheck_unroll(cell, lengths, backend="bptt")


def test_gradcheck_catches_a_wrong_backward_step(make_cell):
    """The check above can fail: an Elman cell whose step_backward forgets tanh' is caught."""

    class WrongElman(rc.ElmanCell):
        def step_backward(self, dstate, s):
            return dstate.h, dstate.h, rc.RNNState(None), ()  # missing the factor (1 - s²)

    cell = WrongElman(I, H).double()
    with pytest.raises(GradcheckError):
        gradcheck_unroll(cell, backend="bptt")
    assert gradcheck_unroll(cell, backend="autograd")  # the forward pass itself is fine


@pytest.mark.parametrize("name", CELLS)
def test_run_cell_bptt_matches_autograd(make_cell, name):
    """Both backends of the engine: same sequences, and the same gradients for every input,
    with upstream gradients on every state field at every step (LSTM's c included)."""
    cell = make_cell(name, I, H)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)  # run_cell is time-major
    state = random_state(cell.state_type, B, H)
    for s in state:
        s.requires_grad_()
    inputs = [x, *state, *cell.parameters()]

    results = {}
    for backend in ("bptt", "autograd"):
        seqs = run_cell(cell, x, state, backend)  # n_fields x (T, B, H)
        torch.manual_seed(1)
        loss = sum((s * torch.randn(s.shape, dtype=s.dtype)).sum() for s in seqs)
        results[backend] = (seqs, torch.autograd.grad(loss, inputs))

    (seqs, grads), (ref_seqs, ref_grads) = results["bptt"], results["autograd"]
    for a, b in zip(seqs, ref_seqs):
        torch.testing.assert_close(a, b)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", CELLS)
def test_bptt_backward_twice_with_retain_graph(make_cell, name):
    """torch's contract: after backward(retain_graph=True) the graph can be differentiated again."""
    cell = make_cell(name, I, H)
    x = torch.randn(B, T, I, dtype=torch.float64)
    out, _ = rc.unroll(cell, x, backend="bptt")
    loss = out.pow(2).sum()
    first = torch.autograd.grad(loss, list(cell.parameters()), retain_graph=True)
    second = torch.autograd.grad(loss, list(cell.parameters()))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b)
