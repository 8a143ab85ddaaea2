"""The Elman RNN cell: s_t = f(U x_t + W s_{t-1} + b)."""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent.cells.base import ProjectedCell
from recurrent.state import RNNState

NONLINEARITIES = ("tanh", "relu")


class ElmanCell(ProjectedCell):
    """One step of the Elman network (torch.nn.RNNCell's layout).

        s_t = f(U x_t + W s_{t-1} + b)          f = tanh or relu

    U = weight_ih (H, I), W = weight_hh (H, H), b = bias_ih + bias_hh (H,).
    The output o_t = softmax(V s_t) of the tutorials is a separate decoder, not part of the cell.
    State: RNNState(h=s_t), h (B, H).

    Backward (pre_t = U x_t + W s_{t-1} + b):
        dpre_t = ds_t * f'(pre_t)       tanh' = 1 - s_t²,  relu' = [s_t > 0]
        dU x_t, dW s_{t-1}, db all receive dpre_t; ds_{t-1} = dpre_t W (done by the engine)
    """

    num_gates = 1
    state_type = RNNState
    sums_halves = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 weight_drop: float = 0.0):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, weight_drop)

    def step(self, gx: Tensor, gh: Tensor | None, state: RNNState):  # gx, gh (B, H)
        pre = gx if gh is None else gx + gh
        s = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return RNNState(s), s

    def step_backward(self, dstate: RNNState, s: Tensor):
        if self.nonlinearity == "tanh":
            dpre = dstate.h * (1 - s * s)
        else:
            dpre = dstate.h * (s > 0)
        return dpre, dpre, RNNState(None), ()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, nonlinearity={self.nonlinearity!r}"
