"""Which C++ time loop runs a cell on the `bptt` backend: the LSTM's (lstm.py), the GRU's (gru.py), the LayerNorm
LSTM's (layernorm_lstm.py), or none.

    loops.find(cell)                                    # 'lstm', 'gru', 'layernorm_lstm', or None
    loops.runs(cell, "cpu", torch.float32, torch.bfloat16)  # recurrent.backends asks, for each call
    loops.run(cell, x, state, W)                        # engine.run_cell, where recurrent.backends said so

Each loop runs only a plain cell of its type (its own step, step_backward and projection, as `is_plain_*` checks):
a subclass that changes the equations runs the Python loop, which calls them.
"""
from __future__ import annotations

from torch import Tensor

from recurrent.native import gru, layernorm_lstm, lstm

# name -> (module, its plain-cell test, its loop); the functions are looked up on each call, so that a test may
# monkeypatch a module's `runs`
LOOPS = {"lstm": (lstm, "is_plain_lstm", "lstm_loop"), "gru": (gru, "is_plain_gru", "gru_loop"),
         "layernorm_lstm": (layernorm_lstm, "is_plain_layernorm_lstm", "layernorm_lstm_loop")}


def find(cell) -> str | None:
    """The name of the C++ loop written for this cell, or None."""
    return next((name for name, (module, plain, _) in LOOPS.items() if getattr(module, plain)(cell)), None)


def available(cell) -> bool:
    """True if a C++ loop is written for this cell and the native library loads."""
    name = find(cell)
    return name is not None and LOOPS[name][0].available(cell)


def runs(cell, device: str, state_dtype, product_dtype) -> bool:
    """True if a C++ loop runs this cell for a call on `device` with these state and product dtypes."""
    name = find(cell)
    return name is not None and LOOPS[name][0].runs(cell, device, state_dtype, product_dtype)


def run(cell, x: Tensor, state, W: Tensor) -> tuple[Tensor, ...]:
    """x (T, B, I) -> every state field at every step, each (T, B, H); W already in the products' dtype."""
    module, _, loop = LOOPS[find(cell)]
    return getattr(module, loop)(cell, x, state, W)
