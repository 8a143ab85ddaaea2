"""LayerNorm LSTM: one step against the formula written with F.layer_norm; hand BPTT against gradcheck."""
import pytest
import torch
import torch.nn.functional as F

import recurrent as rc


def perturbed_cell(I=3, H=4) -> rc.LayerNormLSTMCell:
    cell = rc.LayerNormLSTMCell(I, H).double()
    with torch.no_grad():  # move the LayerNorm gains and biases off 1 and 0, so they matter
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return cell


def reference_step(cell, x, h, c):
    """Ba et al. 2016, section 3.1, written out independently of the cell's code."""
    H = cell.hidden_size
    a = (F.layer_norm(x @ cell.weight_ih.T, (4 * H,), cell.ln_x.weight, cell.ln_x.bias, eps=1e-5)
         + F.layer_norm(h @ cell.weight_hh.T, (4 * H,), cell.ln_h_weight, None, eps=1e-5))
    i, f, g, o = a.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), cell.ln_c.weight, cell.ln_c.bias, eps=1e-5))
    return h, c


def test_one_step_matches_the_paper_formula():
    torch.manual_seed(0)
    cell = perturbed_cell()
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))
    ours = cell(x, rc.LSTMState(h, c))
    ref = reference_step(cell, x, h, c)
    torch.testing.assert_close(ours.h, ref[0])
    torch.testing.assert_close(ours.c, ref[1])


@pytest.mark.parametrize("lengths", [None, [5, 3, 1]])
def test_hand_bptt_passes_gradcheck(lengths):
    torch.manual_seed(1)
    cell = perturbed_cell()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    lengths = None if lengths is None else torch.tensor(lengths)

    def run(x, h0, c0, *params):
        out, final = rc.unroll(cell, x, rc.LSTMState(h0, c0), lengths, backend="bptt")
        return (out, *final)

    assert torch.autograd.gradcheck(run, (x, h0, c0, *cell.parameters()))


def test_runs_on_bptt_in_a_deep_bidirectional_layer_and_agrees_with_autograd():
    torch.manual_seed(2)
    layer = rc.Recurrent(rc.LayerNormLSTMCell, 3, 4, num_layers=2, bidirectional=True).double()
    assert layer.backend == "bptt"
    x, lengths = torch.randn(3, 6, 3, dtype=torch.float64), torch.tensor([6, 4, 2])
    grads = {}
    for backend in ("bptt", "autograd"):
        layer.backend = backend
        out, state = layer(x, lengths=lengths)
        grads[backend] = torch.autograd.grad(out.pow(2).sum() + state.c.sum(), list(layer.parameters()))
    for a, b in zip(grads["bptt"], grads["autograd"]):
        torch.testing.assert_close(a, b)
