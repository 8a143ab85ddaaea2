"""Tree cells against the papers' formulas written out gate by gate, and gradcheck in float64."""
from __future__ import annotations

import pytest
import torch

from recurrent.cells.tree import BinaryTreeLSTMCell, TreeRNNCell
from recurrent.state import LSTMState, RNNState


def test_tree_lstm_matches_tai_et_al_gate_by_gate():
    torch.manual_seed(0)
    H, I, N = 3, 4, 5
    cell = BinaryTreeLSTMCell(I, H).double()
    W, b = cell.compose_proj.weight, cell.compose_proj.bias  # (5H, 2H), (5H,)
    hl, hr, cl, cr = (torch.randn(N, H, dtype=torch.float64) for _ in range(4))
    out = cell.compose(LSTMState(hl, cl), LSTMState(hr, cr))

    def gate(k):  # W_k [h_l; h_r] + b_k, written with the left and right halves of W_k apart
        rows = slice(k * H, (k + 1) * H)
        return hl @ W[rows, :H].T + hr @ W[rows, H:].T + b[rows]

    i, f_l, f_r, o, u = (gate(k) for k in range(5))
    c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f_l) * cl + torch.sigmoid(f_r) * cr
    torch.testing.assert_close(out.c, c)
    torch.testing.assert_close(out.h, torch.sigmoid(o) * torch.tanh(c))

    x = torch.randn(N, I, dtype=torch.float64)
    U, bl = cell.leaf_proj.weight, cell.leaf_proj.bias
    i, o, u = (x @ U[k * H:(k + 1) * H].T + bl[k * H:(k + 1) * H] for k in range(3))
    leaf = cell.leaf(x)
    torch.testing.assert_close(leaf.c, torch.sigmoid(i) * torch.tanh(u))
    torch.testing.assert_close(leaf.h, torch.sigmoid(o) * torch.tanh(leaf.c))


def test_tree_lstm_forget_biases_start_at_one():
    cell = BinaryTreeLSTMCell(2, 4)
    assert torch.all(cell.compose_proj.bias[4:12] == 1.0)
    assert not torch.all(cell.compose_proj.bias[:4] == 1.0)


def test_recursive_nn_is_tanh_of_the_concatenated_children():
    torch.manual_seed(1)
    cell = TreeRNNCell(3, 2).double()
    hl, hr = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    W, b = cell.compose_proj.weight, cell.compose_proj.bias
    torch.testing.assert_close(cell.compose(RNNState(hl), RNNState(hr)).h, torch.tanh(hl @ W[:, :2].T + hr @ W[:, 2:].T + b))


@pytest.mark.parametrize("cell_type", [BinaryTreeLSTMCell, TreeRNNCell])
def test_gradcheck_leaf_then_compose(cell_type):
    torch.manual_seed(2)
    cell = cell_type(3, 2).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)

    def f(x, *params):
        leaves = cell.leaf(x)
        left = type(leaves)(*(s[:2] for s in leaves))
        right = type(leaves)(*(s[2:] for s in leaves))
        return tuple(cell.compose(left, right))

    assert torch.autograd.gradcheck(f, (x, *cell.parameters()))


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="hidden_size must be a positive int, got 0"):
        BinaryTreeLSTMCell(3, 0)
