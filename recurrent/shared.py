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
    backward:  da = g W̃           packed too; g_t and a_t are kept, and every 256 rows of them are summed into
               dW += Gᵀ A, db += Σ G     G (R, N), A (R, K): one product with inner size R >= 256 (`_Products.keep`)

The input's part of a product never waits on the recurrence, so it leaves the loop, as the built-in cells'
`project_input` does: a product of the step's input x_t, or of a `cat([x_t, r], 1)`, is split at x's columns,
[U V] = W, and x Uᵀ + b runs once for the whole sequence before the loop (with autograd: dU, db and dx are each one
product after it); only r Vᵀ is left per step. x_t is known by identity (the loop hands the cell xs[t] itself).
For the peephole LSTM at B32 T128 I=H=512 this halves the per-step products (training step 799 -> 689 ms, one
round, 2 cores; nn.LSTM 483).

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


def rows(tensors: list[Tensor], owner, name: str) -> Tensor:
    """torch.cat(tensors) (each (B, N)) into `owner`'s buffer `name`, kept for its next call of the same size: a
    fresh block of this size each time is fresh pages each time (a page fault per 4 KiB), a reused one is not."""
    R, N = sum(t.shape[0] for t in tensors), tensors[0].shape[1]
    buffers = owner.__dict__.setdefault("_rows", {})
    key = (name, R, N, tensors[0].dtype, tensors[0].device)
    if key not in buffers:
        buffers[key] = tensors[0].new_empty((R, N))
    return torch.cat(tensors, out=buffers[key])


class _Products:
    """One weight's packed products (per batch size), and its weight gradient summed while the backward runs."""

    ROWS = 256  # g_t and a_t rows summed into dW as one product: a GEMM with inner size >= 256 runs near peak

    def __init__(self, W: Tensor, bias: Tensor | None):
        self.W, self.bias = W.detach().contiguous(), None if bias is None else bias.detach()
        self.forward, self.backward = {}, {}  # batch size -> packed product
        self.grads, self.inputs = [], []  # g_t (B, N), a_t (B, K) not yet summed into dW
        self.dW = self.db = None  # (N, K), (N,): Σ g_tᵀ a_t and Σ g_t over the steps summed so far

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

    def keep(self, g: Tensor, a: Tensor) -> None:
        """A step's g and a; every ROWS rows they are summed into dW (no (T*B, N) copy of all of them at the end:
        a fresh buffer that size costs page faults, and holds memory the backward has no need of)."""
        self.grads.append(g), self.inputs.append(a)
        if sum(g.shape[0] for g in self.grads) >= self.ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.grads:
            return
        G, A = rows(self.grads, self, "g"), rows(self.inputs, self, "a")  # (R, N), (R, K)
        self.grads.clear(), self.inputs.clear()
        if self.dW is None:
            self.dW, self.db = G.t() @ A, G.sum(0)  # (N, K), (N,)
        else:
            self.dW.addmm_(G.t(), A)
            self.db += G.sum(0)

    def take(self) -> tuple[Tensor | None, Tensor | None]:
        """dW and db over every step that got a gradient, and a fresh start (a second backward sums its own)."""
        self.flush()
        dW, db, self.dW, self.db = self.dW, self.db, None, None
        return dW, db


class _Gather(torch.autograd.Function):
    """W, b -> views of them that every step uses; backward: dW = Σ g_tᵀ a_t and db = Σ g_t over the steps."""

    @staticmethod
    def forward(ctx, W: Tensor, bias: Tensor | None, products: _Products):
        ctx.products, ctx.has_bias = products, bias is not None
        return W.view_as(W), None if bias is None else bias.view_as(bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, dW_direct, db_direct):  # the steps hand their gradients to ctx.products instead
        dW, db = ctx.products.take()
        return dW, db if ctx.has_bias else None, None


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
        p.keep(g, a)
        return p.apply_backward(g) if ctx.needs_input_grad[0] else None, None, None, None


class _Halves(torch.autograd.Function):
    """W (N, K) -> W[:, :I], W[:, I:] as views; backward: one cat of the two gradients (two slices of W would each
    fill a zeroed (N, K) gradient and copy into it)."""

    @staticmethod
    def forward(ctx, W: Tensor, I: int):
        return W[:, :I], W[:, I:]

    @staticmethod
    @once_differentiable
    def backward(ctx, dU: Tensor | None, dV: Tensor | None):
        if dU is None and dV is None:
            return None, None
        return torch.cat([dU, dV], 1), None


