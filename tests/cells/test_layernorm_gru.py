"""LayerNorm GRU: one step against the equations written with F.layer_norm; its hand-derived BPTT against gradcheck
and against autograd in a deep bidirectional layer."""
import pytest
import torch
import torch.nn.functional as F

import recurrent as rc
from recurrent.cells import LayerNormGRUCell, registry


def perturbed_cell(I=3, H=4) -> LayerNormGRUCell:
    cell = LayerNormGRUCell(I, H).double()
    with torch.no_grad():  # move the LayerNorm gains and biases off 1 and 0, so they matter
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return cell


def reference_step(cell, x, h):
    """The GRU (Cho et al. 2014, torch's r, z, n) with each projection layer-normalised, written out here."""
    H = cell.hidden_size
    a = F.layer_norm(x @ cell.weight_ih.T, (3 * H,), cell.ln_x.weight, cell.ln_x.bias, eps=1e-5)
    e = F.layer_norm(h @ cell.weight_hh.T, (3 * H,), cell.ln_h_weight, cell.ln_h_bias, eps=1e-5)
    a_r, a_z, a_n = a.chunk(3, dim=1)
    e_r, e_z, e_n = e.chunk(3, dim=1)
    r, z = torch.sigmoid(a_r + e_r), torch.sigmoid(a_z + e_z)
    n = torch.tanh(a_n + r * e_n)
    return (1 - z) * n + z * h


def test_one_step_matches_the_formula():
    torch.manual_seed(0)
    cell = perturbed_cell()
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(cell(x, rc.RNNState(h)).h, reference_step(cell, x, h))


@pytest.mark.parametrize("lengths", [None, [5, 3, 1]])
def test_hand_bptt_passes_gradcheck(lengths):
    torch.manual_seed(1)
    cell = perturbed_cell()
    assert cell.has_backward()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    lengths = None if lengths is None else torch.tensor(lengths)

    def run(x, h0, *params):
        out, final = rc.unroll(cell, x, rc.RNNState(h0), lengths, backend="bptt")
        return out, final.h

    assert torch.autograd.gradcheck(run, (x, h0, *cell.parameters()))


def test_runs_on_bptt_in_a_deep_bidirectional_layer_and_agrees_with_autograd():
    torch.manual_seed(2)
    layer = registry.layer("lngru", 3, 4, num_layers=2, bidirectional=True).double()
    assert type(layer.cells[0][0]) is LayerNormGRUCell and layer.backend == "bptt"
    x, lengths = torch.randn(3, 6, 3, dtype=torch.float64), torch.tensor([6, 4, 2])
    grads = {}
    for backend in ("bptt", "autograd"):
        layer.backend = backend
        out, state = layer(x, lengths=lengths)
        grads[backend] = torch.autograd.grad(out.pow(2).sum() + state.h.sum(), list(layer.parameters()))
    for a, b in zip(grads["bptt"], grads["autograd"]):
        torch.testing.assert_close(a, b)
