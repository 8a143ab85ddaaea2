"""The GRU layer's time loop in C++ (gru.cpp): the `bptt` backend's fast path for a plain GRUCell on CPU.

It computes what engine.BPTT computes by looping GRUCell.step / step_backward (the same equations, in the
cell's docstring, with torch.nn's r ⊙ (W_hn h + b_hn)), but each step is one product and one fused pointwise
loop instead of a dozen torch calls from Python. Under autocast the products run in bfloat16 and the states in
float32, as on the Python path. Key: T time, B batch, H hidden, G = 3H.
"""
from __future__ import annotations

import torch
from torch import Tensor

from recurrent import kernels, native
from recurrent.cells.base import Cell, ProjectedCell
from recurrent.cells.gru import GRUCell
from recurrent.native.lstm import DTYPES
from recurrent.state import RNNState


class GRULoop(torch.autograd.Function):
    """gx (T, B, G) in W's dtype, W (G, H), b_ih, b_hh (G,), h0 (B, H) -> h at every step (T, B, H)."""

    @staticmethod
    def forward(ctx, gx: Tensor, W: Tensor, b_ih: Tensor, b_hh: Tensor, h0: Tensor) -> Tensor:
        ctx.onednn = kernels.uses_onednn(W)  # as in LSTMLoop: oneDNN's products where kernels.linear uses them
        with torch.autocast("cpu", enabled=False):  # the kernel picks its own dtypes
            h, h_low, act = native.load().gru_forward(gx, W, b_ih, b_hh, h0, ctx.onednn)  # h (T+1, B, H)
        ctx.save_for_backward(W, h, h_low, *act)  # act: T tensors (B, 4H): r, z, n, W_hn h + b_hn
        return h[1:]

    @staticmethod
    def backward(ctx, dh: Tensor):  # (T, B, H): dL/dh_t from outside
        W, h, h_low, *act = ctx.saved_tensors
        return native.load().gru_backward(dh, W, h, h_low, act, ctx.onednn)  # dgx, dW, db_ih, db_hh, dh0


# The methods that make GRUCell's equations (and the class that defines each): a subclass keeps the C++ loop while
# it overrides none of them, or declares `same_equations = True` (as for LSTMCell, recurrent/native/lstm.py)
EQUATIONS = {"step": GRUCell, "step_backward": GRUCell, "forward": Cell, "project_input": ProjectedCell,
             "recurrence": ProjectedCell, "extra_params": Cell}


def is_plain_gru(cell) -> bool:
    """A GRUCell whose equations are GRUCell's own: a subclass that overrides none of them (or declares
    `same_equations = True`), with nothing replaced on the instance and no extra parameters."""
    return isinstance(cell, GRUCell) and not_plain_because(cell, GRUCell, EQUATIONS) is None


def not_plain_because(cell, cls: type, equations: dict) -> str | None:
    """Why a C++ loop written for `cls` cannot stand in for this cell's equations ('MyGRU overrides step'); None if
    it can. equations: the methods that make cls's equations -> the class that defines each."""
    name = type(cell).__name__
    if type(cell) is not cls and not getattr(type(cell), "same_equations", False):
        changed = [m for m, owner in equations.items() if getattr(type(cell), m) is not getattr(owner, m)]
        if changed:
            return f"{name} overrides {', '.join(changed)} (set same_equations = True if it keeps {cls.__name__}'s)"
    replaced = [m for m in equations if m in vars(cell)]  # cell.step = ... on the instance
    if replaced:
        return f"{name} has {', '.join(replaced)} replaced on the instance"
    if equations["extra_params"] is Cell and cell.extra_params():
        return f"{name} has extra parameters"
    return None


def available(cell) -> bool:
    """True if the native loop can run this cell on CPU: a plain GRUCell, and the kernel built and loaded."""
    return is_plain_gru(cell) and native.load() is not None


def runs(cell, device: str, state_dtype: torch.dtype | None, product_dtype: torch.dtype) -> bool:
    """True if the native loop runs this cell: available, on CPU, in dtypes it is built for (recurrent.backends
    asks, for each call)."""
    return available(cell) and device == "cpu" and (state_dtype, product_dtype) in DTYPES


def gru_loop(cell: GRUCell, x: Tensor, state: RNNState, W: Tensor) -> tuple[Tensor]:
    """x (T, B, I) -> (h,) at every step, (T, B, H). W is the cell's W_hh, already in the products' dtype.

    Both biases are added inside the loop, in the states' dtype (b_hn inside the reset gate)."""
    gx = kernels.project(x, cell.weight_ih, None).to(W.dtype).contiguous()  # (T, B, G): U x_t for all t
    if cell.bias_ih is None:
        b_ih = b_hh = gx.new_zeros(gx.shape[-1], dtype=state.h.dtype)
    else:
        b_ih, b_hh = cell.bias_ih.to(state.h.dtype), cell.bias_hh.to(state.h.dtype)  # (G,) each
    return (GRULoop.apply(gx, W, b_ih, b_hh, state.h),)
