"""DropConnect on W_hh (weight_drop): every backend applies the same mask, only in training."""
import pytest
import torch

import recurrent as rc


@pytest.mark.parametrize("layer_class", [rc.LSTM, rc.GRU, rc.RNN])
def test_weight_drop_same_on_every_backend(layer_class):
    layer = layer_class(3, 5, num_layers=2, bidirectional=True, weight_drop=0.5).double()
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    outs = {}
    for backend in ("fused", "bptt", "autograd"):
        layer.backend = backend
        torch.manual_seed(7)  # same masks: each backend draws one per cell, in layer/direction order
        outs[backend] = layer(x)[0]
    torch.testing.assert_close(outs["bptt"], outs["fused"])
    torch.testing.assert_close(outs["autograd"], outs["fused"])


def test_weight_drop_only_in_training_and_reaches_the_weights():
    layer = rc.LSTM(3, 5, weight_drop=0.5, backend="bptt")
    plain = rc.LSTM(3, 5, backend="bptt")
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(2, 4, 3)
    layer.eval(), plain.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])  # eval: no DropConnect
    layer.train()
    torch.manual_seed(0)
    out = layer(x)[0]
    assert not torch.allclose(out, plain(x)[0])
    out.sum().backward()
    W = layer.cells[0][0].weight_hh
    torch.manual_seed(0)  # the same mask again: dropped weights get exactly zero gradient
    mask = torch.nn.functional.dropout(torch.ones_like(W), 0.5, training=True) == 0
    assert (W.grad[mask] == 0).all() and (W.grad[~mask] != 0).any()


def test_weight_drop_out_of_range():
    with pytest.raises(ValueError, match=r"weight_drop must be in \[0, 1\), got 1.0"):
        rc.LSTMCell(3, 5, weight_drop=1.0)
