"""torch.compile (Inductor) on every backend: the compiled layer's outputs, final state and gradients equal eager's.

Inside a compiled graph the bptt engine and the input projection use plain products (oneDNN's packed weights
cannot be graph constants), the C++ time loop gives way to the Python one, and the fused kernel runs outside the
graph (as torch.compile does for torch.nn.LSTM).

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch

import recurrent as rc


@pytest.mark.parametrize("backend", ["fused", "bptt", "autograd"])
def test_compiled_layer_matches_eager(backend):
    torch.manual_seed(0)
    layer = rc.LSTM(3, 4, backend=backend)
    x, n = torch.randn(2, 4, 3), torch.tensor([4, 3])
    out, state = layer(x, lengths=n)
    grads = torch.autograd.grad(out.sum() + state.c.sum(), list(layer.parameters()))
    compiled = torch.compile(layer)
    got_out, got_state = compiled(x, lengths=n)
    torch.testing.assert_close(got_out, out)
    for g, e in zip(got_state, state):
        torch.testing.assert_close(g, e)
    got_grads = torch.autograd.grad(got_out.sum() + got_state.c.sum(), list(layer.parameters()))
    for g, e in zip(got_grads, grads):
        torch.testing.assert_close(g, e)
