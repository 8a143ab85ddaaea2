"""The backend plan (recurrent/backends.py), row by row, on CPUs of each kind (the probe monkeypatched) and with
the native kernels loaded or not (monkeypatched: nothing here builds or runs them). The layers' own tests run the
paths it picks (tests/test_layers.py, tests/test_native_lstm.py)."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

import recurrent as rc
from recurrent import compiled, hardware, native
from recurrent.backends import BPTT_MIN, Call, choose, choose_step

F32, BF16, F64 = torch.float32, torch.bfloat16, torch.float64
PLAIN = Call("cpu", F32, F32, None)  # float32 on the CPU, no autocast
CPU_BF16 = Call("cpu", F32, F32, BF16)  # float32 x under CPU autocast to bfloat16
CUDA_BF16 = Call("cuda", F32, F32, BF16)
RAGGED = Call("cpu", F32, F32, None, 4, True)  # float32 on the CPU, lengths given and some shorter than T
ROOT = Path(__file__).parents[1]


def machine(monkeypatch, onednn_bf16: bool, native_loads: bool) -> None:
    """A CPU with or without oneDNN's bf16 kernels, where the native kernels load or do not."""
    real = hardware.cpu()
    monkeypatch.setattr(hardware, "cpu", lambda: dataclasses.replace(real, onednn_bf16=onednn_bf16))
    monkeypatch.setattr(native, "load", (lambda: object()) if native_loads else (lambda: None))


def plan(layer: rc.Recurrent, call: Call | None, backend: str = "auto"):
    return choose(layer.cells[0][0], backend, layer.fused_mode, call)


class ForwardOnly(rc.Cell):
    def forward(self, x, state):
        return rc.RNNState(torch.tanh(x.sum(-1, keepdim=True) + state.h))


# (layer, call, oneDNN bf16, native loads) -> (backend, C++ loop, words in the reason)
AUTO_TABLE = [
    (rc.LSTM, RAGGED, False, True, "bptt", True, "LSTM with lengths on the CPU: the C++ loop"),
    (rc.GRU, RAGGED, False, True, "bptt", True, "GRU with lengths on the CPU: the C++ loop"),
    (rc.LSTM, RAGGED, False, False, "fused", False, "plain built-in LSTM: torch's fused kernel"),  # no C++ loop
    (rc.RNN, RAGGED, False, True, "fused", False, "plain built-in RNN: torch's fused kernel"),  # none written
    (rc.LSTM, PLAIN, True, True, "fused", False, "plain built-in LSTM: torch's fused kernel"),
    (rc.GRU, PLAIN, False, False, "fused", False, "plain built-in GRU: torch's fused kernel"),
    (rc.LSTM, CUDA_BF16, False, True, "fused", False, "torch's fused kernel"),  # CUDA: cuDNN, cast to bf16
    (rc.LSTM, CPU_BF16, True, True, "bptt", True, "faster than oneDNN's bf16 LSTM; time loop: the C++ loop"),
    (rc.LSTM, CPU_BF16, False, True, "bptt", True, "faster than oneDNN's bf16 LSTM; time loop: the C++ loop"),
    (rc.LSTM, CPU_BF16, True, False, "fused", False, "oneDNN's bf16 LSTM (the C++ loop did not build)"),
    (rc.LSTM, CPU_BF16, False, False, "bptt", False, "oneDNN's bf16 LSTM does not run on this CPU"),
    (rc.GRU, CPU_BF16, True, True, "bptt", True, "torch's fused GRU would run float32"),
    (rc.RNN, CPU_BF16, False, False, "bptt", False, "torch's fused RNN_TANH would run float32"),
]


@pytest.mark.parametrize("kind, call, onednn_bf16, native_loads, name, cpp, words", AUTO_TABLE)
def test_auto_for_built_in_layers(monkeypatch, kind, call, onednn_bf16, native_loads, name, cpp, words):
    machine(monkeypatch, onednn_bf16, native_loads)
    backend = plan(kind(3, 4), call)
    assert (backend.name, backend.native) == (name, cpp) and words in backend.reason


