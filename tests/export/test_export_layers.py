"""Export of RNN/LSTM/GRU layers: one exported file (torch.export program and ONNX through onnxruntime) against the
eager layer, on several batch sizes and lengths, uni- and bidirectional, with lengths: built-in layers as ONNX's
RNN/LSTM/GRU ops (tests/export/test_export_scan.py: any cell as an ONNX Scan).

Key: B batch, T time, I input, H hidden, L layers, D directions.
"""
from __future__ import annotations

import pytest
import torch

import recurrent as rc
from recurrent.export import check_onnx, export_onnx, export_program, exportable

SIZES = [(1, 1), (2, 9), (4, 3), (5, 6)]  # (B, T): none is the traced example's (3, 5)


def lengths_for(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, T + 1, (B,), generator=g)
    n[-1] = T
    return n


@pytest.mark.parametrize("make", [
    lambda: rc.LSTM(3, 5, num_layers=2, bidirectional=True),
    lambda: rc.GRU(3, 5),
    lambda: rc.RNN(3, 5, bidirectional=True, nonlinearity="relu"),
], ids=["lstm-2x-bi", "gru", "rnn-relu-bi"])
def test_one_exported_file_matches_the_eager_layer_at_every_batch_and_length(make, tmp_path):
    pytest.importorskip("onnxruntime")
    layer = make().eval()
    spec = exportable(layer)
    exported = export_program(spec).module()
    for i, (B, T) in enumerate(SIZES):
        x, n = torch.randn(B, T, 3), lengths_for(B, T, i)
        with torch.no_grad():
            out, state = layer(x, lengths=n)  # eager: torch's fused kernel on packed sequences
            got = exported(x, n)
        assert got[0].shape == out.shape
        for e, g in zip((out, *state), got):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    path = export_onnx(spec, tmp_path / "layer.onnx")  # ONNX's own RNN/LSTM/GRU op, lengths as sequence_lens
    assert layer.mode.split("_")[0] in op_types(path) and "Scan" not in op_types(path)
    assert check_onnx(spec, path, SIZES) < 1e-4


def op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(path).graph.node}


def test_exported_layer_without_the_full_length_in_the_batch(tmp_path):
    """Every sequence shorter than T: outputs past each length are zero, states taken at each last valid step."""
    layer = rc.LSTM(3, 4, bidirectional=True).eval()
    exported = export_program(exportable(layer)).module()
    x, n = torch.randn(3, 6, 3), torch.tensor([2, 4, 1])
    with torch.no_grad():
        out, state = layer(x, lengths=n)
        got = exported(x, n)
    for e, g in zip((out, *state), got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    assert got[0][0, 2:].abs().max() == 0


def test_export_does_not_guard_on_the_lengths_values():
    """The exported graph takes any lengths in 1..T: no guard specialises on the example's values."""
    layer = rc.GRU(2, 3).eval()
    exported = export_program(exportable(layer)).module()
    x = torch.randn(4, 5, 2)
    for n in ([5, 5, 5, 5], [1, 1, 1, 1], [3, 1, 5, 2]):
        n = torch.tensor(n)
        with torch.no_grad():
            torch.testing.assert_close(exported(x, n)[0], layer(x, lengths=n)[0], atol=1e-5, rtol=0)
