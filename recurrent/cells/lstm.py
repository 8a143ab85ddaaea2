"""The LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate: Gers et al. 2000)."""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent.cells.base import ProjectedCell
from recurrent.state import LSTMState


class LSTMCell(ProjectedCell):
    """One LSTM step (torch.nn.LSTMCell's layout and gate order i, f, g, o).

        i_t = σ(U_i x_t + W_i s_{t-1} + b_i)      input gate
        f_t = σ(U_f x_t + W_f s_{t-1} + b_f)      forget gate
        g_t = tanh(U_g x_t + W_g s_{t-1} + b_g)   candidate
        o_t = σ(U_o x_t + W_o s_{t-1} + b_o)      output gate
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t           the additive memory path
        s_t = o_t ⊙ tanh(c_t)                      (s_t is called h)

    U = weight_ih (4H, I) and W = weight_hh (4H, H) stack the [i; f; g; o] blocks;
    b = bias_ih + bias_hh (4H,). State: LSTMState(h, c), each (B, H).

    Backward, given dh_t and dc_t (from later steps and from the output):
        do = dh ⊙ tanh(c_t)
        dc = dc_t + dh ⊙ o ⊙ (1 - tanh²(c_t))
        di = dc ⊙ g,  df = dc ⊙ c_{t-1},  dg = dc ⊙ i,  dc_{t-1} = dc ⊙ f
        dpre = [di ⊙ i(1-i); df ⊙ f(1-f); dg ⊙ (1-g²); do ⊙ o(1-o)]
    """

    num_gates = 4
    state_type = LSTMState
    sums_halves = True

    def step(self, gx: Tensor, gh: Tensor | None, state: LSTMState):  # gx, gh (B, 4H)
        H = self.hidden_size
        pre = gx if gh is None else gx + gh  # (B, 4H)
        gates = torch.sigmoid(pre)  # i, f, o are read from here; the g block is unused
        g = torch.tanh(pre[:, 2 * H : 3 * H])
        i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
        c = torch.addcmul(f * state.c, i, g)
        tc = torch.tanh(c)
        h = o * tc
        return LSTMState(h, c), (gates, g, state.c, tc)

    def step_backward(self, dstate: LSTMState, saved):
        gates, g, c_prev, tc = saved
        H = self.hidden_size
        i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
        dh, dc = dstate
        dc = torch.addcmul(dc, dh * o, 1 - tc * tc)
        dgates = torch.cat([dc * g, dc * c_prev, dc * i, dh * tc], dim=1)  # d[i, f, g, o] (B, 4H)
        dpre = dgates * gates * (1 - gates)  # σ' for i, f, o
        dpre[:, 2 * H : 3 * H] = dgates[:, 2 * H : 3 * H] * (1 - g * g)  # tanh' for g
        return dpre, dpre, LSTMState(None, dc * f), ()
