"""A cell that writes only `forward`, run by the bptt engine: its step traced once and compiled to C.

    layer = rc.Recurrent(PeepholeLSTMCell, 512, 512)   # the cell writes forward(x, state) in plain torch
    out, state = layer(x)                              # CPU float32: the first call traces and compiles (~1 s)
    print(layer.backend)                               # bptt (... its step traced and compiled to C ...)

Key: B batch, T time, I input, H hidden; Gx, Gh the widths of the step's input and recurrent products.

The cell's forward is split where the bptt engine splits a built-in cell (recurrent/cells/base.py):

    every F.linear(a, W, b) with W one of the cell's parameters (nn.Linear calls it), a one of
        x_t                 -> its columns of gx_t = x_t Uᵀ + b_x      (one product for the whole sequence)
        h_{t-1}             -> its columns of gh_t = h_{t-1} Wᵀ + b_h  (the engine's packed recurrent product)
        cat([x_t, h_{t-1}]) -> gx_t's columns + gh_t's: [U W] split at x's width, b on the input's side
    the rest                -> step(gx_t, gh_t, state, *extras): pointwise, with the parameters it reads (peepholes)

The rest is traced by make_fx into a graph of aten ops, and its vector-Jacobian product (torch.func.vjp) into a
second one; each becomes one C++ loop over the batch's rows and the hidden units, compiled with g++ (-O3, the
CPU's vector instructions, the native loops' branch-free exp) and called through ctypes. A step then costs one
call instead of a dozen eager ops, and its backward one call instead of autograd replaying them: the engine's
batched products are what is left, as for a built-in cell.

Every value in the step must be laid out in blocks of H columns: (B, m*H) rows, parameters of shape (m*H,) or
(R, m*H) (broadcast over rows, or selected and sliced by whole blocks), sums over the batch (a parameter's
gradient), Python scalars, and sums or means over a row's columns, (B, 1): a layer norm (F.layer_norm and
torch.var are decomposed into means) and its backward. Each such sum gets a loop over j of its own before the loop
that reads it, and the values it computes are kept for that row (a scratch buffer) so that nothing is computed
twice. A cell outside that (a product of something else, an op the generator has no C for, a value of another
width, randomness, statistics over the batch, a layer norm over more than the last dimension) is not traced:
`runner(cell, dtype)` returns the reason instead, and the layer names it in its backend's reason. Before a compiled
step is used it is checked against autograd of the cell's own forward, in float64 on random values (forward, and
gradients of x, the state and every parameter): a mismatch is refused too.

Under CPU bf16 autocast the engine runs the products in bfloat16 and the compiled step in float32, as for a
built-in cell. A trace is kept per cell instance and train/eval mode; a cell's Python attributes that change later
(a float read in forward) are not seen again. The compiled library is cached per user beside the native kernels
(recurrent/native: a private folder, nothing loaded that another user could write).
"""
from __future__ import annotations

import ctypes
import hashlib
import operator
import os
import subprocess
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from recurrent import hardware, native
from recurrent.cells.base import Cell
from recurrent.shared import LinearMode

aten = torch.ops.aten
DTYPES = {torch.float32: ("float", "f32"), torch.float64: ("double", "f64")}
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # cell -> {training: TracedCell or why not}


class Untraceable(Exception):
    """The cell's step cannot be traced and compiled; the message says why."""


# --- 1. the products: which F.linear calls the forward makes, on what ------------------------------------------

@dataclass
class Product:
    """One F.linear(a, W, b) of the cell's forward: `side` is 'x', 'h' or 'xh' (a = cat([x_t, h]))."""

    side: str
    weight: str  # the parameter's name in the cell
    bias: str | None
    width: int  # N, its output features
    x_at: int = 0  # its columns in gx (sides 'x', 'xh')
    h_at: int = 0  # its columns in gh (sides 'h', 'xh')


class _Linears(LinearMode):
    """While the cell's forward runs: every F.linear with a cell parameter as W, classified by its input; with
    `gx`, `gh` given, each returns its columns of them instead of computing the product."""

    def __init__(self, cell: Cell, x: Tensor, h: Tensor, gx: Tensor | None = None, gh: Tensor | None = None,
                 products: list[Product] | None = None, params: dict[str, Tensor] | None = None):
        super().__init__()  # params: what functional_call lends the cell in place of its own
        self.names = self.params = {id(p): n for n, p in (params or dict(cell.named_parameters())).items()}
        self.x, self.h, self.gx, self.gh = x, h, gx, gh
        self.products, self.seen = products if products is not None else [], 0
        self.cats: dict[int, tuple] = {}  # id(result) -> (result, side) for cat([x, h], 1)

    def on_cat(self, result: Tensor, tensors, dim: int) -> None:
        if (isinstance(tensors, (list, tuple)) and len(tensors) == 2 and tensors[0] is self.x
                and tensors[1] is self.h and dim in (1, -1)):
            self.cats[id(result)] = (result, "xh")

    def on_linear(self, a: Tensor, W: Tensor, bias: Tensor | None) -> Tensor:
        if a is self.x:
            side = "x"
        elif a is self.h:
            side = "h"
        elif id(a) in self.cats and self.cats[id(a)][0] is a:
            side = "xh"
        else:
            raise Untraceable(f"F.linear with {self.names[id(W)]} takes something other than x_t, state.h or "
                              "cat([x_t, state.h], 1)")
        if bias is not None and id(bias) not in self.names:
            raise Untraceable(f"F.linear with {self.names[id(W)]} has a bias that is not one of the cell's parameters")
        if self.gx is None:  # the probe: record it
            self.products.append(Product(side, self.names[id(W)], None if bias is None else self.names[id(bias)],
                                         W.shape[0]))
            return F.linear(a, W, bias)
        p = self.products[self.seen]
        self.seen += 1
        if p.weight != self.names[id(W)] or p.side != side:
            raise Untraceable("the cell's forward makes different products from one call to the next")
        xs = self.gx[:, p.x_at:p.x_at + p.width] if side in ("x", "xh") else None
        hs = self.gh[:, p.h_at:p.h_at + p.width] if side in ("h", "xh") else None
        return hs if xs is None else xs if hs is None else xs + hs


