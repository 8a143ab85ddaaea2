"""Deep transition and deep output RNNs (Pascanu, Gulcehre, Cho & Bengio 2014, "How to construct deep recurrent
neural networks", sections 3.2 and 3.3).

    layer = rc.Recurrent(partial(DeepTransitionCell, transition_layers=3), 32, 64)   # DT-RNN, on bptt
    layer = rc.Recurrent(DeepOutputCell, 32, 64)                                      # DOT-RNN
    recurrent train lm --cell dtrnn          # DT-RNN, 2 transition layers
    recurrent train lm --cell dotrnn         # DOT-RNN: 2 transition layers and 1 output layer

Key: B batch, I input, H hidden, L transition layers.

A stacked RNN adds depth between layers; these add it inside one step. The deep transition puts an MLP between
h_{t-1} and h_t, so the recurrence itself is deep; the deep output puts an MLP between h_t and the output.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.cells.base import Cell, ProjectedCell
from recurrent.state import RNNState


class DeepTransitionCell(ProjectedCell):
    """DT-RNN: an MLP of `transition_layers` tanh layers inside the recurrence (Pascanu et al. 2014, eq. 6).

        z_1 = tanh(U x_t + W h_{t-1} + b)                  the Elman step is the first layer
        z_k = tanh(V_k z_{k-1} + c_k)       k = 2..L       V_k (H, H), c_k (H,): transition.{k-2}
        h_t = z_L

    transition_layers=1 is the Elman network. U = weight_ih (H, I), W = weight_hh (H, H), b = bias_ih + bias_hh.
    State: RNNState(h) (B, H).

    Backward (z_0 := the layer-1 pre-activation's input, saved z_1 .. z_L):
        dpre_L = dh ⊙ (1 - z_L²);  for k = L..2: dV_k = dpre_kᵀ z_{k-1}, dc_k = Σ_B dpre_k,
                                                  dpre_{k-1} = (dpre_k V_k) ⊙ (1 - z_{k-1}²)
        dgx = dgh = dpre_1;  ds_{t-1} = dpre_1 W (the engine's)
    """

    num_gates = 1
    state_type = RNNState
    sums_halves = True

    def __init__(self, input_size: int, hidden_size: int, transition_layers: int = 2, bias: bool = True,
                 weight_drop: float = 0.0):
        if not isinstance(transition_layers, int) or transition_layers < 1:
            raise ValueError(f"transition_layers must be a positive int, got {transition_layers!r}")
        self.transition_layers = transition_layers
        super().__init__(input_size, hidden_size, bias, weight_drop)
        self.transition = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(transition_layers - 1))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.transition.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_params(self) -> tuple[Tensor, ...]:
        return tuple(p for linear in self.transition for p in (linear.weight, linear.bias))  # V_2, c_2, ...

    def step(self, gx: Tensor, gh: Tensor | None, state: RNNState, *vc: Tensor):  # gx, gh (B, H)
        z = torch.tanh(gx if gh is None else gx + gh)
        zs = [z]
        for V, c in zip(vc[::2], vc[1::2]):
            z = torch.tanh(F.linear(z, V, c))
            zs.append(z)
        return RNNState(z), tuple(zs)

    def step_backward(self, dstate: RNNState, zs: tuple, *vc: Tensor):
        dpre = dstate.h * (1 - zs[-1] * zs[-1])
        dextras = []
        for k in reversed(range(1, len(zs))):  # the layer from zs[k-1] to zs[k] has V = vc[2(k-1)]
            V = vc[2 * (k - 1)]
            dextras[:0] = [dpre.t() @ zs[k - 1], dpre.sum(0)]  # dV_k, dc_k
            dpre = (dpre @ V) * (1 - zs[k - 1] * zs[k - 1])
        return dpre, dpre, RNNState(None), tuple(dextras)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, transition_layers={self.transition_layers}"


class DeepOutputState(NamedTuple):
    """State of a deep-output cell: h the output (the deep output MLP of s), s the recurrent state."""

    h: Tensor
    s: Tensor


class DeepOutputCell(Cell):
    """DOT-RNN: a deep transition, then an MLP of `output_layers` tanh layers from the state to the output
    (Pascanu et al. 2014, section 3.2.1 and Figure 2 (b*)).

        s_t = DT(x_t, s_{t-1})                          a DeepTransitionCell (transition_layers=1: DO-RNN)
        h_t = tanh(O_K ... tanh(O_1 s_t + d_1) ... + d_K)   O_k (H, H), d_k (H,): output.{k-1}

    The layer emits h_t (then a model's decoder reads it, the paper's final softmax layer); the recurrence
    carries s_t. State: DeepOutputState(h, s), each (B, H). It runs on the autograd backend.
    """

    state_type = DeepOutputState

    def __init__(self, input_size: int, hidden_size: int, transition_layers: int = 2, output_layers: int = 1,
                 weight_drop: float = 0.0):
        super().__init__(input_size, hidden_size)
        if not isinstance(output_layers, int) or output_layers < 1:
            raise ValueError(f"output_layers must be a positive int, got {output_layers!r}")
        self.transition = DeepTransitionCell(input_size, hidden_size, transition_layers, weight_drop=weight_drop)
        self.output = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in range(output_layers))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.output.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def weight_drop(self) -> float:  # DropConnect on the transition's W
        return self.transition.weight_drop

    def forward(self, x: Tensor, state: DeepOutputState) -> DeepOutputState:  # x (B, I); h, s (B, H)
        s = self.transition(x, RNNState(state.s)).h
        h = s
        for linear in self.output:
            h = torch.tanh(linear(h))
        return DeepOutputState(h, s)
