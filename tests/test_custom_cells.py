"""Cells written by users, as docs/cells.md teaches: its code blocks run, its peephole LSTM fits in
30 lines, and custom cells work stacked, bidirectional and on padded batches.

Key: B batch, T time, I input, H hidden, L layers, D directions.
"""
from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn

import recurrent as rc

from conftest import DOCS, exec_markdown, python_blocks

B, T, I, H = 3, 5, 3, 4
LENGTHS = torch.tensor([5, 2, 4])


# --- docs/cells.md ------------------------------------------------------------------------------------------


def test_docs_code_blocks_run_and_print_what_their_comments_say(capsys):
    namespace = exec_markdown(DOCS / "cells.md")
    assert {"PeepholeLSTMCell", "IndRNNCell"} <= namespace.keys()
    # every `print(...)  # comment` line: the comment starts with what was printed
    comments = [line.split("#", 1)[1].strip() for block in python_blocks(DOCS / "cells.md")
                for line in block.splitlines() if line.startswith("print(") and "#" in line]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(comments)
    for got, comment in zip(printed, comments):
        assert comment.startswith(got), f"docs/cells.md says {comment!r} but prints {got!r}"


def test_peephole_cell_is_at_most_30_lines_and_defines_only_forward(cells_doc):
    (block,) = [b for b in python_blocks(DOCS / "cells.md") if "class PeepholeLSTMCell" in b]
    assert len(block.strip().splitlines()) <= 30
    cell = cells_doc["PeepholeLSTMCell"](I, H)
    assert not cell.has_step() and not cell.has_backward()
    methods = {name for name, value in vars(type(cell)).items() if callable(value) and name != "state_type"}
    assert methods == {"__init__", "forward"}


def test_peephole_cell_without_peepholes_is_torch_lstm_cell(cells_doc):
    """With p = 0 the peephole LSTM is the plain LSTM: compare with torch.nn.LSTMCell, weights copied."""
    cell = cells_doc["PeepholeLSTMCell"](I, H).double()
    ref = nn.LSTMCell(I, H).double()
    with torch.no_grad():
        cell.peep.zero_()
        cell.linear.weight.copy_(torch.cat([ref.weight_ih, ref.weight_hh], dim=1))  # [U W]
        cell.linear.bias.copy_(ref.bias_ih + ref.bias_hh)
    x = torch.randn(B, I, dtype=torch.float64)
    state = rc.LSTMState(torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    for got, want in zip(cell(x, state), ref(x, tuple(state))):
        torch.testing.assert_close(got, want)


# --- custom cells in layers ---------------------------------------------------------------------------------


def stack_by_hand(layer: rc.Recurrent, x: Tensor):
    """The reference for one unpadded sequence x (T, I): step every cell by hand, layer by layer;
    the backward direction reads the sequence reversed and its outputs are reversed back."""
    inp, finals = x, []
    for cells in layer.cells:
        outs = []
        for d, cell in enumerate(cells):
            seq = inp if d == 0 else inp.flip(0)
            state, hs = cell.init_state(1, x), []
            for t in range(len(seq)):
                state = cell(seq[t : t + 1], state)
                hs.append(state.h[0])
            outs.append(torch.stack(hs) if d == 0 else torch.stack(hs).flip(0))  # (T, H)
            finals.append(state)
        inp = torch.cat(outs, dim=-1)  # (T, D*H)
    return inp, finals


@pytest.mark.parametrize("name", ["PeepholeLSTMCell", "IndRNNCell"])
def test_custom_layer_on_a_padded_batch_equals_stepping_each_sequence_by_hand(cells_doc, name):
    layer = rc.Recurrent(cells_doc[name], input_size=I, hidden_size=H, num_layers=2, bidirectional=True).double()
    assert layer.backend == ("autograd" if name == "PeepholeLSTMCell" else "bptt")
    x = torch.randn(B, T, I, dtype=torch.float64)

    out, final = layer(x, lengths=LENGTHS)

    assert out.shape == (B, T, 2 * H)
    for b, n in enumerate(LENGTHS.tolist()):
        expected_out, expected_finals = stack_by_hand(layer, x[b, :n])
        torch.testing.assert_close(out[b, :n], expected_out)
        assert not out[b, n:].any()
        for field, got in zip(layer.state_type._fields, final):
            expected = torch.stack([getattr(s, field)[0] for s in expected_finals]).view(2, 2, H)  # (L, D, H)
            torch.testing.assert_close(got[:, :, b], expected)


@pytest.mark.parametrize("name", ["PeepholeLSTMCell", "IndRNNCell"])
def test_custom_layer_padded_gradients_equal_each_sequence_alone(cells_doc, name):
    layer = rc.Recurrent(cells_doc[name], input_size=I, hidden_size=H, num_layers=2, bidirectional=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    params = list(layer.parameters())
    out, final = layer(x, lengths=LENGTHS)
    w = torch.randn(out.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out * w).sum() + final.h.sum(), [x, *params])

    total = 0.0
    for b, n in enumerate(LENGTHS.tolist()):
        out_b, final_b = layer(x[b : b + 1, :n])
        total = total + (out_b * w[b : b + 1, :n]).sum() + final_b.h.sum()
    for g, g_alone in zip(grads, torch.autograd.grad(total, [x, *params])):
        torch.testing.assert_close(g, g_alone)


def test_indrnn_layer_bptt_gradients_equal_autograd(cells_doc):
    layer = rc.Recurrent(cells_doc["IndRNNCell"], input_size=I, hidden_size=H, num_layers=2,
                         bidirectional=True).double()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    state = rc.RNNState(torch.randn(2, 2, B, H, dtype=torch.float64, requires_grad=True))
    w = torch.randn(B, T, 2 * H, dtype=torch.float64)
    results = {}
    for backend in ("bptt", "autograd"):
        layer.backend = backend
        out, final = layer(x, state, LENGTHS)
        loss = (out * w).sum() + final.h.pow(2).sum()
        results[backend] = (out, final.h, *torch.autograd.grad(loss, [x, state.h, *layer.parameters()]))
    for got, want in zip(results["bptt"], results["autograd"]):
        torch.testing.assert_close(got, want)


def test_cell_with_step_but_no_step_backward_runs_on_autograd(cells_doc):
    """project_input + step without step_backward: forward() comes for free, the backend is autograd."""
    IndRNN = cells_doc["IndRNNCell"]

    class NoBackward(IndRNN):
        step_backward = rc.Cell.step_backward  # as if it had never been written

    layer = rc.Recurrent(NoBackward, I, H, num_layers=2, bidirectional=True)
    assert layer.backend == "autograd" and layer.backend.reason == "NoBackward has no step_backward"
    reference = rc.Recurrent(IndRNN, I, H, num_layers=2, bidirectional=True)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I)
    torch.testing.assert_close(layer(x, lengths=LENGTHS)[0], reference(x, lengths=LENGTHS)[0])


