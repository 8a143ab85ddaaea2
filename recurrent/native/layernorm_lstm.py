"""The LayerNorm LSTM layer's time loop in C++ (gru.cpp): the `bptt` backend's fast path for a plain
LayerNormLSTMCell on CPU.

It computes what engine.BPTT computes by looping LayerNormLSTMCell.step / step_backward (the same equations, in
the cell's docstring): per step one product, then per row the layer norms of W h_{t-1} and of c_t and the gates in
a few fused loops. The input side U x_t for all t is one product through autograd, and its layer norm LN_x runs in
the loop (the Python path has autograd do both). Under autocast the products run in bfloat16 and the states in
float32. Key: T time, B batch, H hidden, G = 4H.
"""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent import kernels, native
from recurrent.cells.base import Cell, ProjectedCell
from recurrent.cells.layernorm_lstm import EPS, LayerNormLSTMCell
from recurrent.native.gru import not_plain_because
from recurrent.native.lstm import DTYPES
from recurrent.state import LSTMState


class LayerNormLSTMLoop(torch.autograd.Function):
    """ux (T, B, G) = U x_t for all t, in W's dtype; W (G, H); γ_x, β_x, γ_h (G,), γ_c, β_c (H,); h0, c0 (B, H)
    -> h, c at every step, (T, B, H). The input's layer norm γ_x LN(ux_t) + β_x runs inside the loop too."""

    @staticmethod
    def forward(ctx, ux: Tensor, W: Tensor, g_x: Tensor, b_x: Tensor, g_h: Tensor, g_c: Tensor, b_c: Tensor,
                h0: Tensor, c0: Tensor):
        ctx.onednn = kernels.uses_onednn(W)  # as in LSTMLoop: oneDNN's products where kernels.linear uses them
        params = [g_x, b_x, g_h, g_c, b_c]
        with torch.autocast("cpu", enabled=False):  # the kernel picks its own dtypes
            h, c, h_low, act = native.load().layernorm_lstm_forward(ux, W, params, h0, c0, EPS, ctx.onednn)
        ctx.save_for_backward(ux, W, *params, c, h_low, *act)  # act: T tensors (B, 10H + 4), see gru.cpp
        return h[1:], c[1:]

    @staticmethod
    def backward(ctx, dh: Tensor, dc: Tensor):  # (T, B, H) each: dL/dh_t, dL/dc_t from outside
        ux, W, *rest = ctx.saved_tensors
        params, (c, h_low), act = rest[:5], rest[5:7], rest[7:]
        # dux, dW, dγ_x, dβ_x, dγ_h, dγ_c, dβ_c, dh0, dc0
        return tuple(native.load().layernorm_lstm_backward(dh, dc, W, ux, params, c, h_low, act, ctx.onednn))


# The methods that make LayerNormLSTMCell's equations (and the class that defines each), as in gru.py
EQUATIONS = {"step": LayerNormLSTMCell, "step_backward": LayerNormLSTMCell, "forward": Cell,
             "project_input": LayerNormLSTMCell, "recurrence": ProjectedCell, "extra_params": LayerNormLSTMCell}


def is_plain_layernorm_lstm(cell) -> bool:
    """A LayerNormLSTMCell whose equations are its class's own: a subclass that overrides none of them (or
    declares `same_equations = True`), with nothing replaced on the instance."""
    return isinstance(cell, LayerNormLSTMCell) and not_plain_because(cell, LayerNormLSTMCell, EQUATIONS) is None


def available(cell) -> bool:
    """True if the native loop can run this cell on CPU: a plain LayerNormLSTMCell, and the kernel loaded."""
    return is_plain_layernorm_lstm(cell) and native.load() is not None


def runs(cell, device: str, state_dtype: torch.dtype | None, product_dtype: torch.dtype) -> bool:
    """True if the native loop runs this cell: available, on CPU, in dtypes it is built for."""
    return available(cell) and device == "cpu" and (state_dtype, product_dtype) in DTYPES


def layernorm_lstm_loop(cell: LayerNormLSTMCell, x: Tensor, state: LSTMState, W: Tensor) -> tuple[Tensor, Tensor]:
    """x (T, B, I) -> (h, c) at every step, each (T, B, H). W is the cell's W_hh, already in the products' dtype.
    The loop takes U x_t (one product for all t, through autograd) and does the cell's input layer norm itself."""
    ux = kernels.project(x, cell.weight_ih, None).to(W.dtype).contiguous()  # (T, B, G): U x_t for all t
    params = (cell.ln_x.weight, cell.ln_x.bias, *cell.extra_params())  # γ_x, β_x, γ_h, γ_c, β_c
    return LayerNormLSTMLoop.apply(ux, W, *(p.to(state.h.dtype) for p in params), state.h, state.c)