@pytest.mark.parametrize("call", [PLAIN, CPU_BF16])
def test_auto_for_any_other_cell_follows_the_cell(monkeypatch, call):
    machine(monkeypatch, onednn_bf16=False, native_loads=True)
    assert plan(rc.Recurrent(rc.GRUCell, 3, 4), call) == rc.Backend(
        "bptt", "GRUCell supplies step_backward; time loop: the C++ loop (recurrent.native)")
    assert plan(rc.Recurrent(rc.LayerNormLSTMCell, 3, 4), call) == "bptt"
    forward_only = plan(rc.Recurrent(ForwardOnly, 3, 4), call)
    assert forward_only == "autograd" and forward_only.reason.startswith("ForwardOnly has no step_backward, and its "
                                                                        "step is not compiled: ")
    lstm = plan(rc.Recurrent(rc.LSTMCell, 3, 4), call)  # a plain LSTMCell in a generic layer: the C++ loop too
    assert lstm.native and lstm.reason == "LSTMCell supplies step_backward; time loop: the C++ loop (recurrent.native)"


def test_forced_bptt_says_which_time_loop_runs_and_why(monkeypatch):
    layer = rc.LSTM(3, 4)
    machine(monkeypatch, onednn_bf16=True, native_loads=True)
    assert plan(layer, PLAIN, "bptt").native and plan(layer, CPU_BF16, "bptt").native  # f32/f32, f32/bf16 built
    assert plan(layer.double(), Call("cpu", F64, F64, None), "bptt").native
    no_kernel = plan(layer.float(), Call("cpu", BF16, BF16, None), "bptt")  # bf16 states: no such kernel
    assert not no_kernel.native and "time loop: Python (the C++ loop has no kernel for torch.bfloat16 states with " \
                                      "torch.float32 products)" in no_kernel.reason
    cuda = plan(layer, Call("cuda", F32, F32, None), "bptt")
    assert not cuda.native and cuda.reason == "forced by backend='bptt'"
    assert not plan(layer, Call("cpu", F32, None, None), "bptt").native  # h and c in different dtypes
    machine(monkeypatch, onednn_bf16=True, native_loads=False)
    python = plan(layer, PLAIN, "bptt")
    assert not python.native and python.reason.startswith("forced by backend='bptt'; time loop: Python (native "
                                                          "kernels: ")


def test_forced_backends_stay_or_raise_saying_why(monkeypatch):
    machine(monkeypatch, onednn_bf16=False, native_loads=True)
    gru, generic = rc.GRU(3, 4), rc.Recurrent(ForwardOnly, 3, 4)
    forced = plan(gru, CPU_BF16, "fused")
    assert forced == "fused"  # forced: stays, and casts to bf16 itself
    assert "run in bfloat16 by torch's own loop (oneDNN's bf16 kernels do not run" in forced.reason
    assert plan(gru, CPU_BF16, "autograd") == rc.Backend("autograd", "forced by backend='autograd'")
    with pytest.raises(ValueError, match="backend='fused' needs a built-in RNN/LSTM/GRU layer; ForwardOnly has no "
                                         "fused kernel"):
        plan(generic, None, "fused")
    with pytest.raises(ValueError, match="backend='bptt' needs a cell with project_input, step and step_backward; "
                                         "ForwardOnly lacks project_input/step"):
        plan(generic, PLAIN, "bptt")
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'fused', 'bptt', 'autograd', 'scan', "
                                         r"'compiled'\), got 'cudnn'"):
        plan(gru, None, "cudnn")


def test_the_plan_before_any_call_loads_nothing(monkeypatch):
    """Building a layer (and setting its backend) plans without an input, and never builds the native kernels."""
    monkeypatch.setattr(native, "load", lambda: pytest.fail("native.load() called while planning"))
    lstm = rc.LSTM(3, 4)
    assert lstm.backend == "fused" and not lstm.backend.native
    lstm.backend = "bptt"
    assert "runs in C++ (recurrent.native, where it builds)" in lstm.backend.reason and not lstm.backend.native
    lstm.backend = "auto"
    assert lstm._backend_for(torch.zeros(1, 2, 3)) == "fused"  # a call without autocast: no need to ask either


def test_call_of_says_when_lengths_differ():
    x = torch.zeros(2, 5, 3)
    assert Call.of(x, lengths=torch.tensor([5, 3])).ragged
    assert not Call.of(x, lengths=torch.tensor([5, 5])).ragged and not Call.of(x).ragged


def test_call_of_reads_device_dtypes_and_autocast():
    x = torch.zeros(2, 3, 4)  # (B, T, I)
    assert Call.of(x) == dataclasses.replace(PLAIN, batch=2) and not Call.of(x).cpu_bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert Call.of(x) == dataclasses.replace(CPU_BF16, batch=2) and Call.of(x).cpu_bf16 and Call.of(x.bfloat16()).cpu_bf16
        assert not Call.of(x.double()).cpu_bf16
    state = rc.LSTMState(torch.zeros(1, 1, 2, 4, dtype=F64), torch.zeros(1, 1, 2, 4))
    assert Call.of(x, state).state_dtype is None  # fields in different dtypes