class CountState(NamedTuple):
    h: Tensor
    n: Tensor  # how many steps this cell has taken


class CountingCell(rc.Cell):
    """A cell with its own three-letter state: h follows tanh(U x), n counts the steps."""

    state_type = CountState

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size, hidden_size)

    def forward(self, x, state):
        return CountState(torch.tanh(self.linear(x)) + 0.5 * state.h, state.n + 1)


def test_own_state_type_counts_exactly_the_valid_steps():
    """Every layer and direction of a padded batch takes exactly `length` steps."""
    layer = rc.Recurrent(CountingCell, I, H, num_layers=3, bidirectional=True)
    _, final = layer(torch.randn(B, T, I), lengths=LENGTHS)
    assert type(final) is CountState and final.n.shape == (3, 2, B, H)
    expected = LENGTHS.view(1, 1, B, 1).expand(3, 2, B, H).to(final.n.dtype)
    torch.testing.assert_close(final.n, expected)


# --- a subclass of a built-in cell keeps its fast path ------------------------------------------------------


class NamedLSTMCell(rc.LSTMCell):
    """A user's subclass that keeps LSTMCell's equations: it only adds a method."""

    def gates(self, x: Tensor) -> Tensor:  # (B, I) -> (B, 4H)
        return self.project_input(x.unsqueeze(0))[0]


def test_lstm_cell_subclass_keeping_the_equations_runs_the_cpp_loop_and_equals_torch_lstm():
    """Weights copied from torch.nn.LSTM: same outputs, final state and gradients, on the C++ loop where it loads."""
    layer = rc.Recurrent(NamedLSTMCell, I, H, num_layers=2)
    ref = nn.LSTM(I, H, num_layers=2, batch_first=True)
    with torch.no_grad():
        for l, (cell,) in enumerate(layer.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(ref, f"{name}_l{l}"))
    x = torch.randn(B, T, I, requires_grad=True)
    out, final = layer(x)
    if rc.native.load() is None:
        pytest.skip(f"the C++ loop does not load here: {rc.native.status()}")
    assert layer.backend == "bptt" and layer.backend.native, layer.backend
    want, (h, c) = ref(x)
    for got, expected in ((out, want), (final.h.view(2, B, H), h), (final.c.view(2, B, H), c)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    grads = torch.autograd.grad(out.sum() + final.c.sum(), [x, *layer.parameters()])
    ref_grads = torch.autograd.grad(want.sum() + c.sum(), [x, *(getattr(ref, f"{n}_l{l}") for l in range(2)
                                                               for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))])
    for got, expected in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