def _probe(cell: Cell, dtype: torch.dtype, B: int) -> list[Product]:
    """The cell's products, found by running its forward once on random values; their columns in gx and gh."""
    x = torch.randn(B, cell.input_size, dtype=dtype)
    state = cell.state_type(*(torch.randn(B, cell.hidden_size, dtype=dtype) for _ in cell.state_type._fields))
    mode = _Linears(cell, x, state.h)
    with torch.no_grad(), mode:
        cell(x, state)
    if not mode.products:
        raise Untraceable("its forward calls no F.linear (nn.Linear) with its own weights")
    x_at = h_at = 0
    for p in mode.products:
        if p.side in ("x", "xh"):
            p.x_at, x_at = x_at, x_at + p.width
        if p.side in ("h", "xh"):
            p.h_at, h_at = h_at, h_at + p.width
    return mode.products


# --- 2. the pointwise step and its backward, as graphs -------------------------------------------------------

class Graphs(NamedTuple):
    forward: torch.fx.GraphModule  # (gx, gh, *fields, *extras) -> new fields
    backward: torch.fx.GraphModule  # (gx, gh, *fields, *extras, *dfields) -> (dgx, dgh, *dfields_prev, *dextras)
    extras: list[str]  # the parameters and buffers the step reads, in order


def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """aten.native_layer_norm over the last dimension, as means over a row: what the generator compiles."""
    if len(normalized_shape) != 1:
        raise Untraceable(f"a layer norm over {list(normalized_shape)}, not over the last dimension alone")
    mean = x.mean(-1, keepdim=True)
    d = x - mean
    rstd = torch.rsqrt((d * d).mean(-1, keepdim=True) + eps)
    out = d * rstd
    out = out if weight is None else out * weight
    return out if bias is None else out + bias, mean, rstd


def _var(x, dim=None, *, correction=None, keepdim=False):
    """aten.var over the last dimension, as a mean over a row."""
    if dim is None or len(dim) != 1 or dim[0] % x.dim() != x.dim() - 1:
        raise Untraceable(f"a variance over dims {dim}, not over the last dimension alone")
    n, c = x.shape[-1], 1 if correction is None else correction
    d = x - x.mean(-1, keepdim=True)
    return (d * d).sum(-1, keepdim=keepdim) / (n - c)


DECOMPOSITIONS = {aten.native_layer_norm.default: _layer_norm, aten.var.correction: _var}


def _trace(cell: Cell, products: list[Product], dtype: torch.dtype, B: int) -> Graphs:
    from torch.fx.experimental.proxy_tensor import make_fx

    names = [n for n, _ in cell.named_parameters()] + [n for n, _ in cell.named_buffers()]
    values = dict(cell.named_parameters()) | dict(cell.named_buffers())
    n_fields = len(cell.state_type._fields)
    Gx = sum(p.width for p in products if p.side in ("x", "xh"))
    Gh = sum(p.width for p in products if p.side in ("h", "xh"))

    def step(x, gx, gh, *rest):
        fields, params = rest[:n_fields], dict(zip(names, rest[n_fields:]))
        state = cell.state_type(*fields)
        with _Linears(cell, x, state.h, gx, gh, products, params):
            new = torch.func.functional_call(cell, params, (x, state))
        return tuple(new)

    x = torch.randn(B, cell.input_size, dtype=dtype)
    gx, gh = torch.randn(B, Gx, dtype=dtype), torch.randn(B, Gh, dtype=dtype)
    fields = [torch.randn(B, cell.hidden_size, dtype=dtype) for _ in range(n_fields)]
    params = [values[n].detach().to(dtype) for n in names]
    try:
        graph = make_fx(torch.func.functionalize(step), DECOMPOSITIONS)(x, gx, gh, *fields, *params)  # pure ops
    except Untraceable:
        raise
    except Exception as e:  # noqa: BLE001 - anything the trace trips on is a reason not to trace
        raise Untraceable(f"make_fx could not trace its forward: {type(e).__name__}: {e}") from None
    graph.graph.eliminate_dead_code()
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    if placeholders[0].users:
        raise Untraceable("its forward uses x_t other than through an F.linear with its own weights")
    used = [names[i] for i, n in enumerate(placeholders[3 + n_fields:]) if n.users]
    unused = [n for n in placeholders[3 + n_fields:] if not n.users]
    for n in [placeholders[0], *unused]:
        graph.graph.erase_node(n)
    graph.recompile()
    extras = [values[n].detach().to(dtype) for n in used]

    def backward(gx, gh, *rest):
        inputs, cotangents = rest[:n_fields + len(used)], rest[n_fields + len(used):]
        _, vjp = torch.func.vjp(lambda *a: graph(*a), gx, gh, *inputs)
        return vjp(tuple(cotangents))

    dfields = [torch.randn(B, cell.hidden_size, dtype=dtype) for _ in range(n_fields)]
    try:
        back = make_fx(torch.func.functionalize(backward), DECOMPOSITIONS)(gx, gh, *fields, *extras, *dfields)
    except Exception as e:  # noqa: BLE001
        raise Untraceable(f"make_fx could not trace its step's backward: {type(e).__name__}: {e}") from None
    back.graph.eliminate_dead_code()
    return Graphs(graph, back, used)


# --- 3. C++ from a graph -------------------------------------------------------------------------------------

@dataclass
class _Value:
    """How a graph value is laid out: `rows` (it has the batch dimension) and R x m blocks of H columns."""

    rows: bool
    R: int  # parameter rows (1 for a row value or a 1-D parameter)
    m: int  # blocks of H along the last dimension
    scalar: bool = False  # one value for the whole step (a constant)
    rowscalar: bool = False  # one value per row, (B, 1) or (B,): a sum or mean over the row's columns

    @property
    def blocks(self) -> int:
        return self.R * self.m


@dataclass
class _Emitter:
    """C++ statements for one loop: every value at block k of column j (and row b, for row values)."""

    gen: _Generator
    pass_: str  # 'rows' (the step's loop over j), 'sum' (a row sum's loop before it), 'columns' (after the rows)
    lines: list[str] = field(default_factory=list)
    memo: dict = field(default_factory=dict)

    def __call__(self, node, k: int) -> str:
        if not isinstance(node, torch.fx.Node):
            return self.gen.literal(node)
        v = self.gen.layout.get(node)
        key = (node, 0 if v is not None and (v.scalar or v.rowscalar) else k)
        if key not in self.memo and key in self.gen.stored:  # computed by an earlier loop over this row: read it
            return self.gen.stored[key]
        if key not in self.memo:
            self.memo[key] = self.gen.expression(self, node, k)
        return self.memo[key]

    def let(self, expr: str, kind: str = "S") -> str:
        name = f"v{len(self.lines)}_{self.pass_[0]}"
        self.lines.append(f"const {kind} {name} = {expr};")
        return name


