"""The backend plan: which path runs a recurrent layer, and why. Every fast-path choice is made here, and only here.

    backend = backends.choose(cell, "auto", fused="LSTM", call=Call.of(x, state))
    backend.name, backend.reason, backend.native     # 'bptt', 'auto under CPU bf16 autocast: ...', True

It reads the capability probe (`recurrent.hardware`) and whether the native kernels load (`recurrent.native`);
layers and models ask this module, never those two. `layer.backend` and `recurrent info` report its answers.

A layer's backend, for backend="auto": the first row that matches wins.

    layer                       the call                                    backend    why
    built-in RNN/LSTM/GRU       anything but CPU bf16 autocast              fused      torch's fused kernel
    built-in LSTM, plain cells  CPU bf16 autocast, the C++ loop loads       bptt       C++ loop beats oneDNN's bf16
    built-in LSTM               CPU bf16 autocast, oneDNN bf16 runs         fused      oneDNN's bf16 LSTM
    built-in LSTM               CPU bf16 autocast, neither                  bptt       bf16 products in the engine
    built-in GRU/RNN            CPU bf16 autocast                           bptt       torch's fused would run float32
    a cell with parallel_scan   anything                                    scan       minGRU/minLSTM: one scan over T
    a cell with a C++ loop      anything                                    bptt       recurrent/native/loops.py
    any cell with step_backward on CPU, B*H < BPTT_MIN                      autograd   C++ backward beats the Python one
    any cell with step_backward anything                                    bptt       the hand-derived backward
    a cell with only forward    CPU float32 or float64 (or bf16 autocast), its step traces
                                                                            bptt       its step compiled (traced.py)
    any other cell              CPU float32 or bf16 autocast, B*H >= SHARED_MIN, nn.Linear
                                                                            autograd   shared products (shared.py)
    any other cell              anything                                    autograd   the plain loop

A cell with a C++ loop is a plain LSTMCell, GRUCell or LayerNormLSTMCell (recurrent/native/loops.py). A subclass of
LSTMCell is plain when it overrides none of its equation methods (step, step_backward, forward, project_input,
recurrence, extra_params) or declares `same_equations = True`; another runs the Python loop, and the reason names
what it overrides (recurrent/native/lstm.py `not_plain_because`).

Per shape (B batch from the call, H the cell's hidden size): below BPTT_MIN the hand-derived backward's Python loop
(a dozen small ops per step) costs more than autograd's C++ engine replaying the forward's ops. Measured (CPU time,
one thread, T=32, 2 layers; autograd's time over bptt's, above 1 where bptt wins):

    B*H           512     2048    4096    8192
    ElmanCell     0.66    0.96    1.04    1.21
    DeepTransition 0.79   0.89    0.96    1.06
    LayerNormGRU  1.19    1.19    1.32    1.53

The crossover depends on the cell: a cell class may declare its own (`bptt_min = 0`: bptt at every size, as
LayerNormGRUCell's row says it should). Before a call (call=None), or for a Call without its batch size, the row
does not apply and the plan is the cell's.

A cell that writes only `forward` (no `step`) runs on bptt where recurrent/traced.py compiles its step: its
F.linear products split as a built-in cell's, its pointwise step and that step's backward each one C++ loop, checked
against autograd of its own forward before use; the reason of the autograd row says why a cell's step is not
compiled. Where it is not, the cell runs the plain loop; on a CPU in float32 from B*H = SHARED_MIN, the
products with its own nn.Linear weights are packed once per sequence and their weight gradients summed over time
as one product after the loop (recurrent/shared.py; `shared=True`). Measured against the plain loop for
docs/cells.md's peephole LSTM (CPU time, one thread, T=32): 18.6 vs 10.8 ms at B*H = 512, 28.7 vs 25.5 at 4096,
58 vs 69 at 8192, 164 vs 275 at 16384 (torch.nn.LSTM: 79).

'compiled' (recurrent/compiled.py: the plain loop with each step compiled by torch.compile) is never auto's choice:
on this project's CPU it measured 5-10% slower than the plain loop for a peephole LSTM at every size tried (B*H from
512 to 16384, CPU time on one thread), because a compiled step's call overhead (guards, AOTAutograd's wrapper)
eats what fusing its pointwise ops saves, and at large sizes the per-step products dominate either way. Ask for it
by name (backend="compiled"); it is checked like any forced backend (Inductor must run here, and must not have
failed on this cell class before).

Only CPU bf16 autocast changes auto's choice for a built-in layer: torch's fused GRU and RNN would silently run
float32 there, and oneDNN's bf16 LSTM is slower than the bptt engine's C++ loop (1.9x against 1.5x torch.nn fp32
in benchmarks/lm_speed.py) or, without AVX-512, does not run at all. The bptt engine runs its products in bfloat16
and its states in float32 instead.

A forced backend is checked, never changed: 'fused' needs a built-in layer, 'bptt' a cell with step_backward.
On bptt, a plain LSTMCell, GRUCell or LayerNormLSTMCell runs its whole time loop in C++ (`native`) where the
kernel loads and is built for the call's device and dtypes (float32 states with float32 or bfloat16 products,
float64); elsewhere the Python loop runs, and the reason says why. Before any call (call=None) the plan is the layer's: `layer.backend` then.

Generation's per-token step (`choose_step`): one native call per token for a stack of plain LSTMCells on the CPU
in float32 (products float32 or bfloat16), else the Python stepper. Within a native plan, a token whose batch is
over the kernel's max_batch (8 rows; 64 with bfloat16 products and 16 with float32 where AVX-512 runs rows three
at a time; 8 with bfloat16 products where AMX runs oneDNN's), or whose states are not float32 on the CPU, takes
the Python step (NativeStep.takes).

Products with a fixed weight (oneDNN packed, or a plain matmul) are `recurrent.kernels.uses_onednn`'s choice.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor

from recurrent import compiled, hardware, native, traced
from recurrent.native import loops as native_loops
from recurrent.native import lstm as native_lstm
from recurrent.native.step import NativeStep, max_batch  # noqa: F401  (models build a NativeStep from here)

BACKENDS = ("auto", "fused", "bptt", "autograd", "scan", "compiled")
BPTT_MIN = 4096  # B*H below which autograd's backward beats the hand-derived one on CPU (auto picks autograd)
SHARED_MIN = 8192  # B*H from which a forward-only cell's loop shares its nn.Linear products over time (CPU float32)


@dataclass(frozen=True, eq=False)
class Backend:
    """Which backend runs (or ran), and why. Compares equal to its name: `layer.backend == "bptt"`."""

    name: str  # "fused" | "bptt" | "autograd"; for generation's step: "native" | "python"
    reason: str
    native: bool = False  # bptt: the time loop runs in C++ (recurrent.native); generation: one native call
    shared: bool = False  # autograd: the cell's nn.Linear products packed, dW after the loop (recurrent/shared.py)
    traced: bool = False  # bptt: a forward-only cell's step traced and compiled to C (recurrent/traced.py)

    def __eq__(self, other) -> bool:
        if isinstance(other, Backend):
            return (self.name, self.reason) == (other.name, other.reason)
        return self.name == other

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


@dataclass(frozen=True)
class Call:
    """What one call brings that the choice depends on."""

    device: str  # x's device type: 'cpu', 'cuda'
    dtype: torch.dtype  # x's
    state_dtype: torch.dtype | None  # every state field's (the steps run in it); None if they differ
    autocast: torch.dtype | None  # autocast's dtype on x's device; None when it is off
    batch: int | None = None  # B, for the per-shape rows; None: unknown (they do not apply)
    ragged: bool = False  # CPU only: lengths given, some shorter than T (torch's fused kernel packs the sequences)

    @classmethod
    def of(cls, x: Tensor, state: NamedTuple | None = None, lengths: Tensor | None = None) -> Call:
        """The call `layer(x, state, lengths)` makes (x batch-first); without a state, the zeros it starts from
        (x's dtype)."""
        dtypes = {s.dtype for s in state} if state is not None else {x.dtype}
        kind = x.device.type
        on = torch.is_autocast_enabled(kind)
        ragged = kind == "cpu" and lengths is not None and bool((lengths < x.shape[1]).any())
        return cls(kind, x.dtype, dtypes.pop() if len(dtypes) == 1 else None,
                   torch.get_autocast_dtype(kind) if on else None, x.shape[0], ragged)

    @property
    def bf16(self) -> bool:
        """x (float32, or already bfloat16) enters the layer under autocast to bfloat16."""
        return self.dtype in (torch.float32, torch.bfloat16) and self.autocast == torch.bfloat16

    @property
    def cpu_bf16(self) -> bool:
        return self.device == "cpu" and self.bf16


@dataclass
class _Facts:
    """What the table's conditions read. The native kernel is asked only when a row needs it (loading may build)."""

    cell: object
    fused: str | None  # the layer's fused kernel: 'LSTM', 'GRU', 'RNN_TANH', 'RNN_RELU'; None without one
    call: Call | None
    others: tuple = ()  # the layer's other cells (layers and directions), where the plan needs each of them
    cpu_bf16: bool = field(init=False)

    def __post_init__(self):
        self.cpu_bf16 = self.call is not None and self.call.cpu_bf16

    @cached_property
    def native_lstm(self) -> bool:  # a plain LSTMCell, and the C++ loop built and loaded
        return native_lstm.available(self.cell)

    @property
    def onednn_bf16(self) -> bool:
        return hardware.cpu().onednn_bf16

    @property
    def size(self) -> int | None:  # B*H of the call; None before a call
        batch = self.call.batch if self.call is not None else None
        return None if batch is None else batch * self.cell.hidden_size

    @property
    def bptt_min(self) -> int:  # a cell class may declare its own crossover, measured: `bptt_min = 0` (always bptt)
        return getattr(type(self.cell), "bptt_min", BPTT_MIN)

    def below(self, threshold: int) -> bool:
        return self.size is not None and self.size < threshold

    @property
    def shares_products(self) -> bool:  # recurrent/shared.py runs this call: a forward-only cell with nn.Linear
        c = self.call
        return (self.size is not None and self.size >= SHARED_MIN and not self.cell.has_step()
                and c.device == "cpu" and c.dtype == c.state_dtype == torch.float32
                and c.autocast in (None, torch.bfloat16)
                and torch.backends.mkldnn.is_available() and not torch.compiler.is_compiling()
                and any(isinstance(m, torch.nn.Linear) for m in self.cell.modules()))

    @cached_property
    def traced(self) -> traced.TracedCell | str:  # a forward-only cell's compiled step for this call, or why none
        c, cell = self.call, self.cell
        if cell.has_step():
            return f"{self.cell_name} splits into project_input and step"
        if c is None:
            return "not traced before a call"
        if c.device != "cpu" or c.autocast not in (None, torch.bfloat16) or c.dtype != c.state_dtype:
            return "steps are compiled for the CPU, float32 or float64 (products in bfloat16 under its autocast)"
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return "inside torch.compile or a TorchScript trace"
        for switch in ("RECURRENT_TRACED", "RECURRENT_NATIVE"):  # the second: nothing compiled at run time
            if os.environ.get(switch, "1") == "0":
                return f"disabled by {switch}=0"
        runners = [traced.runner(each, c.state_dtype) for each in (cell, *self.others)]  # one plan for all
        for i, runner in enumerate(runners):
            if isinstance(runner, str):
                return runner if i == 0 else f"cell {i + 1} of the layer's {len(runners)}: {runner}"
        return runners[0]

    @property
    def traces(self) -> bool:
        return not isinstance(self.traced, str)

    @cached_property
    def not_compiled(self) -> str | None:  # why backend='compiled' cannot run this call; None if it can
        if torch.compiler.is_compiling():
            return "already inside torch.compile"
        return compiled.unavailable(self.call.device) or compiled.failure(self.cell)

    @property
    def cell_name(self) -> str:
        return type(self.cell).__name__

    @property
    def layer_name(self) -> str:
        return {"RNN_TANH": "RNN", "RNN_RELU": "RNN"}.get(self.fused, self.fused)


class Row(NamedTuple):
    """One line of a table: the backend, when it applies, and why (both read the facts)."""

    backend: str
    when: Callable[..., bool]
    why: Callable[..., str]


BF16 = "auto under CPU bf16 autocast: "
AUTO: list[Row] = [
    Row("bptt", lambda f: f.fused in ("LSTM", "GRU") and f.call is not None and f.call.ragged and not f.cpu_bf16
        and f.call.dtype == f.call.state_dtype == torch.float32 and native_loops.available(f.cell)
        and not torch.jit.is_tracing(),  # a TorchScript trace (torch.onnx.export, dynamo=False) records the fused
        # kernel as aten::lstm (ONNX's LSTM); the C++ loop would be an opaque Python op in it
        lambda f: f"{f.layer_name} with lengths on the CPU: the C++ loop, as torch's fused kernel runs packed "
                  "sequences without oneDNN, several times slower in training (a speech step, 3x192 "
                  "bidirectional, B16 T180: LSTM 1.58 s against 0.39 s, GRU 0.65 s against 0.28 s)"),
    Row("fused", lambda f: f.fused is not None and not f.cpu_bf16,
        lambda f: f"plain built-in {f.layer_name}: torch's fused kernel (oneDNN on CPU, cuDNN on CUDA)"),
    Row("bptt", lambda f: f.fused == "LSTM" and f.cpu_bf16 and f.native_lstm,
        lambda f: BF16 + "bf16 products in the bptt engine, faster than oneDNN's bf16 LSTM"),
    Row("fused", lambda f: f.fused == "LSTM" and f.cpu_bf16 and f.onednn_bf16,
        lambda f: BF16 + "oneDNN's bf16 LSTM (the C++ loop did not build)"),
    Row("bptt", lambda f: f.fused == "LSTM" and f.cpu_bf16,
        lambda f: BF16 + "bf16 products in the bptt engine (oneDNN's bf16 LSTM does not run on this CPU)"),
    Row("bptt", lambda f: f.fused is not None and f.cpu_bf16,
        lambda f: BF16 + f"bf16 products in the bptt engine (torch's fused {f.fused} would run float32)"),
    Row("scan", lambda f: has_scan(f.cell), lambda f: f"{f.cell_name} runs as a parallel scan over time"),
    Row("bptt", lambda f: native_loops.find(f.cell) is not None, lambda f: f"{f.cell_name} supplies step_backward"),
    Row("autograd", lambda f: f.cell.has_backward() and f.below(f.bptt_min) and f.call.device == "cpu",
        lambda f: f"{f.cell_name} supplies step_backward, but at B*H = {f.size} < {f.bptt_min} autograd's C++ "
                  "backward beats its Python loop"),
    Row("bptt", lambda f: f.cell.has_backward(), lambda f: f"{f.cell_name} supplies step_backward"),
    Row("bptt", lambda f: f.traces, lambda f: f"{f.cell_name} writes only forward: its step traced and compiled to "
                                              "C, its products batched as a built-in cell's (recurrent/traced.py)"),
    Row("autograd", lambda f: f.call is None or f.cell.has_step(), lambda f: f"{f.cell_name} has no step_backward"),
    Row("autograd", lambda f: True, lambda f: f"{f.cell_name} has no step_backward, and its step is not compiled: "
                                              f"{f.traced}"),
]


def choose(cell, backend: str = "auto", fused: str | None = None, call: Call | None = None,
           others: tuple = ()) -> Backend:
    """The backend a layer of `cell` runs on for `call` (None: before any call), and why.

    cell: the layer's cell (every layer and direction has the same type); backend: what was asked, one of
    BACKENDS; fused: the layer's fused kernel mode, None for a layer without one; others: the layer's other cells
    (a compiled step must compile for each: a deeper layer's input width differs). Raises instead of falling back."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    facts = _Facts(cell, fused, call, tuple(others))
    if backend == "auto":
        row = next(r for r in AUTO if r.when(facts))
        name, why = row.backend, row.why(facts)
    else:
        name, why = backend, _check_forced(facts, backend)
    if name == "bptt":
        return _bptt(facts, why)
    if name == "autograd" and backend == "auto" and facts.shares_products:
        if facts.call.autocast is not None:  # oneDNN packs float32 weights only: the input's part is what is left
            return Backend("autograd", why + f"; at B*H = {facts.size} >= {SHARED_MIN} the input's part of its "
                                             "nn.Linear products runs once for the whole sequence, in bfloat16 "
                                             "(recurrent/shared.py)", shared=True)
        return Backend("autograd", why + f"; at B*H = {facts.size} >= {SHARED_MIN} its nn.Linear products are packed "
                                         "once per sequence, their weight gradients one product after the loop, "
                                         "the input's part once for the whole sequence (recurrent/shared.py)",
                       shared=True)
    if name == "fused" and facts.cpu_bf16:
        why += "; run in bfloat16" + ("" if facts.onednn_bf16 else
                                      " by torch's own loop (oneDNN's bf16 kernels do not run on this CPU)")
    return Backend(name, why)


def _check_forced(facts: _Facts, backend: str) -> str:
    name = facts.cell_name
    if backend == "fused" and facts.fused is None:
        raise ValueError(f"backend='fused' needs a built-in RNN/LSTM/GRU layer; {name} has no fused kernel")
    if backend == "bptt" and not facts.cell.has_backward():
        raise ValueError(f"backend='bptt' needs a cell with project_input, step and step_backward; "
                         f"{name} lacks {'step_backward' if facts.cell.has_step() else 'project_input/step'}"
                         + ("" if facts.cell.has_step() else
                            " (auto compiles a forward-only cell's step where it can)"))
    if backend == "scan" and not has_scan(facts.cell):
        raise ValueError(f"backend='scan' needs a cell with parallel_scan (minGRU, minLSTM); {name} has none")
    if backend == "compiled" and facts.call is not None and facts.not_compiled is not None:
        raise ValueError(f"backend='compiled' cannot run {name}: {facts.not_compiled}")
    return f"forced by backend={backend!r}"


def has_scan(cell) -> bool:
    """True for a cell whose whole sequence runs as one parallel scan: cell.parallel_scan(x (T, B, I), state)."""
    return callable(getattr(cell, "parallel_scan", None))


def _bptt(facts: _Facts, why: str) -> Backend:
    """bptt, with the time loop in C++ where it runs for this call, and a reason that says which loop runs."""
    cell, call = facts.cell, facts.call
    if not cell.has_backward():  # a forward-only cell, auto's choice for this call: its compiled step
        return Backend("bptt", why, traced=True)
    if native_loops.find(cell) is None:  # no C++ loop is written for this cell: recurrent/native/loops.py
        if isinstance(cell, native_lstm.LSTMCell) and (call is None or call.device == "cpu"):
            return Backend("bptt", why + f"; time loop: Python, not the C++ loop "
                                         f"({native_lstm.not_plain_because(cell)})")
        return Backend("bptt", why)
    if call is None:  # the plan before any call: it depends on the call
        return Backend("bptt", why + "; on CPU its time loop runs in C++ (recurrent.native, where it builds)")
    if torch.compiler.is_compiling():
        return Backend("bptt", why + "; time loop: Python under torch.compile (the C++ loop is opaque to the graph)")
    products = call.autocast or cell.weight_hh.dtype  # the engine casts W to autocast's dtype
    if native_loops.runs(cell, call.device, call.state_dtype, products):
        return Backend("bptt", why + "; time loop: the C++ loop (recurrent.native)", native=True)
    if call.device != "cpu":
        return Backend("bptt", why)  # the C++ loop is for the CPU only: nothing to explain on a GPU
    if not native_loops.available(cell):
        return Backend("bptt", why + f"; time loop: Python (native kernels: {native.status()})")
    return Backend("bptt", why + f"; time loop: Python (the C++ loop has no kernel for {call.state_dtype} states "
                                 f"with {products} products)")


def onednn_bf16() -> bool:
    """True where oneDNN's bfloat16 kernels run (AVX-512 or AVX-NE-CONVERT): a fused layer in bf16 elsewhere
    must switch oneDNN off, so that torch's own loop runs it."""
    return hardware.cpu().onednn_bf16


# --- generation: one token at a time ----------------------------------------------------------------------------

class _Step(NamedTuple):
    cells: list  # the model's cells, one per layer
    table: Tensor | None  # layer 0's U e_v + b_ih for every token v; None if its cell has no step
    dtype: torch.dtype | None  # the products' dtype; None: the weights'

    @property
    def cpu_float32(self) -> bool:
        return (self.table.dtype == torch.float32 and all(p.device.type == "cpu" and p.dtype == torch.float32
                                                          for c in self.cells for p in c.parameters()))


STEP: list[Row] = [
    Row("python", lambda f: f.table is None, lambda f: "layer 0's cell has no step (no input table)"),
    Row("python", lambda f: not all(native_lstm.is_plain_lstm(c) for c in f.cells),
        lambda f: "the native step runs stacks of plain LSTMCells only"),
    Row("python", lambda f: not f.cpu_float32, lambda f: "the native step needs float32 weights on the CPU"),
    Row("python", lambda f: f.dtype not in (None, torch.float32, torch.bfloat16),
        lambda f: f"the native step has no {f.dtype} products"),
    Row("python", lambda f: native.load() is None, lambda f: f"native kernels: {native.status()}"),
    Row("native", lambda f: True, lambda f: f"one native call per token up to batch {max_batch(f.dtype)} "
                                            "(recurrent/native/step.py)"),
]


def choose_step(cells: list, table: Tensor | None, dtype: torch.dtype | None) -> Backend:
    """How a LanguageModel's Stepper runs a token: 'native' (one C++ call for every layer and the decoder) or
    'python' (the cells called per token), and why. table: layer 0's input projection of every token (None if
    its cell has no step); dtype: the products' (None: the weights')."""
    facts = _Step(cells, table, dtype)
    row = next(r for r in STEP if r.when(facts))
    return Backend(row.backend, row.why(facts), native=row.backend == "native")
