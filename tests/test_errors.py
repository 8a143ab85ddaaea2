"""Bad input fails early with a ValueError that names what was expected and what was received.

Key: B batch, T time, I input, H hidden, L layers, D directions.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import recurrent as rc
from recurrent.engine import run_cell

B, T, I, H = 2, 5, 3, 4


@pytest.fixture
def lstm():
    return rc.LSTM(I, H, num_layers=2, bidirectional=True, backend="bptt")


# --- the input x --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fused", "bptt"])
def test_x_of_wrong_rank(lstm, backend):
    lstm.backend = backend
    with pytest.raises(ValueError, match=re.escape("(batch, time, input_size=3), got shape (5, 3)")):
        lstm(torch.randn(T, I))


@pytest.mark.parametrize("x, got", [(torch.randn(0, T, I), "(0, 5, 3)"), (torch.randn(B, 0, I), "(2, 0, 3)")],
                         ids=["no_sequence", "no_step"])
def test_empty_x(lstm, x, got):
    with pytest.raises(ValueError, match=re.escape(f"at least one sequence and one time step, got shape {got}")):
        lstm(x)


def test_x_not_a_tensor(lstm):
    with pytest.raises(ValueError, match=r"input_size=3\), got shape list"):
        lstm([[[0.0] * I] * T] * B)


def test_x_of_wrong_feature_size(lstm):
    with pytest.raises(ValueError, match=r"input_size=3 .*got 7"):
        lstm(torch.randn(B, T, 7))


# --- lengths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lengths, match", [
    ([0, 5], r"lengths must be in 1\.\.5 .*got min 0, max 5"),
    ([-1, 3], r"lengths must be in 1\.\.5 .*got min -1, max 3"),
    ([6, 2], r"lengths must be in 1\.\.5 .*got min 2, max 6"),
], ids=["zero", "negative", "longer_than_T"])
def test_lengths_out_of_range(lstm, lengths, match):
    with pytest.raises(ValueError, match=match):
        lstm(torch.randn(B, T, I), lengths=torch.tensor(lengths))


def test_lengths_of_wrong_batch_size(lstm):
    with pytest.raises(ValueError, match=re.escape("lengths must have shape (2,), one per sequence, got (3,)")):
        lstm(torch.randn(B, T, I), lengths=torch.tensor([5, 4, 3]))


def test_float_lengths(lstm):
    with pytest.raises(ValueError, match=r"lengths must be integers, got dtype torch\.float32"):
        lstm(torch.randn(B, T, I), lengths=torch.tensor([5.0, 3.0]))


def test_lengths_as_a_list_of_ints_are_fine(lstm):
    out, _ = lstm(torch.randn(B, T, I), lengths=[5, 3])
    assert not out[1, 3:].any()


@pytest.mark.parametrize("lengths", [[6, 2], [0, 2]], ids=["longer_than_T", "zero"])
def test_unroll_checks_lengths_too(lengths):
    """rc.unroll is public API: it fails like the layers do."""
    with pytest.raises(ValueError, match=r"lengths must be in 1\.\.5"):
        rc.unroll(rc.LSTMCell(I, H), torch.randn(B, T, I), lengths=torch.tensor(lengths))


@pytest.mark.parametrize("shape", [(T, I), (B, T, 7)], ids=["rank", "features"])
def test_unroll_checks_x_too(shape):
    expected = re.escape(f"x must be (batch, time, input_size=3), got shape {shape}")
    with pytest.raises(ValueError, match=expected):
        rc.unroll(rc.LSTMCell(I, H), torch.randn(shape))


# --- the state ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, B, H), (2, 2, B + 1, H), (2, 1, B, H)], ids=["torch_layout", "batch", "D"])
def test_state_of_wrong_shape(lstm, shape):
    state = rc.LSTMState(torch.zeros(shape), torch.zeros(2, 2, B, H))
    expected = re.escape(f"state.h must have shape (layers, directions, batch, hidden) = (2, 2, 2, 4), got {shape}")
    with pytest.raises(ValueError, match=expected):
        lstm(torch.randn(B, T, I), state)


def test_state_with_wrong_number_of_fields(lstm):
    with pytest.raises(ValueError, match=re.escape("state must be a LSTMState('h', 'c'), got RNNState of length 1")):
        lstm(torch.randn(B, T, I), rc.RNNState(torch.zeros(2, 2, B, H)))
    gru = rc.GRU(I, H, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=re.escape("state must be a RNNState('h',), got LSTMState of length 2")):
        gru(torch.randn(B, T, I), rc.LSTMState(torch.zeros(2, 2, B, H), torch.zeros(2, 2, B, H)))


# --- backends -----------------------------------------------------------------------------------------------


def test_unknown_backend_name(lstm):
    expected = re.escape("backend must be one of ('auto', 'fused', 'bptt', 'autograd', 'scan', 'compiled'), got 'cudnn'")
    with pytest.raises(ValueError, match=expected):
        rc.LSTM(I, H, backend="cudnn")
    with pytest.raises(ValueError, match=expected):
        lstm.backend = "cudnn"
    assert lstm.backend == "bptt", "a rejected backend leaves the layer as it was"
    with pytest.raises(ValueError, match=expected):
        rc.unroll(rc.LSTMCell(I, H), torch.randn(B, T, I), backend="cudnn")
    with pytest.raises(ValueError, match=r"run_cell backend must be 'bptt', 'autograd', 'compiled' or 'scan', got 'auto'"):
        run_cell(rc.LSTMCell(I, H), torch.randn(T, B, I), rc.LSTMCell(I, H).init_state(B, torch.zeros(1)), "auto")


def test_fused_needs_a_built_in_layer(cells_doc):
    with pytest.raises(ValueError, match="backend='fused' needs a built-in RNN/LSTM/GRU layer; "
                                         "PeepholeLSTMCell has no fused kernel"):
        rc.Recurrent(cells_doc["PeepholeLSTMCell"], I, H, backend="fused")
    with pytest.raises(ValueError, match="LSTMCell has no fused kernel"):  # a built-in cell in the generic layer
        rc.Recurrent(rc.LSTMCell, I, H, backend="fused")


def test_bptt_needs_step_backward(cells_doc):
    with pytest.raises(ValueError, match="backend='bptt' needs a cell with project_input, step and step_backward; "
                                         "PeepholeLSTMCell lacks project_input/step"):
        rc.Recurrent(cells_doc["PeepholeLSTMCell"], I, H, backend="bptt")

    class NoBackward(cells_doc["IndRNNCell"]):
        step_backward = rc.Cell.step_backward  # as if it had never been written

    layer = rc.Recurrent(NoBackward, I, H)
    with pytest.raises(ValueError, match="NoBackward lacks step_backward"):
        layer.backend = "bptt"


# --- construction -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_layers=0), r"num_layers must be a positive int, got 0"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1\.0"),
    (dict(dropout=-0.1), r"dropout must be in \[0, 1\), got -0\.1"),
    (dict(hidden_size=0), r"hidden_size must be a positive int, got 0"),
], ids=["num_layers", "dropout_1", "dropout_negative", "hidden_size"])
def test_bad_layer_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rc.LSTM(**{"input_size": I, "hidden_size": H, **kwargs})


def test_bad_cell_arguments():
    with pytest.raises(ValueError, match=r"input_size must be a positive int, got 0"):
        rc.LSTMCell(0, H)
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \('tanh', 'relu'\), got 'sigmoid'"):
        rc.RNN(I, H, nonlinearity="sigmoid")


def test_from_torch_checks_its_module():
    with pytest.raises(ValueError, match=r"LSTM\.from_torch expects a torch\.nn\.LSTM, got GRU"):
        rc.LSTM.from_torch(nn.GRU(I, H))
    with pytest.raises(ValueError, match=r"proj_size=2 is not supported; expected 0"):
        rc.LSTM.from_torch(nn.LSTM(I, H, proj_size=2))


def test_cell_without_forward_or_step():
    class Empty(rc.Cell):
        pass

    with pytest.raises(NotImplementedError, match="Empty must define forward"):
        Empty(I, H)(torch.randn(B, I), rc.RNNState(torch.zeros(B, H)))
