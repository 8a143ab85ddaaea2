"""Tree cells: one composition step of a recursive network over a binary parse tree, with explicit state.

A sequence cell reads (x_t, s_{t-1}). A tree cell reads a word at a leaf, and its two children's states at an
inner node:

    state = cell.leaf(x)                    x (N, I) -> every field (N, H)
    state = cell.compose(left, right)       two states, every field (N, H) -> (N, H)

Like a sequence cell it never loops: walking the tree bottom-up, a whole batch of trees one level at a time, is
`recurrent.models.tree`'s job, as unrolling over time is the engine's. Gradients come from autograd.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recurrent.state import LSTMState, RNNState


def _check_sizes(input_size: int, hidden_size: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class TreeRNNCell(nn.Module):
    """The recursive neural network (Socher et al. 2011): a parent is a squashed map of its two children.

        leaf    h = tanh(U x + b_leaf)
        inner   h = tanh(W [h_l; h_r] + b)

    U = leaf.weight (H, I), W = compose.weight (H, 2H). State: RNNState(h), h (N, H).
    """

    state_type = RNNState

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.leaf_proj = nn.Linear(input_size, hidden_size)
        self.compose_proj = nn.Linear(2 * hidden_size, hidden_size)

    def leaf(self, x: Tensor) -> RNNState:  # x (N, I)
        return RNNState(torch.tanh(self.leaf_proj(x)))

    def compose(self, left: RNNState, right: RNNState) -> RNNState:  # fields (N, H)
        return RNNState(torch.tanh(self.compose_proj(torch.cat([left.h, right.h], dim=-1))))


class BinaryTreeLSTMCell(nn.Module):
    """The binary (N-ary, N = 2) Tree-LSTM of Tai et al. 2015 (§3.2): an LSTM whose memory adds up its
    children's, each through its own forget gate.

        [i; f_l; f_r; o; u] = W [h_l; h_r] + b             W (5H, 2H): each gate sees both children
        c = σ(i) ⊙ tanh(u) + σ(f_l) ⊙ c_l + σ(f_r) ⊙ c_r
        h = σ(o) ⊙ tanh(c)

    A leaf has no children and reads its word instead:
        [i; o; u] = U x + b_leaf,   c = σ(i) ⊙ tanh(u),   h = σ(o) ⊙ tanh(c)

    State: LSTMState(h, c), each (N, H). The forget biases start at 1, so that a fresh tree remembers.
    """

    state_type = LSTMState

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.leaf_proj = nn.Linear(input_size, 3 * hidden_size)
        self.compose_proj = nn.Linear(2 * hidden_size, 5 * hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) as torch.nn's LSTM, then forget biases 1."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        with torch.no_grad():
            self.compose_proj.bias[self.hidden_size:3 * self.hidden_size] = 1.0

    def leaf(self, x: Tensor) -> LSTMState:  # x (N, I)
        i, o, u = self.leaf_proj(x).chunk(3, dim=-1)  # each (N, H)
        c = torch.sigmoid(i) * torch.tanh(u)
        return LSTMState(torch.sigmoid(o) * torch.tanh(c), c)

    def compose(self, left: LSTMState, right: LSTMState) -> LSTMState:  # fields (N, H)
        pre = self.compose_proj(torch.cat([left.h, right.h], dim=-1))  # (N, 5H)
        i, f_l, f_r, o, u = pre.chunk(5, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f_l) * left.c + torch.sigmoid(f_r) * right.c
        return LSTMState(torch.sigmoid(o) * torch.tanh(c), c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"

