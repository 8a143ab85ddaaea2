"""The `compiled` backend: a user cell's step compiled by torch.compile (Inductor), inside the one engine.

    layer = rc.Recurrent(PeepholeLSTMCell, 512, 512, num_layers=2, backend="compiled")  # a cell with only forward
    out, state = layer(x)   # the first call compiles (seconds); later calls of the same shape reuse it
    print(layer.backend)    # compiled (forced by backend='compiled')

Key: B batch, T time, I input, H hidden, G pre-activations (gates * H).

The loop is the autograd backend's (`engine._loop`): the input projection batched over time where the cell has
`project_input` + `step`, then one call per step, differentiated by autograd. Only the step changes: torch.compile
fuses its dozen small pointwise ops (and, through AOTAutograd, their backward) into a few kernels around the
products, so a cell written in plain torch runs without Python dispatch per op and without C++ from its author.

    step 0:          eager (its state may not need grad, the others do: one compiled signature, not two)
    step 1 .. T-1:   fn(cell, x_t or gx_t, [W, b_hh, extras], *state fields) -> new state fields

One compiled function per cell class and call signature (shapes, dtypes, device, which inputs need grad, train or
eval, grad mode, autocast): each gets its own code object, so dynamo's recompile limit (8 per code object) never
sends a step back to eager without a word. Compiling costs seconds per signature, once per process.

A compile that fails (no C++ compiler, an op Inductor cannot lower, a graph break: fullgraph=True, a cell class
defined where dynamo cannot import its module, e.g. exec'd code) raises, and is not retried: from then on
`recurrent.backends.choose` refuses backend='compiled' for this cell class, naming the error.

Measured (recurrent/backends.py): on a CPU the compiled step is not faster than the plain loop, so `auto` never picks
it; the per-step products (not the pointwise ops that compiling fuses) are what a user cell pays for at large sizes.
"""
from __future__ import annotations

import os
import shutil
import types
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

FAILED: dict[type, str] = {}  # cell class -> why torch.compile failed on it (set once, never retried)
_STEPS: dict[tuple, Callable] = {}  # signature -> its compiled step


def unavailable(device: str) -> str | None:
    """Why torch.compile cannot run a step on this device type here; None if it can."""
    if device == "cpu":
        compilers = [os.environ.get("CXX"), "g++", "clang++"]
        if not any(c and shutil.which(c) for c in compilers):
            return "Inductor on CPU needs a C++ compiler (g++ or clang++, or $CXX); none found"
        return None
    if device == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Inductor on CUDA needs triton; it is not installed"
    return f"Inductor has no backend for {device!r} here"


def failure(cell) -> str | None:
    """Why a compile of this cell's class failed earlier in this process; None if none did."""
    return FAILED.get(type(cell))


# --- the two kinds of step, as plain functions of tensors (what torch.compile traces) -----------------------------

def _forward_step(cell, x: Tensor, *fields: Tensor) -> tuple[Tensor, ...]:  # x (B, I), fields (B, H)
    return tuple(cell(x, cell.state_type(*fields)))


def _pointwise_step(cell, gx: Tensor, W: Tensor | None, b_hh: Tensor | None, extras: tuple,
                    *fields: Tensor) -> tuple[Tensor, ...]:  # gx (B, G), W (G, H)
    state = cell.state_type(*fields)
    gh = None if W is None else F.linear(state.h, W, b_hh)  # (B, G)
    return tuple(cell.step(gx, gh, state, *extras)[0])


def _signature(cell, fn: Callable, args: tuple) -> tuple:
    def describe(a):
        if isinstance(a, Tensor):
            return tuple(a.shape), a.dtype, a.device, a.requires_grad
        if isinstance(a, tuple):
            return tuple(describe(b) for b in a)
        return a

    kind = next((d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)), None)
    autocast = (kind, torch.get_autocast_dtype(kind)) if kind else None
    return type(cell), fn.__name__, describe(args), cell.training, torch.is_grad_enabled(), autocast


def _compiled(key: tuple, fn: Callable) -> Callable:
    """fn compiled for one signature, under a code object of its own (dynamo keeps its cache per code object)."""
    if key not in _STEPS:
        code = fn.__code__.replace(co_name=f"{fn.__name__}_{len(_STEPS)}")
        own = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
        _STEPS[key] = torch.compile(own, fullgraph=True, dynamic=False)
    return _STEPS[key]


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def run(cell, x: Tensor, state: NamedTuple) -> tuple[Tensor, ...]:
    """Run `cell` over x (T, B, I) from `state` with its step compiled; every state field at every step (T, B, H)."""
    if cell.has_step():  # batched input projection, then the pointwise steps (as in engine._loop)
        inputs, fn = cell.project_input(x).unbind(0), _pointwise_step  # T x (B, G); unbind as in engine._loop
        W, b_hh = cell.recurrence()
        args = (W, b_hh, tuple(cell.extra_params()))
    else:
        inputs, fn, args = x.unbind(0), _forward_step, ()
    fields, seqs = tuple(state), []
    for t in range(x.shape[0]):
        if t == 0:
            fields = fn(cell, inputs[0], *args, *fields)
        else:
            key = _signature(cell, fn, (inputs[t], *args, *fields))
            fresh = key not in _STEPS
            try:
                fields = _compiled(key, fn)(cell, inputs[t], *args, *fields)
            except Exception as error:
                if fresh:  # the compile itself failed: remembered, so that the next plan refuses this class
                    FAILED[type(cell)] = _first_line(error)
                    _STEPS.pop(key, None)
                raise
        seqs.append(fields)
    return tuple(torch.stack(f) for f in zip(*seqs))
