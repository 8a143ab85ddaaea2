"""Zoneout (Krueger et al. 2017, "Zoneout: regularizing RNNs by randomly preserving hidden activations").

    cell = ZoneoutCell(32, 64, cell=LSTMCell, p=0.1)                       # zoneout on h and c, p = 0.1 each
    layer = rc.Recurrent(partial(ZoneoutCell, cell=GRUCell, p=0.1), 32, 64, num_layers=2)
    layer = registry.layer("lstm", 32, 64, zoneout=0.1)                    # the same, from a registered name

Key: B batch, H hidden.

In training each unit of each state field keeps its previous value with probability p, drawn per unit and per
step (dropout on the update, not on the value):

    d_t ~ Bernoulli(p)  (B, H)             s_t = d_t ⊙ s_{t-1} + (1 - d_t) ⊙ cell(x_t, s_{t-1})

and in eval mode the state is its expectation, s_t = p s_{t-1} + (1 - p) cell(x_t, s_{t-1}). An LSTM's h and c
get separate masks (and may get separate rates, p_c). The masks are drawn in field order (h, then c) with
torch.rand, after the inner step, so a fixed seed gives a mask that can be computed by hand.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from recurrent.cells.base import Cell
from recurrent.cells.lstm import LSTMCell


class ZoneoutCell(Cell):
    """Any cell with zoneout on its state. It wraps the cell's `forward`, so it runs on the autograd backend.

    Args:
        cell: the inner cell's class or factory, called as cell(input_size, hidden_size, **cell_kwargs)
        p: the probability that a unit keeps its previous value (every field, or `h` and fields other than c)
        p_c: the rate for an LSTM's memory cell c; None: p
    """

    def __init__(self, input_size: int, hidden_size: int, cell: Callable[..., Cell] = LSTMCell, p: float = 0.1,
                 p_c: float | None = None, **cell_kwargs):
        super().__init__(input_size, hidden_size)
        p_c = p if p_c is None else p_c
        for name, value in (("p", p), ("p_c", p_c)):
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"zoneout {name} must be in [0, 1), got {value!r}")
        self.cell = cell(input_size, hidden_size, **cell_kwargs)
        self.state_type = self.cell.state_type
        self.rates = tuple(float(p_c if f == "c" else p) for f in self.state_type._fields)

    def init_state(self, batch_size: int, like: Tensor) -> NamedTuple:
        return self.cell.init_state(batch_size, like)

    def forward(self, x: Tensor, state: NamedTuple) -> NamedTuple:  # x (B, I); every field (B, H)
        new = self.cell(x, state)
        fields = []
        for prev, now, p in zip(state, new, self.rates):
            if not p:
                fields.append(now)
            elif self.training:
                keep = torch.rand(now.shape, dtype=now.dtype, device=now.device) < p  # (B, H): d_t
                fields.append(torch.where(keep, prev, now))
            else:
                fields.append(torch.lerp(now, prev, p))  # p s_{t-1} + (1-p) s_t, the expectation
        return self.state_type(*fields)

    def extra_repr(self) -> str:
        return f"rates={dict(zip(self.state_type._fields, self.rates))}"
