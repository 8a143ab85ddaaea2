"""Shared-weight products for a user cell's plain loop: the cell's own nn.Linear weights packed once per sequence,
and their weight gradients summed over time as one product after the loop.

    seqs = shared.run(cell, x, state)     # x (T, B, I): what engine._loop returns, faster for a large cell on CPU

Key: T time, B batch, K a product's input features, N its output features.

A cell that writes only `forward` (docs/cells.md's peephole LSTM: `self.linear(torch.cat([x, h]))`) pays, per step,
for a generic (B, K) x (K, N) product forward and another backward, and for its weight gradient dW_t = g_tᵀ a_t: a
product with inner size B only, added into dW T times. torch.nn's fused LSTM pays none of these. Here, while the
loop runs, every `F.linear(a, W, b)` whose W is one of the cell's parameters (nn.Linear calls it) is taken over
(a TorchFunctionMode):

    forward:   a W̃ᵀ + b           W̃ = W packed once for oneDNN (recurrent.kernels.linear), as the bptt engine does
    backward:  da = g W̃           packed too; g_t and a_t are kept, and nothing is added into dW yet
    after the whole backward:  dW = Gᵀ A, db = Σ G      G (T*B, N), A (T*B, K): one product (`_Gather`)

`_Gather` hands W to every step; autograd runs its backward after every step's (each step depends on it), and it
sums exactly the steps that got a gradient. Values equal the plain loop's to float32 rounding (tests/test_shared.py
compares gradients in float64 with oneDNN off, and in float32 with it on).
recurrent/backends.py decides when this runs (float32 on a CPU with oneDNN, no autocast, B*H large enough).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

from recurrent import kernels


class _Products:
    """One weight's packed products (per batch size) and what its weight gradient is summed from."""

    def __init__(self, W: Tensor, bias: Tensor | None):
        self.W, self.bias = W.detach(), None if bias is None else bias.detach()
        self.forward, self.backward = {}, {}  # batch size -> packed product
        self.grads, self.inputs = [], []  # g_t (B, N), a_t (B, K) for each step that got a gradient

    def apply(self, a: Tensor) -> Tensor:  # (B, K) -> (B, N)
        B = a.shape[0]
        if B not in self.forward:
            self.forward[B] = kernels.linear(self.W, self.bias, B)
        return self.forward[B](a)

    def apply_backward(self, g: Tensor) -> Tensor:  # (B, N) -> (B, K)
        B = g.shape[0]
        if B not in self.backward:
            self.backward[B] = kernels.linear(self.W.t(), None, B)
        return self.backward[B](g)


class _Gather(torch.autograd.Function):
    """W, b -> views of them that every step uses; backward: dW = Gᵀ A and db = Σ G over the steps' kept g and a."""

    @staticmethod
    def forward(ctx, W: Tensor, bias: Tensor | None, products: _Products):
        ctx.products, ctx.has_bias = products, bias is not None
        return W.view_as(W), None if bias is None else bias.view_as(bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, dW_direct, db_direct):  # the steps hand their gradients to ctx.products instead
        p = ctx.products
        if not p.grads:
            return None, None, None
        G, A = torch.cat(p.grads), torch.cat(p.inputs)  # (T*B, N), (T*B, K)
        p.grads.clear(), p.inputs.clear()  # a second backward (retain_graph=True) keeps its own
        dW = G.t() @ A  # (N, K): Σ_t g_tᵀ a_t as one product
        return dW, G.sum(0) if ctx.has_bias else None, None


class _Linear(torch.autograd.Function):
    """One step's a W̃ᵀ + b: the packed product forward, da = g W̃ backward; g and a kept for _Gather."""

    @staticmethod
    def forward(ctx, a: Tensor, W: Tensor, bias: Tensor | None, products: _Products):
        ctx.save_for_backward(a)
        ctx.products = products
        return products.apply(a)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        (a,) = ctx.saved_tensors
        p = ctx.products
        p.grads.append(g), p.inputs.append(a)
        return p.apply_backward(g) if ctx.needs_input_grad[0] else None, None, None, None


def takes(W: Tensor) -> bool:
    """True if products with W are taken over: where they go through oneDNN (tests widen it to float64)."""
    return kernels.uses_onednn(W)


class _TakeOver(TorchFunctionMode):
    """Inside the loop: F.linear(a (B, K), W, b) with W one of the cell's parameters goes through _Linear."""

    def __init__(self, cell):
        super().__init__()
        self.params = {id(p) for p in cell.parameters()}
        self.gathered: dict[int, tuple] = {}  # id(W) -> (products, W view, b view)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear or func is torch._C._nn.linear:
            a, W = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if id(W) in self.params and a.dim() == 2 and a.dtype == W.dtype and takes(W):
                return self._linear(a, W, bias)
        return func(*args, **kwargs)

    def _linear(self, a: Tensor, W: Tensor, bias: Tensor | None) -> Tensor:
        key = (id(W), None if bias is None else id(bias))
        if key not in self.gathered:
            with torch._C.DisableTorchFunction():  # _Gather's own ops are not taken over
                products = _Products(W, bias)
                self.gathered[key] = (products, *_Gather.apply(W, bias, products))
        products, W_view, b_view = self.gathered[key]
        with torch._C.DisableTorchFunction():
            return _Linear.apply(a, W_view, b_view, products)


def run(cell, x: Tensor, state: NamedTuple) -> tuple[Tensor, ...]:
    """Run a cell that writes only forward over x (T, B, I) from `state`; every state field at every step (T, B, H)."""
    states = []
    with _TakeOver(cell):
        for t in range(x.shape[0]):
            state = cell(x[t], state)
            states.append(state)
    return tuple(torch.stack(field) for field in zip(*states))
