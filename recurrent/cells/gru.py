"""The GRU cell (Cho et al. 2014), in torch.nn.GRUCell's formulation."""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent.cells.base import ProjectedCell
from recurrent.state import RNNState


class GRUCell(ProjectedCell):
    """One GRU step (torch.nn.GRUCell's layout and gate order r, z, n).

        r_t = σ(U_r x_t + b_ir + W_r s_{t-1} + b_hr)            reset gate
        z_t = σ(U_z x_t + b_iz + W_z s_{t-1} + b_hz)            update gate
        n_t = tanh(U_n x_t + b_in + r_t ⊙ (W_n s_{t-1} + b_hn))  candidate
        s_t = (1 - z_t) ⊙ n_t + z_t ⊙ s_{t-1}                    (s_t is called h)

    U = weight_ih (3H, I), W = weight_hh (3H, H), stacked [r; z; n]; b_ih, b_hh (3H,)
    stay separate because b_hn sits inside the reset gate. State: RNNState(h) (B, H).

    Backward, with gh_n = W_n s_{t-1} + b_hn:
        dn = dh ⊙ (1-z),  dz = dh ⊙ (s_{t-1} - n),  ds_{t-1} (direct) = dh ⊙ z
        dpre_n = dn ⊙ (1-n²),  dr = dpre_n ⊙ gh_n
        dgx = [dr ⊙ r(1-r); dz ⊙ z(1-z); dpre_n]     dgh = [same r, z blocks; dpre_n ⊙ r]
    """

    num_gates = 3
    state_type = RNNState

    def step(self, gx: Tensor, gh: Tensor, state: RNNState):  # gx, gh (B, 3H)
        H = self.hidden_size
        gx, gh = gx.to(state.h.dtype), gh.to(state.h.dtype)  # bfloat16 under autocast: the step runs in h's dtype
        rz = torch.sigmoid(gx[:, : 2 * H] + gh[:, : 2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        gh_n = gh[:, 2 * H :]
        n = torch.tanh(torch.addcmul(gx[:, 2 * H :], r, gh_n))
        h = torch.lerp(n, state.h, z)  # (1-z) n + z h_{t-1}
        return RNNState(h), (rz, n, gh_n, state.h)

    def step_backward(self, dstate: RNNState, saved):
        rz, n, gh_n, h_prev = saved
        H = self.hidden_size
        r, z = rz[:, :H], rz[:, H:]
        dh = dstate.h
        dpre_n = dh * (1 - z) * (1 - n * n)
        drz = torch.cat([dpre_n * gh_n, dh * (h_prev - n)], dim=1) * rz * (1 - rz)  # (B, 2H)
        dgx = torch.cat([drz, dpre_n], dim=1)
        dgh = torch.cat([drz, dpre_n * r], dim=1)
        return dgx, dgh, RNNState(dh * z), ()
