"""Deep transition and deep output RNNs (Pascanu et al. 2014): steps against the paper's equations written out here,
the hand-derived BPTT of the deep transition against gradcheck and autograd, and both by name in a layer.

Key: B batch, T time, I input, H hidden.
"""
import pytest
import torch

import recurrent as rc
from recurrent.cells import DeepOutputCell, DeepOutputState, DeepTransitionCell, registry

B, T, I, H = 3, 5, 3, 4


def dt_reference(cell: DeepTransitionCell, x, h):
    """h_t = tanh(V_L tanh(... tanh(V_2 tanh(U x_t + W h_{t-1} + b) + c_2) ...) + c_L), written out."""
    z = torch.tanh(x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
    for linear in cell.transition:
        z = torch.tanh(z @ linear.weight.T + linear.bias)
    return z


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_deep_transition_step_matches_the_paper(layers):
    torch.manual_seed(0)
    cell = DeepTransitionCell(I, H, transition_layers=layers).double()
    assert len(cell.transition) == layers - 1
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    torch.testing.assert_close(cell(x, rc.RNNState(h)).h, dt_reference(cell, x, h))


def test_one_transition_layer_is_the_elman_network():
    torch.manual_seed(1)
    cell, elman = DeepTransitionCell(I, H, transition_layers=1).double(), rc.ElmanCell(I, H).double()
    elman.load_state_dict(cell.state_dict())
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    torch.testing.assert_close(cell(x, rc.RNNState(h)).h, elman(x, rc.RNNState(h)).h)


@pytest.mark.parametrize("lengths", [None, [5, 3, 1]])
@pytest.mark.parametrize("layers", [1, 3])
def test_deep_transition_hand_bptt_passes_gradcheck(layers, lengths):
    torch.manual_seed(2)
    cell = DeepTransitionCell(I, H, transition_layers=layers).double()
    assert cell.has_backward()
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    lengths = None if lengths is None else torch.tensor(lengths)

    def run(x, h0, *params):
        out, final = rc.unroll(cell, x, rc.RNNState(h0), lengths, backend="bptt")
        return out, final.h

    assert torch.autograd.gradcheck(run, (x, h0, *cell.parameters()))


def test_deep_output_step_matches_the_paper():
    torch.manual_seed(3)
    cell = DeepOutputCell(I, H, transition_layers=2, output_layers=2).double()
    x = torch.randn(B, I, dtype=torch.float64)
    state = DeepOutputState(torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64))
    s = dt_reference(cell.transition, x, state.s)  # the recurrence reads s_{t-1}, never the output h_{t-1}
    y = s
    for linear in cell.output:  # y_t = tanh(O_2 tanh(O_1 s_t + d_1) + d_2)
        y = torch.tanh(y @ linear.weight.T + linear.bias)
    new = cell(x, state)
    torch.testing.assert_close(new.s, s)
    torch.testing.assert_close(new.h, y)


def test_deep_output_passes_gradcheck_in_a_bidirectional_layer():
    torch.manual_seed(4)
    layer = rc.Recurrent(DeepOutputCell, I, H, bidirectional=True).double()
    assert layer.backend == "autograd"
    x = torch.randn(2, 4, I, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def run(x, *params):
        out, state = layer(x, lengths=lengths)
        return out, state.h, state.s

    assert torch.autograd.gradcheck(run, (x, *layer.parameters()))


@pytest.mark.parametrize("name, kind, backend", [("dtrnn", DeepTransitionCell, "bptt"),
                                                 ("dotrnn", DeepOutputCell, "autograd")])
def test_by_name_in_a_deep_bidirectional_layer(name, kind, backend):
    torch.manual_seed(5)
    layer = registry.layer(name, I, H, num_layers=2, bidirectional=True).double()
    assert type(layer.cells[1][1]) is kind and layer.backend == backend
    x, lengths = torch.randn(B, T, I, dtype=torch.float64), torch.tensor([5, 3, 1])
    grads = {}
    for run_on in (backend, "autograd"):
        layer.backend = run_on
        out, state = layer(x, lengths=lengths)
        grads[run_on] = torch.autograd.grad(out.pow(2).sum() + state.h.sum(), list(layer.parameters()))
    for a, b in zip(grads[backend], grads["autograd"]):
        torch.testing.assert_close(a, b)
    assert out.shape == (B, T, 2 * H) and (out[2, 1:] == 0).all()


def test_bad_depths_are_refused():
    with pytest.raises(ValueError, match="transition_layers must be a positive int, got 0"):
        DeepTransitionCell(I, H, transition_layers=0)
    with pytest.raises(ValueError, match="output_layers must be a positive int, got 0"):
        DeepOutputCell(I, H, output_layers=0)
