"""The LayerNorm GRU cell: layer normalisation (Ba, Kiros & Hinton 2016) on the GRU's gate pre-activations.

    layer = rc.Recurrent(LayerNormGRUCell, 32, 64, num_layers=2)    # runs on bptt: the backward step is below
    recurrent train lm --cell lngru

Key: B batch, I input, H hidden.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recurrent import kernels
from recurrent.cells.base import ProjectedCell
from recurrent.cells.layernorm_lstm import EPS, _normalize, _normalize_backward
from recurrent.state import RNNState


class LayerNormGRUCell(ProjectedCell):
    """A GRU step with each projection layer-normalised, as LayerNormLSTMCell does for the LSTM.

        a_t = LN(U x_t; γ_x, b)          e_t = LN(W s_{t-1}; γ_h, β_h)     both 3H, blocks [r; z; n]
        r_t = σ(a_r + e_r),  z_t = σ(a_z + e_z)
        n_t = tanh(a_n + r_t ⊙ e_n)                                         β_h's n block is torch's b_hn
        s_t = (1 - z_t) ⊙ n_t + z_t ⊙ s_{t-1}                               (s_t is called h)

    LN(v; γ, β) = γ ⊙ (v - mean v)/σ(v) + β over the 3H features. U = weight_ih (3H, I), W = weight_hh (3H, H),
    no separate biases: b is ln_x.bias, β_h is ln_h_bias. State: RNNState(h) (B, H).

    Backward (the GRU's, then LN's), with ê = (W s_{t-1} - mean)/σ:
        dn = dh ⊙ (1-z),  dpre_n = dn ⊙ (1-n²),  dz = dh ⊙ (s_{t-1} - n),  dr = dpre_n ⊙ e_n
        da = [dr ⊙ r(1-r); dz ⊙ z(1-z); dpre_n]     de = [same r, z blocks; dpre_n ⊙ r]
        dγ_h = Σ_B de ⊙ ê,  dβ_h = Σ_B de,  dgh = (dê - mean dê - ê ⊙ mean(dê ⊙ ê)) / σ  with dê = de ⊙ γ_h
        ds_{t-1} (direct) = dh ⊙ z;  the part through W is the engine's
    """

    num_gates = 3
    state_type = RNNState
    bptt_min = 0  # the hand-derived backward beats autograd at every size measured (recurrent/backends.py)

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0):
        super().__init__(input_size, hidden_size, bias=False, weight_drop=weight_drop)
        G = 3 * hidden_size
        self.ln_x = nn.LayerNorm(G, eps=EPS)  # γ_x, and the cell's bias b
        self.ln_h_weight = nn.Parameter(torch.ones(G))  # γ_h
        self.ln_h_bias = nn.Parameter(torch.zeros(G))  # β_h

    def extra_params(self) -> tuple[Tensor, ...]:
        return self.ln_h_weight, self.ln_h_bias

    def project_input(self, x: Tensor) -> Tensor:  # (T, B, I) -> (T, B, 3H)
        return self.ln_x(kernels.project(x, self.weight_ih, None))

    def step(self, gx: Tensor, gh: Tensor, state: RNNState, g_h: Tensor, b_h: Tensor):  # gx, gh (B, 3H)
        H = self.hidden_size
        nh, sh = _normalize(gh)  # (B, 3H), (B, 1)
        e = nh * g_h + b_h  # LN(W s_{t-1}; γ_h, β_h)
        rz = torch.sigmoid(gx[:, : 2 * H] + e[:, : 2 * H])  # (B, 2H)
        r, z = rz[:, :H], rz[:, H:]
        e_n = e[:, 2 * H :]
        n = torch.tanh(torch.addcmul(gx[:, 2 * H :], r, e_n))
        h = torch.lerp(n, state.h, z)  # (1-z) n + z h_{t-1}
        return RNNState(h), (rz, n, e_n, state.h, nh, sh)

    def step_backward(self, dstate: RNNState, saved, g_h: Tensor, b_h: Tensor):
        rz, n, e_n, h_prev, nh, sh = saved
        H = self.hidden_size
        r, z = rz[:, :H], rz[:, H:]
        dh = dstate.h
        dpre_n = dh * (1 - z) * (1 - n * n)
        drz = torch.cat([dpre_n * e_n, dh * (h_prev - n)], dim=1) * rz * (1 - rz)  # (B, 2H)
        dgx = torch.cat([drz, dpre_n], dim=1)  # (B, 3H)
        de = torch.cat([drz, dpre_n * r], dim=1)  # dL/d LN(W s_{t-1})
        dgh = _normalize_backward(de * g_h, nh, sh)
        return dgx, dgh, RNNState(dh * z), ((de * nh).sum(0), de.sum(0))  # dγ_h, dβ_h
