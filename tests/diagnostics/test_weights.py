"""Spectral radii against numpy.linalg.eigvals, gate values against torch.nn cells, saturation on gates whose
values are known by construction, and clipping statistics against numpy.

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import recurrent as rc
from recurrent.diagnostics.weights import cell_gates, clip_stats, gate_saturation, recurrent_spectra, spectral_radius


def test_spectral_radius_matches_numpy_eigvals():
    rng = np.random.default_rng(0)
    for n in (1, 3, 8):
        W = rng.normal(size=(n, n))  # non-symmetric: complex eigenvalues in conjugate pairs
        assert spectral_radius(torch.from_numpy(W)) == pytest.approx(np.abs(np.linalg.eigvals(W)).max(), rel=1e-12)
    rotation = torch.tensor([[0.0, -2.0], [2.0, 0.0]])  # eigenvalues ±2i: radius 2, though the trace is 0
    assert spectral_radius(rotation) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="square"):
        spectral_radius(torch.zeros(8, 4))


@pytest.mark.parametrize("layer_class, gates", [(rc.RNN, "h"), (rc.LSTM, "ifgo"), (rc.GRU, "rzn")])
def test_recurrent_spectra_per_gate_block_and_whole(layer_class, gates):
    layer = layer_class(3, 6, num_layers=2)
    spectra = recurrent_spectra(layer)
    assert [(s.layer, s.direction) for s in spectra] == [(0, 0), (1, 0)]
    for s, ((cell,),) in zip(spectra, zip(layer.cells)):
        W = cell.weight_hh.detach().double().numpy()  # (G, H), gate blocks stacked in torch's order
        assert list(s.radius) == list(gates)
        for i, g in enumerate(gates):
            block = W[6 * i : 6 * (i + 1)]
            assert s.radius[g] == pytest.approx(np.abs(np.linalg.eigvals(block)).max(), rel=1e-10)
        assert s.norm == pytest.approx(np.linalg.norm(W, ord=2), rel=1e-10)


def test_lstm_gates_rebuild_torch_lstm_cell_step():
    """c' = f c + i g and h' = o tanh(c') with our gates equal torch.nn.LSTMCell: the gate order is i, f, g, o."""
    cell = rc.LSTMCell(3, 4).double()
    ref = nn.LSTMCell(3, 4).double()
    ref.load_state_dict(cell.state_dict())
    x, h, c = (torch.randn(5, n, dtype=torch.float64) for n in (3, 4, 4))
    gates = cell_gates(cell, x, rc.LSTMState(h, c))
    h_ref, c_ref = ref(x, (h, c))
    c_new = gates["f"] * c + gates["i"] * gates["g"]
    torch.testing.assert_close(c_new, c_ref)
    torch.testing.assert_close(gates["o"] * torch.tanh(c_new), h_ref)


def test_gru_gates_rebuild_torch_gru_cell_step():
    """h' = (1 - z) n + z h with our gates equals torch.nn.GRUCell: the gate order is r, z, n."""
    cell = rc.GRUCell(3, 4).double()
    ref = nn.GRUCell(3, 4).double()
    ref.load_state_dict(cell.state_dict())
    x, h = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    gates = cell_gates(cell, x, rc.RNNState(h))
    torch.testing.assert_close((1 - gates["z"]) * gates["n"] + gates["z"] * h, ref(x, h))


def test_gate_saturation_on_gates_fixed_by_their_biases():
    """Zero weights make every gate σ(b): b = -5 is closed (< 0.05), +5 open (> 0.95), 0 half-open."""
    layer = rc.LSTM(3, 4, num_layers=2)
    biases = {0: (-5.0, 5.0, 0.0, 0.0), 1: (0.0, -5.0, 0.0, 5.0)}  # per layer: i, f, g, o
    with torch.no_grad():
        for l, (cell,) in enumerate(layer.cells):
            cell.weight_ih.zero_()
            cell.weight_hh.zero_()
            cell.bias_hh.zero_()
            cell.bias_ih.copy_(torch.tensor(biases[l]).repeat_interleave(4))
    stats = {(s.layer, s.gate): (s.low, s.high) for s in gate_saturation(layer, torch.randn(2, 7, 3))}
    assert stats == {(0, "i"): (1.0, 0.0), (0, "f"): (0.0, 1.0), (0, "o"): (0.0, 0.0),
                     (1, "i"): (0.0, 0.0), (1, "f"): (1.0, 0.0), (1, "o"): (0.0, 1.0)}


def test_gru_gate_saturation_counts_every_value():
    layer = rc.GRU(2, 3)
    with torch.no_grad():
        layer.cells[0][0].bias_ih[:3] = 20.0  # r open whatever the input
        layer.cells[0][0].bias_ih[3:6] = 0.0
        layer.cells[0][0].weight_ih[3:6].zero_()
        layer.cells[0][0].weight_hh[3:6].zero_()
        layer.cells[0][0].bias_hh[3:6] = -20.0  # z closed
    (r, z) = gate_saturation(layer, torch.randn(4, 5, 2))
    assert (r.gate, r.low, r.high, r.saturated) == ("r", 0.0, 1.0, 1.0)
    assert (z.gate, z.low, z.high) == ("z", 1.0, 0.0)


def test_gate_saturation_needs_gates():
    with pytest.raises(ValueError, match="LSTM or GRU"):
        gate_saturation(rc.RNN(2, 3), torch.randn(1, 4, 2))


def test_clip_stats_match_numpy():
    norms = np.random.default_rng(1).lognormal(size=1000)
    stats = clip_stats(norms.tolist(), max_norm=2.0)
    assert stats.steps == 1000
    assert stats.fired == int((norms > 2.0).sum()) and stats.fraction == pytest.approx((norms > 2.0).mean())
    assert stats.percentiles == pytest.approx({50.0: np.median(norms), 90.0: np.quantile(norms, 0.9),
                                               99.0: np.quantile(norms, 0.99)})
    assert (stats.mean, stats.max) == (pytest.approx(norms.mean()), pytest.approx(norms.max()))
    assert "fired on" in str(stats)
    assert clip_stats([0.5, 1.0, 3.0], 1.0).fired == 1  # a norm equal to the clip value is left alone
    with pytest.raises(ValueError):
        clip_stats([], 1.0)