# --- per shape, user cells and subclasses of LSTMCell ---------------------------------------------------------

def sized(call: Call, batch: int) -> Call:
    return dataclasses.replace(call, batch=batch)


def compiles(monkeypatch, why_not: str | None = None) -> None:
    """Inductor runs here (or not, and why), and no cell class has failed to compile."""
    monkeypatch.setattr(compiled, "unavailable", lambda device: why_not)
    monkeypatch.setattr(compiled, "FAILED", {})


def test_bptt_or_autograd_by_shape(monkeypatch):
    """Below BPTT_MIN = B*H a cell's hand-derived backward loses to autograd's on the CPU; at it and above, bptt."""
    machine(monkeypatch, onednn_bf16=False, native_loads=True)
    layer = rc.Recurrent(rc.ElmanCell, 3, 64)  # no C++ loop for Elman: the Python bptt loop
    small, large = BPTT_MIN // 64 - 1, BPTT_MIN // 64
    assert plan(layer, sized(PLAIN, small)) == rc.Backend(
        "autograd", f"ElmanCell supplies step_backward, but at B*H = {small * 64} < {BPTT_MIN} autograd's C++ "
                    "backward beats its Python loop")
    assert plan(layer, sized(PLAIN, large)) == rc.Backend("bptt", "ElmanCell supplies step_backward")
    assert plan(layer, sized(Call("cuda", F32, F32, None), small)) == "bptt"  # measured on the CPU only
    assert plan(layer, sized(PLAIN, small), "bptt") == "bptt"  # forced: stays
    lstm = plan(rc.Recurrent(rc.LSTMCell, 3, 64), sized(PLAIN, 1))  # the C++ loop beats autograd at every size
    assert lstm == "bptt" and lstm.native

    class Measured(rc.ElmanCell):
        bptt_min = 0  # its author measured bptt faster at every size

    assert plan(rc.Recurrent(Measured, 3, 64), sized(PLAIN, 1)) == rc.Backend("bptt", "Measured supplies step_backward")


def test_compiled_is_asked_for_by_name_and_checked(monkeypatch):
    """auto never picks 'compiled' (measured no faster on CPU); forced, it needs Inductor and no earlier failure."""
    machine(monkeypatch, onednn_bf16=False, native_loads=True)
    compiles(monkeypatch)
    layer = rc.Recurrent(ForwardOnly, 3, 512)
    assert plan(layer, sized(PLAIN, 64)) == rc.Backend("autograd", "ForwardOnly has no step_backward, and its step is "
                                                       "not compiled: its forward calls no F.linear (nn.Linear) "
                                                       "with its own weights")
    assert plan(layer, sized(PLAIN, 64), "compiled") == rc.Backend("compiled", "forced by backend='compiled'")
    assert plan(layer, None, "compiled") == "compiled"  # before a call: nothing to check yet
    compiled.FAILED[ForwardOnly] = "BackendCompilerFailed: no"  # an earlier compile of this class failed
    with pytest.raises(ValueError, match="backend='compiled' cannot run ForwardOnly: BackendCompilerFailed: no"):
        plan(layer, PLAIN, "compiled")
    compiles(monkeypatch, why_not="Inductor on CPU needs a C++ compiler")
    with pytest.raises(ValueError, match="cannot run ForwardOnly: Inductor on CPU needs a C\\+\\+ compiler"):
        plan(layer, PLAIN, "compiled")
    compiles(monkeypatch)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(ValueError, match="cannot run ForwardOnly: already inside torch.compile"):
        plan(layer, PLAIN, "compiled")


class SameLSTM(rc.LSTMCell):
    """Adds a method, overrides no equation: keeps the C++ loop."""

    def gates(self, x):
        return self.project_input(x.unsqueeze(0))[0]


class DelegatingLSTM(rc.LSTMCell):
    def step(self, gx, gh, state):
        return super().step(gx, gh, state)


class DeclaredLSTM(DelegatingLSTM):
    same_equations = True  # its author vouches that step is LSTMCell's


class LeakyLSTM(rc.LSTMCell):
    def step(self, gx, gh, state):
        new, saved = super().step(gx, gh, state)
        return rc.LSTMState(new.h, 0.9 * new.c), saved


