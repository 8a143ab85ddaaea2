"""The LSTM layer's time loop in C++ (lstm.cpp): the `bptt` backend's fast path for a plain LSTMCell on CPU.

It computes what engine.BPTT computes by looping LSTMCell.step / step_backward (the same equations, in
the cell's docstring), but each step is one product and one fused pointwise loop instead of a dozen
torch calls from Python. Under autocast the products run in bfloat16 and the states in float32, as on
the Python path. Key: T time, B batch, H hidden, G = 4H.
"""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent import kernels, native
from recurrent.cells.base import Cell, ProjectedCell
from recurrent.cells.lstm import LSTMCell
from recurrent.state import LSTMState

# (state dtype, product dtype) pairs the kernel is compiled for
DTYPES = {(torch.float32, torch.float32), (torch.float32, torch.bfloat16), (torch.float64, torch.float64)}


class LSTMLoop(torch.autograd.Function):
    """gx (T, B, G) in W's dtype, W (G, H), bias (G,), h0, c0 (B, H) -> h, c at every step, each (T, B, H)."""

    @staticmethod
    def forward(ctx, gx: Tensor, W: Tensor, bias: Tensor, h0: Tensor, c0: Tensor):
        # oneDNN products where kernels.linear uses them too: its bfloat16 kernels need AVX-512 or AVX-NE-CONVERT
        # and throw elsewhere, where the kernel calls at::mm instead (bfloat16 emulated through float32)
        ctx.onednn = kernels.uses_onednn(W)
        with torch.autocast("cpu", enabled=False):  # the kernel picks its own dtypes
            h, c, h_low, act = native.load().lstm_forward(gx, W, bias, h0, c0, ctx.onednn)  # h, c (T+1, B, H)
        ctx.save_for_backward(W, c, h_low, *act)  # act: T gate activations, each (B, G)
        return h[1:], c[1:]

    @staticmethod
    def backward(ctx, dh: Tensor, dc: Tensor):  # (T, B, H) each: dL/dh_t, dL/dc_t from outside
        W, c, h_low, *act = ctx.saved_tensors
        dgx, dW, db, dh0, dc0 = native.load().lstm_backward(dh, dc, W, c, h_low, act, ctx.onednn)
        return dgx, dW, db, dh0, dc0


# The methods that make LSTMCell's equations (and the class that defines each): a subclass keeps the C++ loop
# while it overrides none of them, or declares `same_equations = True` (its overrides compute the same values)
EQUATIONS = {"step": LSTMCell, "step_backward": LSTMCell, "forward": Cell, "project_input": ProjectedCell,
             "recurrence": ProjectedCell, "extra_params": Cell}


def is_plain_lstm(cell) -> bool:
    """An LSTMCell whose equations are LSTMCell's own: a subclass that overrides none of them (or declares
    `same_equations = True`), with nothing replaced on the instance and no extra parameters."""
    return isinstance(cell, LSTMCell) and not_plain_because(cell) is None


def not_plain_because(cell) -> str | None:
    """Why the C++ loop cannot stand in for this LSTMCell's equations ('MyLSTM overrides step'); None if it can."""
    name = type(cell).__name__
    if type(cell) is not LSTMCell and not getattr(type(cell), "same_equations", False):
        changed = [m for m, owner in EQUATIONS.items() if getattr(type(cell), m) is not getattr(owner, m)]
        if changed:
            return f"{name} overrides {', '.join(changed)}; set same_equations = True if it keeps LSTMCell's"
    replaced = [m for m in EQUATIONS if m in vars(cell)]  # cell.step = ... on the instance
    if replaced:
        return f"{name} has {', '.join(replaced)} replaced on the instance"
    if cell.extra_params():
        return f"{name} has extra parameters"
    return None


def available(cell) -> bool:
    """True if the native loop can run this cell on CPU: a plain LSTMCell, and the kernel built and loaded."""
    return is_plain_lstm(cell) and native.load() is not None


def runs(cell, device: str, state_dtype: torch.dtype | None, product_dtype: torch.dtype) -> bool:
    """True if the native loop runs this cell: available, on CPU, in dtypes it is built for (recurrent.backends
    asks, for each call)."""
    return available(cell) and device == "cpu" and (state_dtype, product_dtype) in DTYPES


def lstm_loop(cell: LSTMCell, x: Tensor, state: LSTMState, W: Tensor) -> tuple[Tensor, Tensor]:
    """x (T, B, I) -> (h, c) at every step, each (T, B, H). W is the cell's W_hh, already in the products' dtype.

    Both biases are added inside the loop, in the states' dtype: more exact than in a bfloat16 gx, and the
    loop's db serves b_ih too (no second sum of dG over T and B)."""
    gx = kernels.project(x, cell.weight_ih, None).to(W.dtype).contiguous()  # (T, B, G): U x_t for all t
    if cell.bias_ih is None:
        bias = gx.new_zeros(gx.shape[-1], dtype=state.h.dtype)
    else:
        bias = (cell.bias_ih + cell.bias_hh).to(state.h.dtype)  # (G,)
    return LSTMLoop.apply(gx, W, bias, state.h, state.c)
