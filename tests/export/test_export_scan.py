"""The scan that every layer runs under torch.export: against the engine's loop and each sequence run alone in
eager mode, and as an ONNX Scan (any cell; a built-in one with rnn_ops=False) against the eager layer.

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch

import recurrent as rc
from recurrent.cells import LayerNormLSTMCell
from recurrent.engine import run_cell, scan_cell
from recurrent.export import check_onnx, export_onnx, exportable

SIZES = [(1, 1), (2, 9), (4, 3), (5, 6)]  # (B, T): none is the traced example's (3, 5)


@pytest.mark.parametrize("cell", [rc.LSTMCell(3, 4), rc.GRUCell(3, 4)], ids=["lstm", "gru"])
def test_scan_matches_the_loop_and_each_sequence_alone(cell):
    """Eager scan_cell: outputs equal the autograd loop's on valid steps, and the final state is each sequence's
    own final state when it runs alone (the masked carry)."""
    T, B = 5, 3
    x, n = torch.randn(T, B, 3), torch.tensor([5, 2, 4])
    state = cell.init_state(B, x)
    with torch.no_grad():
        hs, final = scan_cell(cell, x, state, n)
        ref = run_cell(cell, x, state, "autograd")
        for b in range(B):
            alone = run_cell(cell, x[: n[b], b : b + 1], cell.init_state(1, x), "autograd")
            torch.testing.assert_close(hs[: n[b], b], ref[0][: n[b], b])
            for field, seq in zip(final, alone):
                torch.testing.assert_close(field[b], seq[-1, 0])


@pytest.mark.parametrize("make", [
    lambda: rc.LSTM(3, 5, bidirectional=True),
    lambda: rc.Recurrent(LayerNormLSTMCell, 3, 4, bidirectional=True),
], ids=["lstm-bi-scan", "lnlstm-bi"])
def test_onnx_scan_matches_the_eager_layer(make, tmp_path):
    """The time loop as an ONNX Scan over the cell's step: any cell (rnn_ops=False forces it for a built-in one)."""
    pytest.importorskip("onnxruntime")
    layer = make().eval()
    spec = exportable(layer)
    path = export_onnx(spec, tmp_path / "layer.onnx", rnn_ops=False)
    assert "Scan" in op_types(path)
    assert check_onnx(spec, path, SIZES) < 1e-4


def op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(path).graph.node}
