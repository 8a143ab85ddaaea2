"""The unroll engine: runs a cell over time, on the `bptt` or the `autograd` backend.

Key: B batch, T time, I input, H hidden, G pre-activations (gates * H).
Inside the engine tensors are time-major (T, B, ...) so that x[t] is contiguous;
the public `unroll` is batch-first like every layer.

bptt backend (`BPTT`, a torch.autograd.Function), as in min-char-rnn:
    forward:   gx = U x + b_ih for all t            one matrix product
               for t in 0..T-1:  gh_t = W s_{t-1} + b_hh;  s_t = step(gx_t, gh_t, s_{t-1})
    backward:  for t in T-1..0:  dgx_t, dgh_t = step_backward(ds_t)
                                 ds_{t-1} = direct part + dgh_t W      (the only matmul in the loop)
               dW = Σ_t dgh_tᵀ s_{t-1}                                 one matrix product after the loop
               dU, dx follow from dgx by autograd through the input projection.

For a plain LSTMCell on CPU the bptt backend runs this loop in C++ instead (recurrent/native: one
product and one fused pointwise loop per step), with the same results, where recurrent.backends says so.

autograd backend: the same forward loop, differentiated by autograd. It is the
reference the bptt backend is tested against, and the path for cells that only define
`forward(x, state)`. It also runs `reset=` (a stream's state restarted before a step). Where recurrent.backends
says so (`shared`), a forward-only cell's nn.Linear products are shared over time instead (recurrent/shared.py).

compiled backend: the autograd backend's loop with the cell's step compiled by torch.compile (recurrent/compiled.py),
for cells that write only `forward` or `step`: their dozen small ops per step become a few fused kernels. It runs
when asked for by name (backend="compiled"); auto does not pick it (recurrent/backends.py says why).

scan backend: a cell with `parallel_scan(x, state)` (minGRU, minLSTM: gates read x_t only, so the recurrence is
linear in h) computes every step at once; see recurrent/cells/mingru.py.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from recurrent import backends, compiled, kernels, native, shared, traced
from recurrent.backends import Backend, Call
from recurrent.cells.base import Cell
from recurrent.native import loops as native_loops


POOLED_MIN = 1 << 20  # bytes: common.h's BlockPool::MIN_BYTES, below which its pool hands out plain memory


def _empty(shape: tuple, like: Tensor) -> Tensor:
    """An uninitialised tensor like `like`; on the CPU from POOLED_MIN bytes, from the native kernels' pool of large
    buffers (built and loaded on first use, as the LSTM's C++ loop is): a fresh block of tens of MB is fresh pages,
    a fault per 4 KiB on first write (recurrent/native/common.h). A peephole LSTM's training step at B32 T128 H512
    spent 59 of 549 ms in copies into fresh buffers."""
    big = like.device.type == "cpu" and math.prod(shape) * like.element_size() >= POOLED_MIN
    ops = native.load() if big else None
    if ops is None:
        return like.new_empty(shape)
    return ops.pooled_empty(list(shape), like.dtype)


class BPTT(torch.autograd.Function):
    """Hand-derived backpropagation through time over a cell's `step` / `step_backward`.

    Inputs: gx (T, B, G), W (G, H) or None, b_hh (G,) or None, the initial state's fields,
    then the cell's extra_params(). Output: every state field at every step, each (T, B, H).
    """

    @staticmethod
    def forward(ctx, cell: Cell, n_fields: int, gx: Tensor, W, b_hh, *tensors: Tensor):
        state = cell.state_type(*tensors[:n_fields])  # each (B, H)
        extras = tensors[n_fields:]
        recur = None if W is None else kernels.linear(W, b_hh, gx.shape[1], io_dtype=state.h.dtype)
        gx = gx.to(state.h.dtype)  # the steps run in the states' dtype (float32 under autocast)
        # bufs[k][t] holds field k of s_t for t = 0..T, so s_{t-1} for every t is the view bufs[0][:-1]
        bufs = [_empty((gx.shape[0] + 1, *f.shape), f) for f in state]  # n_fields x (T+1, B, H)
        for buf, f in zip(bufs, state):
            buf[0] = f
        saved = []
        for t in range(gx.shape[0]):
            gh = None if W is None else recur(state.h)  # (B, G): h -> h Wᵀ + b_hh
            new, s = cell.step(gx[t], gh, state, *extras)
            for buf, f in zip(bufs, new):
                buf[t + 1] = f
            state = cell.state_type(*(buf[t + 1] for buf in bufs))
            saved.append(s)
        # Everything goes through save_for_backward, so that autograd frees it after backward
        # (or keeps it for a second one with retain_graph=True); step caches are flattened.
        ctx.cell, ctx.n_extras = cell, len(extras)
        ctx.cache_is_tensor = isinstance(saved[0], Tensor)
        flat = saved if ctx.cache_is_tensor else [x for s in saved for x in s]
        ctx.save_for_backward(W, b_hh, bufs[0], *extras, *flat)
        return tuple(buf[1:] for buf in bufs)  # n_fields x (T, B, H)

    @staticmethod
    def backward(ctx, *dseqs: Tensor):  # n_fields x (T, B, H): dL/ds_t from outside (outputs, final state)
        cell = ctx.cell
        W, b_hh, h_all, *rest = ctx.saved_tensors  # h_all (T+1, B, H): s_0 .. s_T
        extras, flat = rest[: ctx.n_extras], rest[ctx.n_extras :]
        T, B = dseqs[0].shape[:2]
        saved = flat if ctx.cache_is_tensor else [flat[i : i + len(flat) // T] for i in range(0, len(flat), len(flat) // T)]
        dGX = dGH = None  # (T, B, G), filled step by step
        dextras = [torch.zeros_like(e) for e in extras]
        # fields other than h get outside gradients only at a few steps (final states): add only there. On a GPU
        # finding them would make the host wait once per layer, so there every step adds (zeros: same values)
        live = [None] + [d.flatten(1).any(1).tolist() if d.device.type == "cpu" else [True] * T for d in dseqs[1:]]
        back = None if W is None else kernels.linear(W.t(), None, B, io_dtype=h_all.dtype)  # dG -> dG W
        dstate = cell.state_type(*(d[-1] for d in dseqs))
        for t in reversed(range(T)):
            dgx, dgh, dprev, dext = cell.step_backward(dstate, saved[t], *extras)
            if dGX is None:
                dGX = _empty((T, *dgx.shape), dgx)
                dGH = dGX if dgh is dgx or W is None else _empty((T, *dgh.shape), dgh)
            dGX[t] = dgx
            if dGH is not dGX:
                dGH[t] = dgh
            dh = dprev.h
            if W is not None:  # dh_{t-1} = direct part + dG_t W
                dh = back(dgh) if dh is None else dh + back(dgh)
            for k, d in enumerate(dext):
                dextras[k] += d
            if t > 0:  # add the outside gradient at step t-1 (from the outputs, and final states)
                rest = [f + d[t - 1] if live[k + 1][t - 1] else f for k, (f, d) in enumerate(zip(dprev[1:], dseqs[1:]))]
                dstate = cell.state_type(dh + dseqs[0][t - 1], *rest)
        dW = db = None
        if W is not None:
            h_prev = h_all[:-1]  # (T, B, H): s_{t-1} for each t
            dW = dGH.flatten(0, 1).t().to(W.dtype) @ h_prev.flatten(0, 1).to(W.dtype)  # (G, H) = Σ_t dG_tᵀ s_{t-1}
            db = dGH.sum((0, 1)).to(b_hh.dtype) if b_hh is not None else None
        return (None, None, dGX, dW, db, dh, *dprev[1:], *dextras)


def _loop(cell: Cell, x: Tensor, state: NamedTuple, reset: Tensor | None = None,
          reset_to: NamedTuple | None = None) -> tuple[Tensor, ...]:
    """The autograd backend: a plain loop over time. x (T, B, I) -> n_fields x (T, B, H).

    reset (T, B, 1) bool: where True, the state is replaced by reset_to (fields (B, H)) before that step."""
    states, stepped = [], cell.has_step()
    # unbind, not x[t]: each x[t]'s backward wrote its gradient into a zeroed (T, B, I) tensor, T of them (a
    # peephole LSTM at B32 T128 H512 spent 96 ms of 860 filling zeros); unbind's backward stacks them once
    if stepped:  # batched input projection, then the pointwise steps
        inputs = cell.project_input(x).unbind(0)  # T x (B, G)
        W, b_hh = cell.recurrence()
        extras = cell.extra_params()
    else:
        inputs = x.unbind(0)  # T x (B, I)
    dtypes = tuple(f.dtype for f in state)
    for t in range(x.shape[0]):
        if reset is not None:  # a new document starts here: its stream starts again from reset_to
            state = cell.state_type(*(torch.where(reset[t], r, s) for s, r in zip(state, reset_to)))
        if stepped:
            gh = None if W is None else F.linear(state.h, W, b_hh)
            state = cell.step(inputs[t], gh, state, *extras)[0]
        else:
            state = cell(inputs[t], state)
        state = keep_dtype(state, dtypes)
        states.append(state)
    return tuple(torch.stack(field) for field in zip(*states))


def keep_dtype(state: NamedTuple, dtypes: tuple) -> NamedTuple:
    """The state with each field in the dtype it started in: under autocast a step's products come out bfloat16,
    and a cell such as h = tanh(gx + gh) would otherwise carry its state, and sum its recurrence, in bfloat16 from
    the first step on. The bptt engine and the native loops keep float32 states the same way."""
    if all(f.dtype == d for f, d in zip(state, dtypes)):
        return state
    return type(state)(*(f.to(d) for f, d in zip(state, dtypes)))


def run_cell(cell: Cell, x: Tensor, state: NamedTuple, backend: str | Backend, reset: Tensor | None = None,
             reset_to: NamedTuple | None = None) -> tuple[Tensor, ...]:
    """Run `cell` over x (T, B, I) from `state`; every state field at every step, each (T, B, H).

    backend: 'bptt', 'autograd', 'compiled' or 'scan', or a Backend from recurrent.backends.choose, which also says whether
    the bptt loop runs in C++ (`native`); for a bare 'bptt' this call asks it. reset (T, B, 1) bool and reset_to
    (fields (B, H)): restart a stream's state before a step, on the autograd backend only (see `_loop`)."""
    name = backend.name if isinstance(backend, Backend) else backend
    if reset is not None and name != "autograd":
        raise ValueError(f"reset= runs on the autograd backend, got backend {name!r}")
    if name == "autograd":
        if isinstance(backend, Backend) and backend.shared and reset is None:  # a forward-only cell, large, on CPU
            return shared.run(cell, x, state)
        return _loop(cell, x, state, reset, reset_to)
    if name == "scan":  # the whole sequence at once (minGRU, minLSTM)
        return cell.parallel_scan(x, state)
    if name == "compiled":  # the autograd loop, each step compiled by torch.compile
        return compiled.run(cell, x, state)
    if name != "bptt":
        raise ValueError(f"run_cell backend must be 'bptt', 'autograd', 'compiled' or 'scan', got {name!r}")
    if not isinstance(backend, Backend):
        backend = backends.choose(cell, "bptt", call=Call.of(x, state))
    if backend.traced:  # a forward-only cell: its compiled step, its products split as a built-in cell's are
        runner = traced.runner(cell, state.h.dtype)
        if isinstance(runner, str):  # backends.choose checks every cell of a layer first: a direct call
            raise ValueError(f"{type(cell).__name__}'s step is not compiled: {runner}")
        cell = runner
    W, b_hh = cell.recurrence()
    if W is not None and torch.is_autocast_enabled(x.device.type):  # W in the autocast dtype (bf16 on CPU),
        dtype = torch.get_autocast_dtype(x.device.type)  # states and the pointwise steps in float32
        W, b_hh = W.to(dtype), None if b_hh is None else b_hh.to(dtype)
    if backend.native:  # a plain LSTMCell or GRUCell on CPU: the whole loop in C++, same results
        return native_loops.run(cell, x, state, W)
    return BPTT.apply(cell, len(state), cell.project_input(x), W, b_hh, *state, *cell.extra_params())


def scan_cell(cell: Cell, x: Tensor, state: NamedTuple, lengths: Tensor | None = None) -> tuple[Tensor, NamedTuple]:
    """The plain-torch loop as one scan over time, for torch.export and ONNX (recurrent/export.py).

    x (T, B, I), lengths (B,) or None -> (h at every step (T, B, H), final state, fields (B, H)).
    A Python loop over a symbolic T unrolls at the example's length; a scan (`torch.ops.higher_order.scan`,
    ONNX's Scan) keeps T dynamic. Past its length a sequence keeps its state (a mask, not an index), so the
    final state is each sequence's last valid one without an index computed from the lengths' values.
    """
    from torch._higher_order_ops.scan import scan

    if cell.has_step():  # batched input projection, then the pointwise steps (as in _loop)
        xs = cell.project_input(x)  # (T, B, G)
        W, b_hh = cell.recurrence()
        extras = cell.extra_params()

        def step(s, gx):
            return cell.step(gx, None if W is None else F.linear(s.h, W, b_hh), s, *extras)[0]
    else:
        xs = x

        def step(s, x_t):
            return cell(x_t, s)

    def body(carry: tuple, inputs: tuple):
        prev = cell.state_type(*carry)
        new = tuple(step(prev, inputs[0]))
        if len(inputs) > 1:  # past its length a sequence keeps its state
            new = tuple(torch.where(inputs[1], n, p) for n, p in zip(new, prev))
        return new, new[0].clone()  # a scan output may not alias the carry

    inputs = (xs,) if lengths is None else (xs, valid_mask(lengths, x.shape[0], x.device))  # mask (T, B, 1)
    final, hs = scan(body, tuple(f.clone() for f in state), inputs)  # fields may share memory (zeros)
    return hs, cell.state_type(*final)


# --- lengths: masks, gathers and the length-aware flip --------------------------------------


def flip_valid(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence's valid part in time, leaving padding in place. x (T, B, ...).

    With lengths [3, 2] and T = 3:  [a b c | d e _] -> [c b a | e d _]. Its own inverse.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    n = lengths.to(x.device).unsqueeze(0)  # (1, B)
    idx = torch.where(t < n, n - 1 - t, t)  # (T, B)
    return x.gather(0, idx.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x))


def last_valid(seq: Tensor, lengths: Tensor | None) -> Tensor:
    """seq (T, B, H) -> (B, H): each sequence's value at its last valid step."""
    if lengths is None:
        return seq[-1]
    idx = (lengths.to(seq.device) - 1).view(1, -1, 1).expand(1, *seq.shape[1:])  # (1, B, H)
    return seq.gather(0, idx).squeeze(0)


def valid_mask(lengths: Tensor, T: int, device) -> Tensor:
    """(T, B, 1) bool mask: True where t < length."""
    t = torch.arange(T, device=device).unsqueeze(1)  # (T, 1)
    return (t < lengths.to(device).unsqueeze(0)).unsqueeze(-1)


def zero_padding(x: Tensor, lengths: Tensor | None) -> Tensor:
    """x (T, B, F) with every step past its sequence's length set to 0 (NaN and inf included)."""
    if lengths is None:
        return x
    return torch.where(valid_mask(lengths, x.shape[0], x.device), x, x.new_zeros(()))


def check_lengths(lengths, B: int, T: int) -> Tensor | None:
    """Validate per-sequence lengths for a batch x (B, T, ...); returns them as int64, or None."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape ({B},), one per sequence, got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    if torch.compiler.is_compiling():  # the values are data: a compiled or exported graph takes them unchecked
        return lengths.long()
    lo, hi = int(lengths.min()), int(lengths.max())
    if lo < 1 or hi > T:
        raise ValueError(f"lengths must be in 1..{T} (the time dim of x), got min {lo}, max {hi}")
    return lengths.long()


def unroll(cell: Cell, x: Tensor, state: NamedTuple | None = None, lengths: Tensor | None = None,
           backend: str = "auto") -> tuple[Tensor, NamedTuple]:
    """Run one cell over a batch-first sequence: x (B, T, I) -> (out (B, T, H), final state).

    Outputs past a sequence's length are zero; the final state is the one at its last valid step.
    """
    if x.dim() != 3 or x.shape[-1] != cell.input_size:
        raise ValueError(f"x must be (batch, time, input_size={cell.input_size}), got shape {tuple(x.shape)}")
    B, T, _ = x.shape
    lengths = check_lengths(lengths, B, T)
    state = cell.init_state(B, x) if state is None else state
    backend = backends.choose(cell, backend, call=Call.of(x, state))
    seqs = run_cell(cell, zero_padding(x.transpose(0, 1), lengths), state, backend)  # n_fields x (T, B, H)
    out = zero_padding(seqs[0], lengths)
    final = cell.state_type(*(last_valid(s, lengths) for s in seqs))
    return out.transpose(0, 1), final