UNARY = {
    aten.logical_not.default: "(!{0})",
    aten.sigmoid.default: "sigmoid({0})", aten.tanh.default: "tanh_({0})", aten.exp.default: "exp_({0})",
    aten.neg.default: "(-{0})", aten.relu.default: "std::max({0}, S(0))", aten.log.default: "log_({0})",
    aten.log1p.default: "log1p_({0})", aten.erf.default: "erf_({0})",
    aten.sqrt.default: "std::sqrt({0})", aten.rsqrt.default: "(S(1) / std::sqrt({0}))",
    aten.reciprocal.default: "(S(1) / {0})", aten.abs.default: "std::abs({0})",
    aten.sgn.default: "S(({0} > S(0)) - ({0} < S(0)))", aten.sign.default: "S(({0} > S(0)) - ({0} < S(0)))",
}
BINARY = {
    aten.mul.Tensor: "({0} * {1})", aten.div.Tensor: "({0} / {1})",
    aten.sigmoid_backward.default: "({0} * {1} * (S(1) - {1}))",
    aten.tanh_backward.default: "({0} * (S(1) - {1} * {1}))",
    aten.maximum.default: "std::max({0}, {1})", aten.minimum.default: "std::min({0}, {1})",
    aten.gt.Scalar: "({0} > {1})", aten.lt.Scalar: "({0} < {1})", aten.ge.Scalar: "({0} >= {1})",
    aten.le.Scalar: "({0} <= {1})", aten.gt.Tensor: "({0} > {1})", aten.lt.Tensor: "({0} < {1})",
    aten.mul.Scalar: "({0} * {1})", aten.div.Scalar: "({0} / {1})",
    aten.eq.Scalar: "({0} == {1})", aten.ne.Scalar: "({0} != {1})", aten.ge.Tensor: "({0} >= {1})",
    aten.eq.Tensor: "({0} == {1})", aten.ne.Tensor: "({0} != {1})",
    aten.le.Tensor: "({0} <= {1})", aten.logical_and.default: "({0} && {1})", aten.logical_or.default: "({0} || {1})",
}
ACTIVATIONS = {aten.clamp.default, aten.silu.default, aten.silu_backward.default, aten.leaky_relu.default,
               aten.leaky_relu_backward.default, aten.softplus.default, aten.softplus_backward.default,
               aten.gelu.default, aten.gelu_backward.default}
PIECES = {operator.getitem, aten.slice.Tensor, aten.select.int, aten.cat.default, aten.select_backward.default,
          aten.slice_backward.default}
COMPARE = {aten.gt.Scalar, aten.lt.Scalar, aten.ge.Scalar, aten.le.Scalar, aten.gt.Tensor, aten.lt.Tensor,
           aten.ge.Tensor, aten.le.Tensor, aten.eq.Scalar, aten.ne.Scalar, aten.eq.Tensor, aten.ne.Tensor,
           aten.logical_and.default, aten.logical_or.default, aten.logical_not.default}
SAME = {aten.clone.default, aten.alias.default, aten.detach.default, aten.view.default, aten.reshape.default,
        aten._unsafe_view.default, aten.unsqueeze.default, aten.squeeze.dim, aten.squeeze.default,
        aten.expand.default, aten.lift_fresh_copy.default, aten.contiguous.default, aten._to_copy.default}
ZEROS = {aten.zeros_like.default, aten.new_zeros.default, aten.zeros.default}
# a value the same at every element: its C, or which argument holds it (empty_like then fill is how a decomposed
# 1 - s arrives)
CONSTANTS = {**{t: "S(0)" for t in ZEROS}, aten.ones_like.default: "S(1)", aten.fill.Scalar: 1,
             aten.full_like.default: 1, aten.full.default: 1, aten.scalar_tensor.default: 0}


KNOWN = {*UNARY, *BINARY, *SAME, *CONSTANTS, *ACTIVATIONS, *PIECES, aten.add.Tensor, aten.sub.Tensor,
         aten.add.Scalar, aten.sub.Scalar, aten.rsub.Scalar, aten.pow.Tensor_Scalar, aten.lerp.Scalar,
         aten.lerp.Tensor, aten.where.self, aten.threshold_backward.default, aten.split.Tensor,
         aten.split_with_sizes.default, aten.sum.dim_IntList, aten.mean.dim, aten.empty_like.default,
         aten.masked_fill.Scalar}


