"""The LayerNorm LSTM layer's time loop in C++ (gru.cpp): the `bptt` backend's fast path for a plain
LayerNormLSTMCell on CPU.

It computes what engine.BPTT computes by looping LayerNormLSTMCell.step / step_backward (the same equations, in
the cell's docstring): per step one product, then per row the layer norms of W h_{t-1} and of c_t and the gates in
a few fused loops. The input side, LN_x(U x_t) for all t, stays with autograd, as on the Python path. Under
autocast the products run in bfloat16 and the states in float32. Key: T time, B batch, H hidden, G = 4H.
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
    """gx (T, B, G) in W's dtype, W (G, H), γ_h (G,), γ_c, β_c (H,), h0, c0 (B, H) -> h, c at every step, (T, B, H)."""

    @staticmethod
    def forward(ctx, gx: Tensor, W: Tensor, g_h: Tensor, g_c: Tensor, b_c: Tensor, h0: Tensor, c0: Tensor):
        ctx.onednn = kernels.uses_onednn(W)  # as in LSTMLoop: oneDNN's products where kernels.linear uses them
        with torch.autocast("cpu", enabled=False):  # the kernel picks its own dtypes
            h, c, h_low, act = native.load().layernorm_lstm_forward(gx, W, g_h, g_c, b_c, h0, c0, EPS, ctx.onednn)
        ctx.save_for_backward(W, g_h, g_c, c, h_low, *act)  # act: T tensors (B, 10H + 2), see gru.cpp
        return h[1:], c[1:]

    @staticmethod
    def backward(ctx, dh: Tensor, dc: Tensor):  # (T, B, H) each: dL/dh_t, dL/dc_t from outside
        W, g_h, g_c, c, h_low, *act = ctx.saved_tensors
        # dgx, dW, dγ_h, dγ_c, dβ_c, dh0, dc0
        return native.load().layernorm_lstm_backward(dh, dc, W, g_h, g_c, c, h_low, act, ctx.onednn)


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
    """x (T, B, I) -> (h, c) at every step, each (T, B, H). W is the cell's W_hh, already in the products' dtype."""
    gx = cell.project_input(x).to(W.dtype).contiguous()  # (T, B, G): LN_x(U x_t) for all t, through autograd
    g_h, g_c, b_c = (p.to(state.h.dtype) for p in cell.extra_params())
    return LayerNormLSTMLoop.apply(gx, W, g_h, g_c, b_c, state.h, state.c)