class _Hoisted(torch.autograd.Function):
    """x (T, B, K), U (N, K), b (N,) -> T outputs (B, N): x_t Uᵀ + b for every step, computed as one product.
    Backward, from the T step gradients g_t, in blocks of ROWS rows: dU += Gᵀ X, db += Σ G, dx = G U, without
    stacking all of them first (a (T, B, N) buffer: as many page faults as copies, and memory the backward does
    not need)."""

    ROWS = _Products.ROWS

    @staticmethod
    def forward(ctx, x: Tensor, U: Tensor, bias: Tensor | None):
        ctx.save_for_backward(x, U)
        ctx.has_bias = bias is not None
        return F.linear(x, U, bias).unbind(0)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):  # T x (B, N)
        x, U = ctx.saved_tensors
        T, B = x.shape[0], x.shape[1]
        steps = max(1, _Hoisted.ROWS // max(B, 1))  # steps per block
        dx = x.new_empty(x.shape) if ctx.needs_input_grad[0] else None
        dU = x.new_zeros(U.shape) if ctx.needs_input_grad[1] else None
        db = x.new_zeros(U.shape[0]) if ctx.has_bias and ctx.needs_input_grad[2] else None
        for t0 in range(0, T, steps):
            G = rows(grads[t0:t0 + steps], ctx, "g")  # (R, N)
            if dU is not None:
                dU.addmm_(G.t(), x[t0:t0 + steps].reshape(-1, x.shape[2]))
            if db is not None:
                db += G.sum(0)
            if dx is not None:
                torch.mm(G, U, out=dx[t0:t0 + steps].view(-1, x.shape[2]))
        return dx, dU, db


def takes(W: Tensor) -> bool:
    """True if products with W are taken over: where they go through oneDNN (tests widen it to float64)."""
    return kernels.uses_onednn(W)


CATS = (torch.cat, torch.concat, torch.concatenate)


class LinearMode(TorchFunctionMode):
    """A mode that is shown every torch.cat (`on_cat`, after it ran) and every F.linear(a, W, b) whose W is one of
    the ids in `self.params` (`on_linear`: its result, or None to let the product run as written). nn.Linear calls
    F.linear, so a cell's own nn.Linear products are seen too; traced.py's tracer is the other user."""

    params: set | dict

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in CATS:
            result = func(*args, **kwargs)
            tensors = args[0] if args else kwargs.get("tensors", kwargs.get("arrays", ()))
            self.on_cat(result, tensors, args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", 0)))
            return result
        if func is F.linear or func is torch._C._nn.linear:
            a, W = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if id(W) in self.params:
                result = self.on_linear(a, W, bias)
                if result is not None:
                    return result
        return func(*args, **kwargs)

    def on_cat(self, result: Tensor, tensors, dim: int) -> None:
        pass

    def on_linear(self, a: Tensor, W: Tensor, bias: Tensor | None) -> Tensor | None:
        return None


class _TakeOver(LinearMode):
    """Inside the loop, for W one of the cell's parameters:

        F.linear(x_t, W, b)                  -> (x Wᵀ + b)[t]: one product over the whole sequence, before the loop
        F.linear(cat([x_t, r], 1), W, b)     -> (x Uᵀ + b)[t] + r Vᵀ, with [U V] = W split at x's width: the input
                                                projection hoisted out of the loop, as the built-in cells have it
        F.linear(a (B, K), W, b), any other  -> through _Linear (packed)

    x_t is the step's input, known by identity: the loop hands the cell xs[t] itself. A cat is remembered (for
    the step it was made in) only when it starts with x_t along the features."""

    def __init__(self, cell, x: Tensor):
        super().__init__()
        self.params = {id(p) for p in cell.parameters()}
        self.gathered: dict[tuple, tuple] = {}  # (id(W), id(b), first column) -> (products, W view, b view)
        self.x = x  # (T, B, I): the layer's whole input
        self.hoisted: dict[tuple, tuple] = {}  # (id(W), id(b), columns) -> T x (B, N)
        self.x_t, self.t = None, 0
        self.cats: dict[int, tuple] = {}  # id(cat result) -> (result, the tensors after x_t), this step's

    def step(self, t: int, x_t: Tensor) -> None:
        self.t, self.x_t = t, x_t
        self.cats.clear()

    def on_linear(self, a: Tensor, W: Tensor, bias: Tensor | None) -> Tensor | None:
        if a.dim() != 2:
            return None
        if a is self.x_t:
            return self._hoist(W, bias, None)[self.t]
        cat = self.cats.get(id(a))
        if cat is not None and cat[0] is a:
            return self._split(W, bias, cat[1])
        return self._linear(a, W, bias, 0) if self._packs(a, W) else None

    def on_cat(self, result: Tensor, tensors, dim: int) -> None:
        if (self.x_t is not None and isinstance(tensors, (list, tuple)) and len(tensors) > 1
                and tensors[0] is self.x_t and self.x_t.dim() == 2 and dim in (1, -1)):
            self.cats[id(result)] = (result, tuple(tensors[1:]))

    def _packs(self, a: Tensor, W: Tensor) -> bool:  # a per-step product that goes through _Linear
        return a.dtype == W.dtype and takes(W) and not torch.is_autocast_enabled(a.device.type)

    def _hoist(self, W: Tensor, bias: Tensor | None, columns: int | None) -> tuple:
        """T x (B, N): x W[:, :columns]ᵀ + b for every step at once, with autograd (dW, db and dx after the loop)."""
        key = (id(W), None if bias is None else id(bias), columns)
        if key not in self.hoisted:
            with torch._C.DisableTorchFunction():
                U = W if columns is None else self._halves(W, columns)[0]
                if torch.is_autocast_enabled(self.x.device.type):  # autocast's own product and its backward
                    self.hoisted[key] = F.linear(self.x, U, bias).unbind(0)
                else:
                    self.hoisted[key] = _Hoisted.apply(self.x, U, bias)
        return self.hoisted[key]

    def _halves(self, W: Tensor, columns: int) -> tuple[Tensor, Tensor]:
        """W[:, :columns], W[:, columns:] through _Halves, once per sequence (one gradient cat, not two fills)."""
        key = (id(W), "halves", columns)
        if key not in self.hoisted:
            with torch._C.DisableTorchFunction():
                self.hoisted[key] = _Halves.apply(W, columns)
        return self.hoisted[key]

    def _split(self, W: Tensor, bias: Tensor | None, rest: tuple) -> Tensor:
        """linear(cat([x_t, *rest], 1), W, b) = (x Uᵀ + b)[t] + cat(rest) Vᵀ."""
        I = self.x_t.shape[1]
        with torch._C.DisableTorchFunction():
            r = rest[0] if len(rest) == 1 else torch.cat(rest, 1)
            if self._packs(r, W):
                product = self._linear(r, W, None, I)
            else:
                product = F.linear(r, self._part(W, I))
            return self._hoist(W, bias, I)[self.t] + product

    def _part(self, W: Tensor, first: int) -> Tensor:
        """W[:, first:], made once per sequence; under autocast, cast once (autocast caches only whole leaves)."""
        key = (id(W), "part", first)
        if key not in self.hoisted:
            part = self._halves(W, first)[1]
            if torch.is_autocast_enabled(W.device.type):
                part = part.to(torch.get_autocast_dtype(W.device.type))
            self.hoisted[key] = part
        return self.hoisted[key]

    def _linear(self, a: Tensor, W: Tensor, bias: Tensor | None, first: int) -> Tensor:
        """a W[:, first:]ᵀ + b through _Linear."""
        key = (id(W), None if bias is None else id(bias), first)
        if key not in self.gathered:
            with torch._C.DisableTorchFunction():  # _Gather's own ops are not taken over
                part = W if first == 0 else self._halves(W, first)[1]
                products = _Products(part, bias)
                self.gathered[key] = (products, *_Gather.apply(part, bias, products))
        products, W_view, b_view = self.gathered[key]
        with torch._C.DisableTorchFunction():
            return _Linear.apply(a, W_view, b_view, products)


def run(cell, x: Tensor, state: NamedTuple) -> tuple[Tensor, ...]:
    """Run a cell that writes only forward over x (T, B, I) from `state`; every state field at every step (T, B, H)."""
    from recurrent.engine import keep_dtype  # (engine imports this module)

    states, xs, dtypes = [], x.unbind(0), tuple(f.dtype for f in state)  # unbind, not x[t]: see engine._loop
    with _TakeOver(cell, x) as mode:
        for t, x_t in enumerate(xs):
            mode.step(t, x_t)
            state = keep_dtype(cell(x_t, state), dtypes)
            states.append(state)
    return tuple(torch.stack(field) for field in zip(*states))