class _Generator:
    """C++ for one graph: a loop over rows b and columns j < H, then one over columns for sums over the batch."""

    def __init__(self, graph: torch.fx.GraphModule, H: int, B: int, name: str):
        self.graph, self.H, self.B, self.name = graph, H, B, name
        self.inputs = [n for n in graph.graph.nodes if n.op == "placeholder"]
        self.output = next(n for n in graph.graph.nodes if n.op == "output")
        calls = [n for n in graph.graph.nodes if n.op == "call_function"]
        for n in calls:
            if torch.Tag.nondeterministic_seeded in getattr(n.target, "tags", ()):
                raise Untraceable(f"its step draws random numbers ({n.target}): a trace would replay one draw")
        for n in calls:  # the first op without C, in the order the step runs them
            if n.target not in KNOWN:
                raise Untraceable(f"its step uses {n.target}, which the generator has no C for")
        self.sums: dict = {}  # sum-over-batch node -> its accumulator's index
        self.rowsums: dict = {}  # sum-over-a-row's-columns node -> its variable, computed in `preloops`
        self.preloops: list[str] = []
        self.stored: dict = {}  # (node, block) -> where a loop before the step's left it for this row: "sc[N + j]"
        self.layout: dict = {}
        for n in graph.graph.nodes:
            if n.op in ("placeholder", "call_function") and not isinstance(n.meta.get("val"), (list, tuple)):
                self.layout[n] = self._layout(n)

    def _layout(self, node) -> _Value:
        val = node.meta.get("val")
        if not isinstance(val, Tensor):
            raise Untraceable(f"{node.format_node()} is not a tensor")
        if val.dtype not in (torch.float32, torch.float64, torch.bool):
            raise Untraceable(f"{node.target} makes a {val.dtype} value")
        shape = tuple(val.shape)
        if shape == ():
            if node.target in ZEROS or node.target is aten.scalar_tensor.default:
                return _Value(False, 1, 1, scalar=True)
            raise Untraceable(f"{node.target} makes a 0-d tensor")
        if len(shape) in (1, 2) and shape[0] == self.B and shape[1:] in ((), (1,)):
            return _Value(True, 1, 1, rowscalar=True)
        if len(shape) > 2 or shape[-1] % self.H:
            raise Untraceable(f"{node.target} makes a value of shape {list(shape)}, not in blocks of H={self.H} "
                              "columns")
        m = shape[-1] // self.H
        if len(shape) == 2 and shape[0] == self.B:
            return _Value(True, 1, m)
        return _Value(False, shape[0] if len(shape) == 2 else 1, m)

    # -- expressions ----------------------------------------------------------------------------------------
    def literal(self, value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return f"S({float(value)!r})"
        raise Untraceable(f"an argument {value!r} the generator has no C for")

    def expression(self, emit: _Emitter, node, k: int) -> str:
        H, t, out = self.H, node.target, self.layout.get(node)
        if node.op == "placeholder":
            i = self.inputs.index(node)
            return f"r{i}[{k * H} + j]" if out.rows else f"p{i}[{k * H} + j]"
        args = node.args
        if t in CONSTANTS:
            value = CONSTANTS[t]
            return value if isinstance(value, str) else self.literal(args[value])
        if t in UNARY or t in BINARY:
            template = UNARY[t] if t in UNARY else BINARY[t]
            return emit.let(template.format(*self._operands(emit, node, out, k)), "bool" if t in COMPARE else "S")
        if t in (aten.add.Tensor, aten.sub.Tensor, aten.add.Scalar, aten.sub.Scalar):
            a, b = self._operands(emit, node, out, k)
            alpha = node.kwargs.get("alpha", 1)
            b = b if alpha == 1 else f"({self.literal(alpha)} * {b})"
            return emit.let(f"({a} {'+' if t in (aten.add.Tensor, aten.add.Scalar) else '-'} {b})")
        if t is aten.rsub.Scalar:
            (a, other), alpha = self._operands(emit, node, out, k), node.kwargs.get("alpha", 1)
            return emit.let(f"({other} - {self.literal(alpha)} * {a})")
        if t is aten.pow.Tensor_Scalar:  # the exponents a layer norm and its backward use, without a call to pow
            a, e = self._operands(emit, node, out, k)[0], args[1]
            powers = {1: a, 2: f"({a} * {a})", 3: f"({a} * {a} * {a})", -1: f"(S(1) / {a})",
                      -2: f"(S(1) / ({a} * {a}))", 0.5: f"std::sqrt({a})", -0.5: f"(S(1) / std::sqrt({a}))",
                      1.5: f"({a} * std::sqrt({a}))", -1.5: f"(S(1) / ({a} * std::sqrt({a})))"}
            return emit.let(powers.get(e, f"std::pow({a}, {self.literal(e)})"))
        if t in (aten.lerp.Scalar, aten.lerp.Tensor):  # a + w (b - a)
            a, b, w = self._operands(emit, node, out, k)
            return emit.let(f"({a} + {w} * ({b} - {a}))")
        if t in ACTIVATIONS:  # activations with a scalar argument or two, and their backward
            return self._activation(emit, node, out, k)
        if t is aten.masked_fill.Scalar:  # (x, mask, value)
            x, mask, value = self._operands(emit, node, out, k)
            return emit.let(f"({mask} ? {value} : {x})")
        if t is aten.where.self:
            c, a, b = self._operands(emit, node, out, k)
            return emit.let(f"({c} ? {a} : {b})")
        if t is aten.threshold_backward.default:  # (grad, x, threshold)
            g, x, threshold = self._operands(emit, node, out, k)
            return emit.let(f"(({x}) <= {threshold} ? S(0) : {g})")
        if t is aten.empty_like.default:
            raise Untraceable("its step reads an uninitialised tensor (empty_like)")
        if t in SAME:
            if t is aten._to_copy.default and node.kwargs.get("dtype") not in (None, node.args[0].meta["val"].dtype):
                raise Untraceable("its step changes a value's dtype")
            return emit(args[0], self._block(args[0], out, k))
        if out is not None and out.rowscalar and t in PIECES:
            raise Untraceable(f"{t} makes a value of shape {list(node.meta['val'].shape)}, not in blocks of H={H} "
                              "columns")
        if t is operator.getitem:  # one piece of a split: a slice
            src, index = args
            if src.target not in (aten.split.Tensor, aten.split_with_sizes.default):
                raise Untraceable(f"{src.target} is not a split the generator knows")
            dim = self._dim(src.args[0], src.args[2] if len(src.args) > 2 else 0)
            start = sum(v.shape[dim] for v in src.meta["val"][:index])
            return self._slice(emit, src.args[0], out, dim, start, k)
        if t is aten.slice.Tensor:
            dim = self._dim(args[0], args[1] if len(args) > 1 else 0)
            step = args[4] if len(args) > 4 else 1
            if step != 1:
                raise Untraceable("a slice with a step")
            start = args[2] if len(args) > 2 and args[2] is not None else 0
            start = start if start >= 0 else start + args[0].meta["val"].shape[dim]
            return self._slice(emit, args[0], out, dim, start, k)
        if t is aten.select.int:
            src = self.layout[args[0]]
            if src.rows or self._dim(args[0], args[1]) != 0 or args[0].meta["val"].dim() != 2:
                raise Untraceable("a select other than a row of a 2-D parameter")
            index = args[2] % src.R
            return emit(args[0], index * src.m + k)
        if t is aten.cat.default:
            return self._cat(emit, node, out, k)
        if t in (aten.select_backward.default, aten.slice_backward.default):
            return self._scatter(emit, node, out, k)
        if t in (aten.sum.dim_IntList, aten.mean.dim):
            return self._sum(emit, node, k)
        raise Untraceable(f"its step uses {t}, which the generator has no C for")

    def _operands(self, emit, node, out: _Value, k: int, literals: bool = True) -> list:
        """Each argument of an elementwise op at block k of the result (broadcast where it is narrower): a C
        expression; a Python number as a C literal, or as itself with literals=False."""
        return [emit(a, self._block(a, out, k)) if isinstance(a, torch.fx.Node)
                else self.literal(a) if literals and isinstance(a, (int, float)) else a for a in node.args]

    def _activation(self, emit, node, out: _Value, k: int) -> str:
        t, kw = node.target, node.kwargs
        v = self._operands(emit, node, out, k, literals=False)

        def arg(i: int, name: str, default):
            return v[i] if len(v) > i else kw.get(name, default)

        if t is aten.clamp.default:
            lo, hi = arg(1, "min", None), arg(2, "max", None)
            x = v[0] if lo is None else f"std::max({v[0]}, {self.literal(lo)})"
            return emit.let(x if hi is None else f"std::min({x}, {self.literal(hi)})")
        if t is aten.silu.default:
            return emit.let(f"({v[0]} * sigmoid({v[0]}))")
        if t is aten.silu_backward.default:  # d/dx x s(x) = s (1 + x (1 - s))
            s = emit.let(f"sigmoid({v[1]})")
            return emit.let(f"({v[0]} * {s} * (S(1) + {v[1]} * (S(1) - {s})))")
        if t is aten.leaky_relu.default:
            return emit.let(f"({v[0]} > S(0) ? {v[0]} : {self.literal(arg(1, 'negative_slope', 0.01))} * {v[0]})")
        if t is aten.leaky_relu_backward.default:  # (grad, x, slope, self_is_result)
            return emit.let(f"({v[1]} > S(0) ? {v[0]} : {self.literal(v[2])} * {v[0]})")
        if t is aten.softplus.default:  # log(1 + exp(beta x)) / beta, x where beta x > threshold
            beta, threshold = self.literal(arg(1, "beta", 1.0)), self.literal(arg(2, "threshold", 20.0))
            return emit.let(f"({v[0]} * {beta} > {threshold} ? {v[0]} : log1p_(exp_({v[0]} * {beta})) / {beta})")
        if t is aten.softplus_backward.default:  # (grad, x, beta, threshold)
            beta, threshold = self.literal(v[2]), self.literal(v[3])
            z = emit.let(f"exp_({v[1]} * {beta})")
            return emit.let(f"({v[1]} * {beta} > {threshold} ? {v[0]} : {v[0]} * {z} / ({z} + S(1)))")
        forward = t is aten.gelu.default  # gelu (x, approximate) and gelu_backward (grad, x, approximate)
        if arg(1 if forward else 2, "approximate", "none") != "none":
            raise Untraceable("gelu with approximate='tanh'")
        x = v[0] if forward else v[1]
        cdf = emit.let(f"(S(0.5) * (S(1) + erf_({x} * S(0.7071067811865476))))")
        if forward:
            return emit.let(f"({x} * {cdf})")
        pdf = emit.let(f"(exp_(S(-0.5) * {x} * {x}) * S(0.3989422804014327))")
        return emit.let(f"({v[0]} * ({cdf} + {x} * {pdf}))")

    def _block(self, operand, out: _Value, k: int) -> int:
        """The block of an elementwise operand that lines up with block k of the result (broadcasting)."""
        if not isinstance(operand, torch.fx.Node):
            return k
        v = self.layout[operand]
        if v.scalar or v.rowscalar or v.blocks == out.blocks:
            return k
        if v.R == 1 and v.m == out.m:  # a parameter row against rows of them
            return k % out.m
        raise Untraceable(f"values of {v.blocks} and {out.blocks} blocks of H={self.H} columns combined")

    def _dim(self, node, dim: int) -> int:
        return dim % node.meta["val"].dim()

    def _slice(self, emit, src, out: _Value, dim: int, start: int, k: int) -> str:
        s = self.layout[src]
        last = dim == src.meta["val"].dim() - 1
        if last:
            if start % self.H:
                raise Untraceable(f"a slice at column {start}, not a multiple of H={self.H}")
            r, kk = divmod(k, out.m)
            return emit(src, r * s.m + start // self.H + kk)
        if s.rows:
            raise Untraceable("a slice across the batch")
        return emit(src, start * s.m + k)

    def _cat(self, emit, node, out: _Value, k: int) -> str:
        pieces, dim = node.args[0], self._dim(node, node.args[1] if len(node.args) > 1 else 0)
        last = dim == node.meta["val"].dim() - 1
        r, kk = divmod(k, out.m) if last else (0, k)
        for p in pieces:
            v = self.layout[p]
            size = v.m if last else v.blocks
            if kk < size:
                return emit(p, r * v.m + kk if last else kk)
            kk -= size
        raise AssertionError("block past the end of a cat")

    def _scatter(self, emit, node, out: _Value, k: int) -> str:
        """select_backward / slice_backward: the gradient where the forward read, zeros elsewhere."""
        grad, sizes, dim = node.args[0], node.args[1], node.args[2] % len(node.args[1])
        last = dim == len(sizes) - 1
        g = self.layout[grad]
        if node.target is aten.select_backward.default:
            if last or out.rows:
                raise Untraceable("a select's gradient other than a row of a 2-D parameter")
            index = node.args[3] % sizes[0]
            return emit(grad, k - index * out.m) if index * out.m <= k < (index + 1) * out.m else "S(0)"
        start, end = node.args[3], min(node.args[4], sizes[dim])
        if last:
            if start % self.H or end % self.H:
                raise Untraceable(f"a slice's gradient at columns {start}:{end}, not in blocks of H={self.H}")
            r, kk = divmod(k, out.m)
            lo, hi = start // self.H, end // self.H
            return emit(grad, r * g.m + kk - lo) if lo <= kk < hi else "S(0)"
        if out.rows:
            raise Untraceable("a slice's gradient across the batch")
        return emit(grad, k - start * out.m) if start * out.m <= k < end * out.m else "S(0)"

    def _sum(self, emit, node, k: int) -> str:
        src, dims = node.args[0], [d % node.args[0].meta["val"].dim() for d in node.args[1]]
        s = self.layout[src]
        if s.rows and not s.rowscalar and dims == [1]:  # over a row's columns: a loop of its own before the step's
            return self._rowsum(emit, node, src, 1 / (s.m * self.H) if node.target is aten.mean.dim else None)
        if dims == [0] and s.rows and node.target is aten.mean.dim:
            raise Untraceable("a mean over the batch inside the step (batch statistics)")
        if dims != [0] or node.target is aten.mean.dim:
            raise Untraceable(f"a {node.target.__name__.split('.')[0]} over dims {node.args[1]} of a "
                              f"{'row' if s.rows else 'parameter'} value")
        if not s.rows:  # a sum over a parameter's rows
            return emit.let(" + ".join(emit(src, r * s.m + k) for r in range(s.R)))
        if emit.pass_ != "columns":
            raise Untraceable("a sum over the batch used inside the step (batch statistics)")
        if node not in self.sums:
            self.sums[node] = len(self.sums)
        return f"acc{self.sums[node]}[{k * self.H} + j]"

    def _rowsum(self, emit, node, src, scale: float | None) -> str:
        """A row's sum (or mean) over its columns, computed in a loop over j before the loop that reads it (a layer
        norm's mean and variance, and their backward's sums); sums it reads come first."""
        if emit.pass_ == "columns":
            raise Untraceable("a sum over a row's columns read after the loop over the batch")
        if node not in self.rowsums:
            inner = _Emitter(self, "sum")
            terms = [inner(src, k) for k in range(self.layout[src].m)]  # (its own sums are emitted first)
            name = self.rowsums[node] = f"rs{len(self.rowsums)}"
            keep = []  # every value this loop computes, kept for the loops after it: each is computed once a row
            for key, value in inner.memo.items():
                if value.startswith("v") and key not in self.stored:
                    self.stored[key] = f"sc[{len(self.stored) * self.H} + j]"  # one base pointer: g++ keeps
                    keep.append(f"  {self.stored[key]} = {value};")  # it in a register (one per array: it did not)
            # summed in `name`_, then read as a const copy: g++ does not vectorise a loop that reads a variable an
            # OpenMP reduction has taken the address of
            self.preloops += [f"S {name}_ = S(0);", f"#pragma omp simd reduction(+:{name}_)",
                              f"for (int64_t j = 0; j < {self.H}; ++j) {{", *("  " + line for line in inner.lines),
                              *keep, f"  {name}_ += {' + '.join(terms)};", "}",
                              f"const S {name} = {name}_{'' if scale is None else ' * ' + self.literal(scale)};"]
        return self.rowsums[node]

    # -- the function -----------------------------------------------------------------------------------------
    def source(self) -> str:
        H, outputs = self.H, list(self.output.args[0])
        rows, columns = _Emitter(self, "rows"), _Emitter(self, "columns")
        writes_rows, writes_columns = [], []
        for i, node in enumerate(outputs):
            if node is None or node in outputs[:i]:  # none, or another output's value (returned as that one)
                continue
            v = self.layout.get(node) if isinstance(node, torch.fx.Node) else None
            if v is None or v.scalar:
                raise Untraceable(f"output {i} of the step is not laid out in blocks of H")
            emitter, writes = (rows, writes_rows) if v.rows else (columns, writes_columns)
            for k in range(v.blocks):
                target = f"o{i}[b * {v.m * H} + {k * H} + j]" if v.rows else f"o{i}[{k * H} + j]"
                writes.append(f"{target} = {emitter(node, k)};")
        # the sums over the batch the column pass read: accumulated in the row loop
        sums = []
        for node, a in list(self.sums.items()):
            src = node.args[0]
            for k in range(self.layout[src].m):
                sums.append(f"acc{a}[{k * H} + j] += {rows(src, k)};")
        n_acc = len(self.sums)
        params = [f"{'const S* __restrict r' if self.layout[n].rows else 'const S* __restrict p'}{i}"
                  for i, n in enumerate(self.inputs)]
        unique = [i for i, n in enumerate(outputs) if n is not None and n not in outputs[:i]]
        params += [f"S* __restrict o{i}" for i in unique]
        params += [f"S* __restrict acc{a}" for a in range(n_acc)]
        row_inputs = [(i, self.layout[n].m) for i, n in enumerate(self.inputs) if self.layout[n].rows]
        body = [f"template <typename S> static void {self.name}(int64_t B, {', '.join(params)}) {{"]
        for a, node in enumerate(self.sums):
            body.append(f"  for (int64_t q = 0; q < {self.layout[node.args[0]].m * H}; ++q) acc{a}[q] = S(0);")
        if self.stored:  # one row's kept values, H each, reused from row to row
            body.append(f"  std::vector<S> scratch({len(self.stored) * H});")
            body.append("  S* __restrict sc = scratch.data();")
        body.append("  for (int64_t b = 0; b < B; ++b) {")
        body += [f"    const S* __restrict r{i} = r{i}_ + b * {m * H};" for i, m in row_inputs]
        body += ["    " + line for line in self.preloops]
        body.append("#pragma omp simd")
        body.append(f"    for (int64_t j = 0; j < {H}; ++j) {{")
        body += ["      " + line for line in rows.lines + writes_rows + sums]
        body.append("    }")
        body.append("  }")
        if writes_columns:
            body.append(f"  for (int64_t j = 0; j < {H}; ++j) {{")
            body += ["    " + line for line in columns.lines + writes_columns]
            body.append("  }")
        body.append("}")
        text = "\n".join(body)
        for i, _ in row_inputs:  # the row inputs' pointers are offset per row
            text = text.replace(f"const S* __restrict r{i},", f"const S* __restrict r{i}_,", 1)
            text = text.replace(f"const S* __restrict r{i})", f"const S* __restrict r{i}_)", 1)
        self.arity = (len(self.inputs), len(unique), n_acc)
        self.sum_sizes = [self.layout[node.args[0]].m * H for node in self.sums]
        return text


# --- 4. compile and load ---------------------------------------------------------------------------------------

FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp-simd", "-fno-trapping-math", "-fno-math-errno", "-w"]


def _wrapper(gen: _Generator, name: str) -> str:
    """extern "C" name_f32 / name_f64 (B, void** pointers): inputs, outputs, then the sums' accumulators."""
    n_in, n_out, n_acc = gen.arity
    out = []
    for ctype, suffix in DTYPES.values():
        casts = [f"(const {ctype}*)a[{i}]" for i in range(n_in)]
        casts += [f"({ctype}*)a[{n_in + i}]" for i in range(n_out + n_acc)]
        out.append(f'extern "C" void {name}_{suffix}(int64_t B, void** a) {{\n  FlushDenormals flush;\n'
                   f'  {name}<{ctype}>(B, {", ".join(casts)});\n}}')
    return "\n".join(out)


def _compile(source: str) -> ctypes.CDLL:
    """The library for `source`, built once per user and cached (beside the native kernels, checked the same way)."""
    isa = hardware.native_isa()
    here = Path(native.__file__).parent
    cmd_flags = [*FLAGS, *hardware.COMPILE_FLAGS[isa], f"-I{here}"]
    key = "\n".join([source, (here / "pointwise.h").read_text(), native.compiler(), *cmd_flags])
    target = native.build_dir() / f"recurrent_traced_{isa}_{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"
    native._make_private_dirs(target.parent)
    native._refuse_unsafe(target.parent, is_dir=True)
    if not os.path.lexists(target):
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build aside, then rename: safe if two race
            src, out = Path(tmp) / "step.cpp", Path(tmp) / target.name
            src.write_text(source)
            cmd = [native.compiler(), *cmd_flags, str(src), "-o", str(out)]
            try:
                done = subprocess.run(cmd, check=False, capture_output=True, text=True)
            except OSError as e:
                raise Untraceable(f"no C++ compiler ({cmd[0]}: {e.strerror})") from None
            if done.returncode != 0:
                lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
                raise Untraceable(f"{cmd[0]} failed on the generated step: {(lines or [''])[0].strip()}")
            out.chmod(0o700)
            os.replace(out, target)
    native._refuse_unsafe(target, is_dir=False)
    return ctypes.CDLL(str(target))


# --- 5. the traced step ----------------------------------------------------------------------------------------

class Kernel:
    """One compiled graph: call(B, inputs) -> outputs, each a fresh tensor (None where the graph has none)."""

    def __init__(self, gen: _Generator, library: ctypes.CDLL, name: str):
        self.fns = {}
        for dtype, (_, suffix) in DTYPES.items():
            fn = getattr(library, f"{name}_{suffix}")
            fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_void_p], None
            self.fns[dtype] = fn
        outputs = list(gen.output.args[0])
        self.shapes = [None if n is None else (gen.layout[n].rows, tuple(n.meta["val"].shape[1:])
                                                if gen.layout[n].rows else tuple(n.meta["val"].shape))
                       for n in outputs]
        # an output that is another's node (dgx is dgh when every product is on cat([x, h])) is returned as it
        self.same = [next((j for j in range(i) if outputs[j] is n), None) for i, n in enumerate(outputs)]
        self.zero = [n is not None and n.target in ZEROS for n in outputs]
        self.sum_sizes = gen.sum_sizes
        shapes = [(gen.layout[n].rows, tuple(n.meta["val"].shape)) for n in gen.inputs]
        self.expect = [(rows, shape[1:] if rows else shape) for rows, shape in shapes]  # what the loop reads

    def __call__(self, inputs: list[Tensor]) -> list[Tensor | None]:
        B, like = inputs[0].shape[0], inputs[0]
        for t, (rows, shape) in zip(inputs, self.expect, strict=True):
            if (t.shape[1:] if rows else t.shape) != shape or rows and t.shape[0] != B or t.dtype != like.dtype \
                    or not t.is_contiguous() or t.device.type != "cpu":
                raise ValueError(f"a compiled step takes {'(B, ' if rows else '('}{', '.join(map(str, shape))}) "
                                 f"{like.dtype} contiguous CPU tensors, got {tuple(t.shape)} {t.dtype}")
        outs = [None if s is not None or kind is None else like.new_empty((B, *kind[1]) if kind[0] else kind[1])
                for kind, s in zip(self.shapes, self.same)]
        accs = [like.new_empty(n) for n in self.sum_sizes]
        pointers = [t.data_ptr() for t in (*inputs, *(o for o in outs if o is not None), *accs)]
        self.fns[like.dtype](B, (ctypes.c_void_p * len(pointers))(*pointers))
        return [outs[s] if s is not None else o for o, s in zip(outs, self.same)]


@dataclass
class Traced:
    """A cell's step, compiled: what the bptt engine needs besides the cell's own parameters."""

    products: list[Product]
    extras: list[str]  # the parameters and buffers the pointwise step reads
    forward: Kernel  # (gx, gh, *fields, *extras) -> new fields
    backward: Kernel  # (gx, gh, *fields, *extras, *dfields) -> (dgx, dgh, *dfields_prev, *dextras)
    has_h: bool  # some product takes h (gh has columns)


def _build(cell: Cell, dtype: torch.dtype) -> Traced:
    H = cell.hidden_size
    B = next(b for b in range(3, 10 ** 6) if b not in {H, cell.input_size}
             and all(b not in p.shape for p in cell.parameters()))  # a batch size no other dimension has
    products = _probe(cell, dtype, B)
    graphs = _trace(cell, products, dtype, B)
    forward, backward = _Generator(graphs.forward, H, B, "forward"), _Generator(graphs.backward, H, B, "backward")
    source = "\n\n".join(["#include <cstdint>\n#include <vector>", '#include "pointwise.h"',
                          "using namespace recurrent_native;",
                          forward.source(), backward.source(), _wrapper(forward, "forward"),
                          _wrapper(backward, "backward")]) + "\n"
    if os.environ.get("RECURRENT_TRACED_SOURCE"):  # to read what was generated
        Path(os.environ["RECURRENT_TRACED_SOURCE"]).write_text(source)
    library = _compile(source)
    return Traced(products, graphs.extras, Kernel(forward, library, "forward"), Kernel(backward, library, "backward"),
                  any(p.side in ("h", "xh") for p in products))


# --- 6. the cell the engine runs -------------------------------------------------------------------------------

class TracedCell(Cell):
    """The user's cell in the bptt engine's protocol (recurrent/cells/base.py), over the user's own parameters."""

    def __init__(self, cell: Cell, traced: Traced):
        super().__init__(cell.input_size, cell.hidden_size)
        object.__setattr__(self, "user", cell)  # not a submodule: its parameters stay the user's
        self.traced, self.state_type = traced, cell.state_type
        self.lent: dict[str, Tensor] | None = None  # read in place of the user's parameters (the check's float64)

    def _param(self, name: str) -> Tensor:
        if self.lent is not None:
            return self.lent[name]
        params = dict(self.user.named_parameters())
        return params[name] if name in params else self.user.get_buffer(name)

    def _stack(self, side: str) -> tuple[Tensor | None, Tensor | None]:
        """The products on one side as one weight (G, K) and bias (G,): [U W] split at x's width for cat([x, h])."""
        I, weights, biases, any_bias = self.input_size, [], [], False
        for p in self.traced.products:
            if side not in p.side:
                continue
            W = self._param(p.weight)
            weights.append(W if p.side == side else W[:, :I] if side == "x" else W[:, I:])
            has_bias = p.bias is not None and (side == "x" or p.side == "h")  # cat([x, h]): b on the input's side
            biases.append(self._param(p.bias) if has_bias else W.new_zeros(p.width))
            any_bias |= has_bias
        if not weights:
            return None, None
        W = weights[0] if len(weights) == 1 else torch.cat(weights)
        return W, (biases[0] if len(biases) == 1 else torch.cat(biases)) if any_bias else None

    def project_input(self, x: Tensor) -> Tensor:  # (T, B, I) -> (T, B, Gx)
        U, b = self._stack("x")
        return F.linear(x, U, b)

    def recurrence(self) -> tuple[Tensor | None, Tensor | None]:
        return self._stack("h")

    def extra_params(self) -> tuple[Tensor, ...]:
        return tuple(self._param(n) for n in self.traced.extras)

    def _gh(self, gx: Tensor, gh: Tensor | None) -> Tensor:
        return gh if gh is not None else gx.new_empty((gx.shape[0], 0))

    def step(self, gx: Tensor, gh: Tensor | None, state: NamedTuple, *extras: Tensor):
        inputs = [gx.contiguous(), self._gh(gx, gh).contiguous(), *(f.contiguous() for f in state),
                  *(e.contiguous() for e in extras)]
        new = self.traced.forward(inputs)
        return self.state_type(*new), inputs[:2 + len(state)]

    def step_backward(self, dstate: NamedTuple, saved, *extras: Tensor):
        n = len(self.state_type._fields)
        out = self.traced.backward([*saved, *(e.contiguous() for e in extras), *(d.contiguous() for d in dstate)])
        dgx, dgh, dfields, dextras = out[0], out[1], out[2:2 + n], out[2 + n:]
        if self.traced.backward.zero[2]:  # h reaches the step only through W: no direct gradient
            dfields = [None, *dfields[1:]]
        return dgx, dgh if self.traced.has_h else None, self.state_type(*dfields), tuple(dextras)

    def forward(self, x: Tensor, state: NamedTuple) -> NamedTuple:
        return self.user(x, state)


# --- 7. checked against the cell's own forward, then kept --------------------------------------------------------

def _check(cell: Cell, runner: TracedCell, B: int = 5, T: int = 3) -> None:
    """Raise Untraceable unless a T-step unroll through `runner`'s compiled steps gives the cell's own forward's
    states and gradients (x, initial state, every parameter), in float64 on random values."""
    from recurrent.engine import BPTT

    g = torch.Generator().manual_seed(0)
    params = {n: (p.detach().double() + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64))
              .requires_grad_() for n, p in cell.named_parameters()}
    buffers = {n: b.detach().double() if b.is_floating_point() else b for n, b in cell.named_buffers()}
    x = torch.randn(T, B, cell.input_size, generator=g, dtype=torch.float64, requires_grad=True)
    state = [torch.randn(B, cell.hidden_size, generator=g, dtype=torch.float64, requires_grad=True)
             for _ in cell.state_type._fields]
    weights = [torch.randn(T, B, cell.hidden_size, generator=g, dtype=torch.float64) for _ in state]

    def loss(seqs):
        return sum((s * w).sum() for s, w in zip(seqs, weights))

    def reference():
        s, seqs = cell.state_type(*state), []
        for t in range(T):
            s = torch.func.functional_call(cell, params | buffers, (x[t], s))
            seqs.append(s)
        return [torch.stack(f) for f in zip(*seqs)]

    def ours():
        runner.lent = params | buffers
        try:
            W, b_hh = runner.recurrence()
            return list(BPTT.apply(runner, len(state), runner.project_input(x), W, b_hh, *state,
                                   *runner.extra_params()))
        finally:
            runner.lent = None

    inputs = [x, *state, *params.values()]
    ref, got = reference(), ours()  # (runner() switches autocast off: the check compares float64 with float64)
    ref_grads = torch.autograd.grad(loss(ref), inputs, allow_unused=True)
    got_grads = torch.autograd.grad(loss(got), inputs, allow_unused=True)
    labels = ["x", *(f"state.{f}" for f in cell.state_type._fields), *params]
    for label, a, b in [*zip((f"state {f}" for f in cell.state_type._fields), ref, got),
                        *zip((f"d{n}" for n in labels), ref_grads, got_grads)]:
        a = torch.zeros(()) if a is None else a
        b = torch.zeros(()) if b is None else b
        if not torch.allclose(a, b, rtol=1e-7, atol=1e-9):
            raise Untraceable(f"the compiled step's {label} differs from the cell's own forward by "
                              f"{(a - b).abs().max().item():.2e} (float64)")


def runner(cell: Cell, dtype: torch.dtype) -> TracedCell | str:
    """The cell's compiled step for `dtype` states in its current train/eval mode, or why it has none."""
    if cell.has_step():
        return f"{type(cell).__name__} already splits into project_input and step"
    if dtype not in DTYPES:
        return f"compiled steps are float32 and float64, not {dtype}"
    traces = _TRACES.setdefault(cell, {})
    key = (cell.training, tuple((n, tuple(p.shape)) for n, p in cell.named_parameters()))  # a new shape: a new trace
    if key not in traces:
        try:  # a first call under no_grad, inference_mode (an evaluation) or autocast must not spoil the trace
            with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
                params = [p for p in cell.parameters() if p.is_floating_point()]
                built = TracedCell(cell, _build(cell, params[0].dtype if params else torch.float32))
                _check(cell, built)
            traces[key] = built
        except Untraceable as e:
            traces[key] = str(e)
        except Exception as e:  # noqa: BLE001 - an unsafe cache folder, an unusable ISA setting, a case the
            traces[key] = f"{type(e).__name__}: {e}"  # generator did not foresee: never a failed forward
    return traces[key]
