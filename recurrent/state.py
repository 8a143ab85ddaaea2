"""Named recurrent states.

A cell's state is a NamedTuple of tensors, each (B, H). A layer's state is the same
NamedTuple with each field stacked over layers and directions, (L, D, B, H):

    state.h[layer, direction]      # (B, H); direction 0 = forward, 1 = backward
    state.h[-1, 0]                 # last layer, forward direction
    state.h[-1, 1]                 # last layer, backward direction (it has read x[len-1] ... x[0])

The first field is always `h`, the value a cell emits as its output at each step.
"""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class RNNState(NamedTuple):
    """State of an Elman or GRU cell: the hidden vector s_t (called h, as in torch)."""

    h: Tensor


class LSTMState(NamedTuple):
    """State of an LSTM cell: hidden h_t (the output) and memory cell c_t."""

    h: Tensor
    c: Tensor


def detach(state):
    """Cut the graph behind a state (truncated BPTT): same values, no history.

    Works on a layer's state and on nested ones, such as a model's tuple of layer states; None stays None.
    """
    if state is None or isinstance(state, Tensor):
        return None if state is None else state.detach()
    parts = [detach(s) for s in state]
    return type(state)(*parts) if hasattr(state, "_fields") else type(state)(parts)


def to_torch_state(state: NamedTuple):
    """(L, D, B, H) fields -> torch.nn's (L*D, B, H) layout: a tensor for RNN/GRU, an (h, c) tuple for LSTM."""
    flat = tuple(s.reshape(-1, *s.shape[2:]) for s in state)  # (L*D, B, H)
    return flat[0] if len(flat) == 1 else flat


def from_torch_state(hx, state_type: type, num_directions: int) -> NamedTuple:
    """torch.nn's (L*D, B, H) hidden state (tensor or (h, c) tuple) -> our named (L, D, B, H) state."""
    fields = (hx,) if isinstance(hx, Tensor) else tuple(hx)
    return state_type(*(s.reshape(-1, num_directions, *s.shape[1:]) for s in fields))
