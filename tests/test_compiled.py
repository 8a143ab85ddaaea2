"""The compiled backend (recurrent/compiled.py): a cell's step compiled by torch.compile gives what the autograd loop
gives, forward and gradients (float64); a failed compile raises once, after which the plan refuses, saying why. The tests that really compile take seconds each (Inductor builds C++): there are two, on tiny shapes.

Key: B batch, T time, I input, H hidden.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

import recurrent as rc
from recurrent import compiled

B, T, I, H = 3, 5, 2, 4
LENGTHS = torch.tensor([5, 2, 4])
F64 = torch.float64


# Cells defined where dynamo can import their module (a cell exec'd from docs/cells.md has none: that fails to
# compile, and auto then runs the plain loop, saying why)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No compiled step and no failure left over from another test."""
    monkeypatch.setattr(compiled, "FAILED", {})
    monkeypatch.setattr(compiled, "_STEPS", {})


class Leaky(rc.Cell):
    """A cell that writes only forward: h_t = tanh(U x + W h) mixed with h_{t-1}."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x, state):  # x (B, I), h (B, H)
        return rc.RNNState(0.5 * state.h + 0.5 * torch.tanh(self.linear(torch.cat([x, state.h], dim=1))))


class ElmanNoBackward(rc.ElmanCell):
    step_backward = rc.Cell.step_backward  # as if it had never been written: project_input + step only


def run_both(layer: rc.Recurrent, x, state=None, lengths=None) -> dict:
    """Outputs, final state and gradients (x, state, parameters) on the compiled and the autograd backends."""
    results = {}
    w = torch.randn(B, T, layer.num_directions * H, dtype=F64)
    for backend in ("compiled", "autograd"):
        layer.backend = backend
        out, final = layer(x, state, lengths)
        loss = (out * w).sum() + sum(f.pow(2).sum() for f in final)
        inputs = [x, *(s for s in state or () if s.requires_grad), *layer.parameters()]
        results[backend] = (out, *final, *torch.autograd.grad(loss, inputs))
        assert layer.backend == backend
    return results


def assert_same(results: dict) -> None:
    for got, want in zip(results["compiled"], results["autograd"], strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.slow  # about 20 s on 2 busy cores: Inductor's first compile in a process
@pytest.mark.skipif(compiled.unavailable("cpu") is not None, reason=str(compiled.unavailable("cpu")))
def test_compiled_forward_only_cell_equals_autograd_on_a_padded_bidirectional_batch(monkeypatch):
    """A cell with only forward, from a carried state that needs grad; both directions share one compiled step (one
    signature, and dynamo never recompiles it for the second cell)."""
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
    layer = rc.Recurrent(Leaky, I, H, bidirectional=True).double()
    x = torch.randn(B, T, I, dtype=F64, requires_grad=True)
    state = rc.RNNState(torch.randn(1, 2, B, H, dtype=F64, requires_grad=True))
    assert_same(run_both(layer, x, state, LENGTHS))
    assert len(compiled._STEPS) == 1 and not compiled.FAILED


@pytest.mark.skipif(compiled.unavailable("cpu") is not None, reason=str(compiled.unavailable("cpu")))
def test_compiled_step_cell_keeps_the_batched_projection_and_equals_autograd():
    """An Elman cell without its step_backward: project_input over all t, then the compiled step (W h + b, tanh)."""
    layer = rc.Recurrent(ElmanNoBackward, I, H).double()
    assert layer.cells[0][0].has_step() and not layer.cells[0][0].has_backward()
    x = torch.randn(B, T, I, dtype=F64, requires_grad=True)
    assert_same(run_both(layer, x))
    ((key, _),) = compiled._STEPS.items()
    assert key[1] == "_pointwise_step" and key[2][0][0] == (B, H)  # gx_t (B, G = H) comes in projected


def refuse(*args, **kwargs):
    def compiled_step(*a, **k):
        raise RuntimeError("boom: Inductor could not lower an op")

    return compiled_step


def test_a_failed_compile_raises_and_the_next_plan_refuses_saying_why(monkeypatch):
    monkeypatch.setattr(compiled.torch, "compile", refuse)
    monkeypatch.setattr(compiled, "unavailable", lambda device: None)
    layer = rc.Recurrent(Leaky, I, H, backend="compiled")
    x = torch.randn(B, T, I)
    with pytest.raises(RuntimeError, match="boom"):
        layer(x)
    with pytest.raises(ValueError, match=r"backend='compiled' cannot run Leaky: RuntimeError: boom: Inductor could "
                                         r"not lower an op"):
        layer(x)
    layer.backend = "auto"  # auto never runs torch.compile: its own compiled step (recurrent/traced.py)
    assert layer(x)[0].shape == (B, T, H) and layer.backend == "bptt" and layer.backend.traced


def test_each_signature_gets_its_own_code_object():
    """dynamo's recompile limit counts per code object: one per signature keeps every signature compiled."""
    cell = Leaky(I, H)
    x, h = torch.randn(B, I), torch.randn(B, H)
    keys = [compiled._signature(cell, compiled._forward_step, (x, h)),
            compiled._signature(cell, compiled._forward_step, (x.double(), h.double())),
            compiled._signature(cell, compiled._forward_step, (x[:2], h[:2]))]
    assert len(set(keys)) == 3
    codes = {compiled._compiled(k, compiled._forward_step)._torchdynamo_orig_callable.__code__ for k in keys}
    assert len(codes) == 3 and compiled._forward_step.__code__ not in codes