@pytest.mark.parametrize("cell, native_loop, words", [
    (SameLSTM, True, "time loop: the C++ loop"),
    (DeclaredLSTM, True, "time loop: the C++ loop"),
    (DelegatingLSTM, False, ("time loop: Python, not the C++ loop (DelegatingLSTM overrides step; set "
                             "same_equations = True if it keeps LSTMCell's)")),
    (LeakyLSTM, False, "LeakyLSTM overrides step"),
])
def test_a_subclass_of_lstm_cell_keeps_the_cpp_loop_only_with_the_same_equations(monkeypatch, cell, native_loop,
                                                                                words):
    machine(monkeypatch, onednn_bf16=False, native_loads=True)
    backend = plan(rc.Recurrent(cell, 3, 64), sized(PLAIN, 64))
    assert backend == "bptt" and backend.native == native_loop and words in backend.reason


def test_a_step_replaced_on_the_instance_loses_the_cpp_loop(monkeypatch):
    machine(monkeypatch, onednn_bf16=False, native_loads=True)
    layer = rc.Recurrent(rc.LSTMCell, 3, 64)
    layer.cells[0][0].step = DelegatingLSTM.step.__get__(layer.cells[0][0])
    backend = plan(layer, sized(PLAIN, 64))
    assert not backend.native and "LSTMCell has step replaced on the instance" in backend.reason


# --- generation's per-token step -------------------------------------------------------------------------------


def lstm_stack(dtype=F32, cell=rc.LSTMCell):
    cells = [cell(4, 8).to(dtype), cell(8, 8).to(dtype)]
    return cells, cells[0].project_input(torch.randn(1, 5, 4, dtype=dtype))[0]  # table (V, G)


STEP_TABLE = [  # (cells and table, products' dtype, native loads) -> (step, words in the reason)
    (lstm_stack(), None, True, "native", "one native call per token up to batch"),
    (lstm_stack(), BF16, True, "native", "one native call per token"),
    (lstm_stack(), None, False, "python", "native kernels: "),
    (lstm_stack(), torch.float16, True, "python", "the native step has no torch.float16 products"),
    (lstm_stack(F64), None, True, "python", "the native step needs float32 weights on the CPU"),
    (lstm_stack(cell=rc.GRUCell), None, True, "python", "the native step runs stacks of plain LSTMCells only"),
    (([rc.Recurrent(ForwardOnly, 4, 8).cells[0][0]], None), None, True, "python", "layer 0's cell has no step"),
]


@pytest.mark.parametrize("stack, dtype, native_loads, name, words", STEP_TABLE)
def test_generation_step(monkeypatch, stack, dtype, native_loads, name, words):
    machine(monkeypatch, onednn_bf16=False, native_loads=native_loads)
    step = choose_step(*stack, dtype)
    assert (step.name, step.native) == (name, name == "native") and words in step.reason


@pytest.mark.parametrize("isa, amx, dtype, most", [
    ("avx512bf16", False, BF16, 64), ("avx512bf16", False, None, 16), ("avx512", False, None, 16),
    ("avx512", False, BF16, 8), ("avx2", False, BF16, 8), ("avx2", False, None, 8), ("neon", False, None, 8),
    ("generic", False, BF16, 8),
    ("avx512bf16", True, BF16, 8), ("avx512bf16", True, None, 16)])  # AMX: oneDNN's bf16 products from 16 rows
def test_the_native_step_takes_larger_batches_where_avx512_tiles_the_rows(monkeypatch, isa, amx, dtype, most):
    from recurrent import hardware
    from recurrent.native import step

    probed = hardware.cpu()
    features = (probed.features | {"amx_bf16"}) if amx else (probed.features - {"amx_bf16"})
    monkeypatch.setattr(step.hardware, "cpu", lambda: hardware.CPU(**{**probed.__dict__, "features": features}))
    monkeypatch.setattr(step.native, "info", lambda: {"isa": isa})
    assert step.max_batch(dtype) == most


def imports(path: str) -> set[str]:
    """The modules a file imports, and each `from m import name` as 'm.name'."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


@pytest.mark.parametrize("path", ["recurrent/layers.py", "recurrent/models/lm.py"])
def test_layers_and_models_ask_only_the_plan(path):
    """They import recurrent.backends, never recurrent.native or the probe."""
    found = imports(path)
    assert "recurrent.backends" in found
    assert not [m for m in found if m.startswith(("recurrent.native", "recurrent.hardware"))]
