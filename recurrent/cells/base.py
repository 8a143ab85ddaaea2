"""The cell protocol: one time step with an explicit state in and out.

    state_t = cell(x_t, state_{t-1})          # x_t (B, I); every state field (B, H)

A cell never stores state on itself and never loops over time; the unroll engine
(`recurrent.engine`) does the looping. That split is what lets one engine serve every
cell, and lets every cell run stacked, bidirectional and on padded batches.

Required of every cell
----------------------
    input_size, hidden_size : int
    state_type              : a NamedTuple class; first field `h` (the output), every field (B, H)
    forward(x, state)       : one step, differentiable by autograd -> new state

A cell with only these runs on the `autograd` backend (a plain loop over `forward`).

Optional: the fast path (the `bptt` backend)
--------------------------------------------
Classic cells compute pre-activations as two additive halves,

    gx_t = U x_t + b_ih          (G = gates * H values; no dependence on the past)
    gh_t = W s_{t-1} + b_hh      (the recurrence)

and then a pointwise update. A cell that exposes these pieces runs on our BPTT engine,
which does U x_t for all t as one matrix product before the loop and sums
dW = sum_t dgh_tᵀ s_{t-1} as one matrix product after it:

    project_input(x)                      x (T, B, I) -> gx (T, B, G)
    weight_hh, bias_hh                    W (G, H) and b_hh (G,), or None if the cell has no matrix W
    extra_params()                        other recurrent parameters (peepholes, IndRNN's u); default ()
    step(gx_t, gh_t, state, *extras)      -> (new_state, saved)   the pointwise part; gh_t is None if no W
    step_backward(dstate, saved, *extras) -> (dgx_t, dgh_t, dstate_prev, dextras)

A cell whose step reads gx_t and gh_t only through their sum gx_t + gh_t (LSTM, Elman) sets
`sums_halves = True` and accepts gh_t = None with the whole sum in gx_t; generation then does one
product [x_t, s_{t-1}] [U W]ᵀ per layer instead of two.

`step_backward` receives dL/d(new state) and returns dL/d(gx_t), dL/d(gh_t), the part of
dL/d(state_{t-1}) that does not pass through W (its `h` may be None when h_{t-1} only
reaches the step through W), and a tuple of gradients for `extra_params()`. A cell that
defines `step` but not `step_backward` still gets the batched input projection on the
`autograd` backend.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent import kernels
from recurrent.state import RNNState


class Cell(nn.Module):
    """Base class for cells. See the module docstring for the protocol."""

    state_type: type = RNNState
    sums_halves: bool = False  # step uses gx + gh only, and takes gh=None with the sum in gx

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size

    # --- protocol -----------------------------------------------------------------
    def init_state(self, batch_size: int, like: Tensor) -> NamedTuple:
        """Zeros of the right shape, device and dtype; every field (B, H)."""
        zeros = like.new_zeros(batch_size, self.hidden_size)
        return self.state_type(*(zeros for _ in self.state_type._fields))

    def recurrence(self) -> tuple[Tensor | None, Tensor | None]:
        """(W, b_hh) for the engine's gh_t = s_{t-1} Wᵀ + b_hh; (None, None) if the cell has no matrix W."""
        return getattr(self, "weight_hh", None), getattr(self, "bias_hh", None)

    def extra_params(self) -> tuple[Tensor, ...]:
        return ()

    def forward(self, x: Tensor, state: NamedTuple) -> NamedTuple:  # x (B, I)
        """One step. Cells with `step` get this for free; others must override it."""
        if not self.has_step():
            raise NotImplementedError(f"{type(self).__name__} must define forward(x, state) or step(...)")
        gx = self.project_input(x.unsqueeze(0))[0]  # (B, G)
        W, b_hh = self.recurrence()
        gh = None if W is None else F.linear(state.h, W, b_hh)
        return self.step(gx, gh, state, *self.extra_params())[0]

    def project_input(self, x: Tensor) -> Tensor:  # x (T, B, I) -> (T, B, G)
        raise NotImplementedError

    def step(self, gx: Tensor, gh: Tensor | None, state: NamedTuple, *extras: Tensor):
        raise NotImplementedError

    def step_backward(self, dstate: NamedTuple, saved, *extras: Tensor):
        raise NotImplementedError

    # --- what this cell offers ---------------------------------------------------------
    def has_step(self) -> bool:
        """True if the cell splits into project_input + step (batched input projection)."""
        return _overrides(self, "step") and _overrides(self, "project_input")

    def has_backward(self) -> bool:
        """True if the cell also supplies its hand-derived backward step (the bptt backend)."""
        return self.has_step() and _overrides(self, "step_backward")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


def _overrides(cell: Cell, name: str) -> bool:
    return getattr(type(cell), name) is not getattr(Cell, name)


class ProjectedCell(Cell):
    """A cell with torch.nn's parameter layout: pre-activations U x_t + b_ih + W s_{t-1} + b_hh.

    Parameters (G = num_gates * H, gate blocks stacked in torch.nn's order):
        weight_ih (G, I) = U      weight_hh (G, H) = W      bias_ih, bias_hh (G,) = b split in two

    weight_drop: DropConnect on W in training mode (Wan et al. 2013, as AWD-LSTM uses it). The mask
    is drawn each time `recurrence()` is called: once per sequence by every layer backend, so the
    same dropped W serves all time steps. (Stepping the cell by hand draws one per step.)
    """

    num_gates: int = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, weight_drop: float = 0.0):
        super().__init__(input_size, hidden_size)
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop!r}")
        self.weight_drop = weight_drop
        G = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(G)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(G)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight, as torch.nn does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def recurrence(self) -> tuple[Tensor, Tensor | None]:
        W = self.weight_hh
        if self.weight_drop and self.training:
            W = F.dropout(W, self.weight_drop, training=True)  # DropConnect, rescaled by 1/(1-p)
        return W, self.bias_hh

    def project_input(self, x: Tensor) -> Tensor:  # (T, B, I) -> (T, B, G)
        return kernels.project(x, self.weight_ih, self.bias_ih)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", weight_drop={self.weight_drop}" if self.weight_drop else "")
