"""The cells of recurrent/cells/{mingru,layernorm_gru,zoneout,deep_transition}.py under torch.export: the exported
program (the engine's scan over time: minGRU/minLSTM export their sequential step) against the eager layer (minGRU
and minLSTM: the log-space parallel scan), bidirectional, with lengths, at a batch and length other than traced."""
from __future__ import annotations

from functools import partial

import pytest
import torch

import recurrent as rc
from recurrent.cells import DeepOutputCell, DeepTransitionCell, LayerNormGRUCell, MinGRUCell, MinLSTMCell, ZoneoutCell
from recurrent.export import export_program, exportable


@pytest.mark.parametrize("make", [MinGRUCell, MinLSTMCell, LayerNormGRUCell, DeepTransitionCell, DeepOutputCell,
                                  partial(ZoneoutCell, cell=rc.LSTMCell, p=0.2)],
                         ids=["mingru", "minlstm", "lngru", "dtrnn", "dotrnn", "zoneout-lstm"])
def test_exported_layer_matches_the_eager_layer(make):
    torch.manual_seed(0)
    layer = rc.Recurrent(make, 3, 4, bidirectional=True).eval()  # eval: zoneout's expectation
    exported = export_program(exportable(layer)).module()
    x, n = torch.randn(2, 7, 3), torch.tensor([7, 3])
    with torch.no_grad():
        out, state = layer(x, lengths=n)
        got = exported(x, n)
    for e, g in zip((out, *state), got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
