"""The LayerNorm LSTM cell (Ba, Kiros & Hinton 2016, "Layer normalization", section 3.1)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recurrent import kernels
from recurrent.cells.base import ProjectedCell
from recurrent.state import LSTMState

EPS = 1e-5


def _normalize(x: Tensor) -> tuple[Tensor, Tensor]:
    """x̂ = (x - mean) / σ over the last dim, and σ (B, 1)."""
    mu = x.mean(-1, keepdim=True)
    sigma = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + EPS)
    return (x - mu) / sigma, sigma


def _normalize_backward(dxhat: Tensor, xhat: Tensor, sigma: Tensor) -> Tensor:
    """dL/dx from dL/dx̂ for x̂ = (x - mean) / σ."""
    return (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True)) / sigma


class LayerNormLSTMCell(ProjectedCell):
    """An LSTM step with layer normalisation of each projection and of the cell state.

        a_t = LN(U x_t; γ_x, b) + LN(W s_{t-1}; γ_h)         the 4H pre-activations [i; f; g; o]
        i, f, o = σ(a_i), σ(a_f), σ(a_o);   g = tanh(a_g)
        c_t = f ⊙ c_{t-1} + i ⊙ g
        s_t = o ⊙ tanh(LN(c_t; γ_c, β_c))                    (s_t is called h)

    LN(v; γ, β) = γ ⊙ (v - mean v)/σ(v) + β over the feature dim. U = weight_ih (4H, I), W = weight_hh (4H, H);
    the single bias b is ln_x.bias. The input side (LN of U x for all t at once) goes through autograd;
    the recurrent side has its hand-derived backward below, so the cell runs on the bptt backend. (The C++ loop,
    recurrent/native/layernorm_lstm.py, takes U x for all t and does LN_x inside the loop as well.)
    Backward of x̂ = (v - mean)/σ:  dv = (dx̂ - mean(dx̂) - x̂ ⊙ mean(dx̂ ⊙ x̂)) / σ.
    """

    num_gates = 4
    state_type = LSTMState

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0):
        super().__init__(input_size, hidden_size, bias=False, weight_drop=weight_drop)
        G = 4 * hidden_size
        self.ln_x = nn.LayerNorm(G, eps=EPS)  # γ_x, and the cell's bias b
        self.ln_h_weight = nn.Parameter(torch.ones(G))  # γ_h
        self.ln_c = nn.LayerNorm(hidden_size, eps=EPS)  # γ_c, β_c

    def extra_params(self) -> tuple[Tensor, ...]:
        return self.ln_h_weight, self.ln_c.weight, self.ln_c.bias

    def project_input(self, x: Tensor) -> Tensor:  # (T, B, I) -> (T, B, 4H)
        return self.ln_x(kernels.project(x, self.weight_ih, None))

    def step(self, gx: Tensor, gh: Tensor, state: LSTMState, g_h: Tensor, g_c: Tensor, b_c: Tensor):
        H = self.hidden_size
        nh, sh = _normalize(gh)  # (B, 4H), (B, 1)
        pre = gx + nh * g_h
        gates = torch.sigmoid(pre)  # i, f, o read from here
        g = torch.tanh(pre[:, 2 * H : 3 * H])
        i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
        c = f * state.c + i * g
        nc, sc = _normalize(c)
        tc = torch.tanh(nc * g_c + b_c)
        return LSTMState(o * tc, c), (gates, g, state.c, tc, nh, sh, nc, sc)

    def step_backward(self, dstate: LSTMState, saved, g_h: Tensor, g_c: Tensor, b_c: Tensor):
        gates, g, c_prev, tc, nh, sh, nc, sc = saved
        H = self.hidden_size
        i, f, o = gates[:, :H], gates[:, H : 2 * H], gates[:, 3 * H :]
        dh, dc = dstate
        dln_c = dh * o * (1 - tc * tc)  # dL/d LN(c)
        dc = dc + _normalize_backward(dln_c * g_c, nc, sc)
        dgates = torch.cat([dc * g, dc * c_prev, dc * i, dh * tc], dim=1)  # d[i, f, g, o]
        dpre = dgates * gates * (1 - gates)
        dpre[:, 2 * H : 3 * H] = dgates[:, 2 * H : 3 * H] * (1 - g * g)
        dgh = _normalize_backward(dpre * g_h, nh, sh)
        dextras = ((dpre * nh).sum(0), (dln_c * nc).sum(0), dln_c.sum(0))  # dγ_h, dγ_c, dβ_c
        return dpre, dgh, LSTMState(None, dc * f), dextras
