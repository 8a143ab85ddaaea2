"""Recurrent layers: a stack of cells over time, deep and optionally bidirectional.

Key: B batch, T time, I input, H hidden, L layers, D directions (1 or 2).
Everything is batch-first. Internally the engine runs time-major (T, B, ...).
"""
from __future__ import annotations

import warnings
from contextlib import nullcontext
from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent import backends
from recurrent.backends import Backend, Call
from recurrent.cells import Cell, ElmanCell, GRUCell, LSTMCell
from recurrent.engine import check_lengths, flip_valid, last_valid, run_cell, scan_cell, valid_mask, zero_padding
from recurrent.fused import fused_forward


class Recurrent(nn.Module):
    """Run any cell over time: `num_layers` deep, optionally bidirectional, on padded batches.

        layer = Recurrent(MyCell, input_size=32, hidden_size=64, num_layers=2, bidirectional=True)
        out, state = layer(x, state=None, lengths=lengths)

    Shapes:
        x        (B, T, I)
        lengths  (B,) ints in 1..T, or None when every sequence has length T
        out      (B, T, D*H): [forward | backward] halves, zero past each sequence's length
        state    the cell's NamedTuple (RNNState(h) or LSTMState(h, c)), every field (L, D, B, H)

    The state, for num_layers=2, bidirectional=True (the same layout for every cell):

                  direction 0  (→ reads x[0] ... x[len-1])    direction 1  (← reads x[len-1] ... x[0])
                +------------------------------------------+-------------------------------------------+
        layer 1 | h[1, 0] == out[b, len-1, :H]             | h[1, 1] == out[b, 0, H:]                  |
                +------------------------------------------+-------------------------------------------+
        layer 0 | h[0, 0]                                  | h[0, 1]                                   |
                +------------------------------------------+-------------------------------------------+

    So `state.h[-1, 0]` and `state.h[-1, 1]` are the top layer's final forward and backward
    states, each (B, H), already taken at each sequence's last valid step. torch.nn's
    (L*D, B, H) layout is `state.h.reshape(L * D, B, H)` (see `recurrent.state.to_torch_state`).

    Args:
        cell: a Cell class or factory, called as cell(input_size, hidden_size) for each layer and direction
        dropout: dropout on each layer's output except the last, in training mode (as torch.nn)
        learnable_init: learn the initial state (one vector per layer, direction and field) instead of zeros;
            `reset=` restarts a sequence's state from it too
        weight_drop (RNN/LSTM/GRU): DropConnect on each W_hh in training (AWD-LSTM); every backend applies it
        backend: "auto" (the fastest available), "fused", "bptt", "autograd" or "scan" (cells with
            parallel_scan: minGRU, minLSTM); see `layer.backend`. Under
            torch.export every backend runs the same scan over time, lengths as masks (recurrent/export.py)
    """

    def __init__(self, cell: Callable[[int, int], Cell], input_size: int, hidden_size: int, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, learnable_init: bool = False,
                 backend: str = "auto"):
        super().__init__()
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.dropout = bidirectional, float(dropout)
        D = self.num_directions
        self.cells = nn.ModuleList(
            nn.ModuleList(cell(input_size if l == 0 else D * hidden_size, hidden_size) for _ in range(D))
            for l in range(num_layers)
        )
        self.state_type = self.cells[0][0].state_type
        self.initial = None
        if learnable_init:  # (L, D, 1, H) per state field, broadcast over the batch
            self.initial = nn.ParameterDict(
                {f: nn.Parameter(torch.zeros(num_layers, D, 1, hidden_size)) for f in self.state_type._fields}
            )
        self.backend = backend

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    # --- backend choice: explicit, never a silent fallback (recurrent/backends.py holds the table) ---------
    fused_mode: str | None = None  # the fused kernel a built-in layer runs ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")

    @property
    def backend(self) -> Backend:
        """The backend the last call ran on and why, e.g. `bptt (LSTMCell supplies step_backward; time loop: the
        C++ loop (recurrent.native))`; before the first call, the one it plans to run on. Under autocast `auto` may
        choose another (see `_backend_for` and recurrent/backends.py)."""
        return self._ran or self._backend

    @backend.setter
    def backend(self, backend: str) -> None:
        self._asked = str(backend.name if isinstance(backend, Backend) else backend)
        self._backend = backends.choose(self.cells[0][0], self._asked, self.fused_mode)  # raises if it cannot run
        self._ran: Backend | None = None

    def _backend_for(self, x: Tensor, state: NamedTuple | None = None, reset: bool = False,
                     lengths: Tensor | None = None) -> Backend:
        """The backend a call with x (and `state`; default: zeros like x; and `lengths`) runs on, and why."""
        if reset:  # only the plain loop can restart a stream's state between two steps
            return Backend("autograd", f"reset= given: the autograd loop restarts states between steps (asked: "
                                       f"{self._asked}; the fused, bptt and scan paths carry the state unbroken)")
        cells = [cell for layer in self.cells for cell in layer]
        return backends.choose(cells[0], self._asked, self.fused_mode, Call.of(x, state, lengths), cells[1:])

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, state: NamedTuple | None = None, lengths: Tensor | None = None,
                reset: Tensor | None = None) -> tuple[Tensor, NamedTuple]:
        """reset (B, T) bool, optional: where True, that sequence's state restarts (zeros, or the learned initial
        state) before step t, as at a document boundary in a stream; the other sequences carry on. It runs on the
        autograd backend (`layer.backend` says so)."""
        B, T = self._check_input(x)
        lengths = check_lengths(lengths, B, T)
        reset = self._check_reset(reset, B, T, x.device, lengths)
        state = self.initial_state(B, x) if state is None else self._check_state(state, B, x.device)
        exporting = torch.compiler.is_exporting()  # one scan per direction, lengths as masks (recurrent/export.py)
        if exporting and reset is not None:
            raise ValueError("reset= is not supported under torch.export; export the layer without it")
        backend = None if exporting else self._backend_for(x, state, reset is not None, lengths)
        if backend is not None:
            self._ran = backend
        if backend == "fused":
            return self._forward_fused(x, state, lengths)
        if exporting and self.fused_mode is not None:
            from recurrent import export  # late: recurrent.export imports this module
            if export.ONNX_RNN_OPS:  # ONNX's own RNN/LSTM/GRU ops, lengths as their sequence_lens
                return export.onnx_layer(self, x, state, lengths)

        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        inp = zero_padding(x.transpose(0, 1), lengths)  # (T, B, I): time-major inside; padding never matters
        if reset is not None:
            restart, resets = self.initial_state(B, x), _reset_masks(reset, lengths, D)  # D x (T, B, 1)
        finals = []  # L*D lists of final state fields, each (B, H)
        for l, layer in enumerate(self.cells):
            outs = []
            for d, cell in enumerate(layer):
                xin = inp if d == 0 else flip_valid(inp, lengths)  # reverse only the valid part
                start = self.state_type(*(s[l, d] for s in state))
                if exporting:
                    h, final = scan_cell(cell, xin, start, lengths)
                elif reset is not None:
                    to = self.state_type(*(s[l, d] for s in restart))
                    seqs = run_cell(cell, xin, start, backend, resets[d], to)
                    h, final = seqs[0], [last_valid(s, lengths) for s in seqs]
                else:
                    seqs = run_cell(cell, xin, start, backend)
                    h, final = seqs[0], [last_valid(s, lengths) for s in seqs]
                outs.append(h if d == 0 else flip_valid(h, lengths))  # (T, B, H)
                finals.append(final)
            inp = torch.cat(outs, dim=-1) if D == 2 else outs[0]  # (T, B, D*H)
            if self.dropout and l < L - 1:
                inp = F.dropout(inp, self.dropout, self.training)
        out = zero_padding(inp, lengths)
        final = self.state_type(*(torch.stack(f).view(L, D, B, H) for f in zip(*finals)))
        return out.transpose(0, 1), final  # (B, T, D*H)

    def _forward_fused(self, x: Tensor, state: NamedTuple, lengths: Tensor | None):
        raise ValueError(f"{type(self).__name__} has no fused kernel")

    def initial_state(self, batch_size: int, like: Tensor) -> NamedTuple:
        """Zeros, or the learned initial state broadcast over the batch; every field (L, D, B, H)."""
        shape = (self.num_layers, self.num_directions, batch_size, self.hidden_size)
        if self.initial is None:
            zeros = like.new_zeros(shape)
            return self.state_type(*(zeros for _ in self.state_type._fields))
        return self.state_type(*(self.initial[f].expand(shape) for f in self.state_type._fields))

    # --- input checks: fail early, naming expected and received ------------------------------------
    def _check_reset(self, reset, B: int, T: int, device, lengths: Tensor | None) -> Tensor | None:
        """reset (B, T) bool -> (T, B) bool on x's device, False past each sequence's length; or None."""
        if reset is None:
            return None
        if not isinstance(reset, Tensor) or reset.dtype != torch.bool or tuple(reset.shape) != (B, T):
            got = f"{tuple(reset.shape)} {reset.dtype}" if isinstance(reset, Tensor) else type(reset).__name__
            raise ValueError(f"reset must be a (batch, time) = ({B}, {T}) bool tensor, got {got}")
        reset = reset.to(device).t()  # (T, B)
        return reset if lengths is None else reset & valid_mask(lengths, T, device)[..., 0]

    def _check_input(self, x: Tensor) -> tuple[int, int]:
        if not isinstance(x, Tensor) or x.dim() != 3:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be (batch, time, input_size={self.input_size}), got shape {got}")
        B, T, I = x.shape
        if I != self.input_size:
            raise ValueError(f"x must have input_size={self.input_size} features in its last dim, got {I}")
        if B == 0 or T == 0:
            raise ValueError(f"x must have at least one sequence and one time step, got shape {tuple(x.shape)}")
        return B, T

    def _check_state(self, state, B: int, device: torch.device | None = None) -> NamedTuple:
        fields = self.state_type._fields
        if isinstance(state, Tensor):
            state = (state,)
        if not isinstance(state, (tuple, list)) or len(state) != len(fields):
            raise ValueError(f"state must be a {self.state_type.__name__}{fields}, got {type(state).__name__}"
                             f" of length {len(state) if isinstance(state, (tuple, list)) else 'n/a'}")
        expected = (self.num_layers, self.num_directions, B, self.hidden_size)
        for name, s in zip(fields, state):
            if not isinstance(s, Tensor) or tuple(s.shape) != expected:
                got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                raise ValueError(f"state.{name} must have shape (layers, directions, batch, hidden) = {expected}, "
                                 f"got {got}")
            if device is not None and s.device != device:
                raise ValueError(f"state.{name} must be on x's device {device}, got {s.device}")
        return self.state_type(*state)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bidirectional={self.bidirectional}, dropout={self.dropout}, backend={self._backend.name!r}")


def _reset_masks(reset: Tensor, lengths: Tensor | None, D: int) -> list[Tensor]:
    """reset (T, B) -> per direction (T, B, 1) masks in the order that direction reads the steps.

    A reset before step t is a boundary between t-1 and t. The backward direction reads t, then t-1, so it
    restarts before step t-1: its mask is reset shifted one step earlier, then flipped over the valid part."""
    forward = reset.unsqueeze(-1)  # (T, B, 1)
    if D == 1:
        return [forward]
    earlier = torch.cat([forward[1:], torch.zeros_like(forward[:1])])  # boundary before t -> restart before t-1
    return [forward, flip_valid(earlier, lengths)]


class _TorchCompatible(Recurrent):
    """A built-in layer: same parameters as torch.nn, so it runs on torch's fused kernel too."""

    torch_class: type[nn.RNNBase]
    mode: str  # the fused kernel: "LSTM", "GRU", "RNN_TANH", "RNN_RELU"

    @property
    def fused_mode(self) -> str:
        return self.mode

    def _flat_weights(self) -> list[Tensor]:
        """Weights in torch.nn's order: per layer, per direction: w_ih, w_hh[, b_ih, b_hh].

        W_hh comes from `cell.recurrence()`, so weight-drop applies on the fused kernel as on the others.
        """
        weights = []
        for layer in self.cells:
            for cell in layer:
                weights += [cell.weight_ih, cell.recurrence()[0]]
                weights += [cell.bias_ih, cell.bias_hh] if self.bias else []
        return weights

    def _forward_fused(self, x: Tensor, state: NamedTuple, lengths: Tensor | None):
        L, D, B, H = self.num_layers, self.num_directions, x.shape[0], self.hidden_size
        hx = tuple(s.reshape(L * D, B, H) for s in state)  # torch's layout
        weights, autocast, onednn = self._flat_weights(), nullcontext(), nullcontext()
        if Call.of(x).bf16:
            # The kernel runs in bfloat16 because we cast to it, not autocast: on CUDA, torch's autocast runs cuDNN
            # RNNs in float16 whatever dtype it was asked for (its _cudnn_rnn wrapper casts to a float16 buffer),
            # so a bf16 run would silently be fp16, with fp16's range and no loss scaling (cuDNN >= 9.13 has bf16
            # RNNs); on the CPU, autocast leaves GRU and RNN in float32.
            bf16 = torch.bfloat16
            x, hx, weights = x.to(bf16), tuple(h.to(bf16) for h in hx), [w.to(bf16) for w in weights]
            autocast = torch.autocast(x.device.type, enabled=False)
            if x.device.type == "cpu" and not backends.onednn_bf16():  # oneDNN's bf16 LSTM fails to build a
                onednn = torch.backends.mkldnn.flags(enabled=False)  # primitive here: torch's own loop runs it
        with warnings.catch_warnings(), autocast:
            warnings.filterwarnings("ignore", "TF32 acceleration on top of oneDNN")  # said by mkldnn.flags()
            # Each cell owns its weights (so that every backend can run it), so cuDNN copies them into one
            # buffer per call and warns about it, suggesting a flatten_parameters() we do not have. The copy is
            # one pass over the weights (16 MB for the 2x512 LSTM LM: microseconds on a GPU); gpu_speed.py
            # measures this layer at torch.nn's speed.
            warnings.filterwarnings("ignore", "RNN module weights are not part of single contiguous chunk")
            with onednn:
                out, final = fused_forward(self.mode, x, hx, weights, self.bias, L, self.dropout,
                                           self.training, self.bidirectional, lengths)
        return out, self.state_type(*(f.view(L, D, B, H) for f in final))

    # --- weights both ways ----------------------------------------------------------------------
    def _torch_kwargs(self) -> dict:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                    bias=self.bias, dropout=self.dropout, bidirectional=self.bidirectional)

    @classmethod
    def from_torch(cls, module: nn.RNNBase, **kwargs):
        """A layer with `module`'s configuration and a copy of its weights (ours is always batch-first)."""
        if not isinstance(module, cls.torch_class):
            raise ValueError(f"{cls.__name__}.from_torch expects a torch.nn.{cls.torch_class.__name__}, "
                             f"got {type(module).__name__}")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"proj_size={module.proj_size} is not supported; expected 0")
        layer = cls(**cls._kwargs_from_torch(module), **kwargs)
        p = next(module.parameters())
        layer.to(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            for name, ours in layer._torch_names():
                ours.copy_(getattr(module, name))
        return layer

    @classmethod
    def _kwargs_from_torch(cls, m: nn.RNNBase) -> dict:
        return dict(input_size=m.input_size, hidden_size=m.hidden_size, num_layers=m.num_layers, bias=m.bias,
                    dropout=m.dropout, bidirectional=m.bidirectional)

    def to_torch(self) -> nn.RNNBase:
        """A batch_first torch.nn module with a copy of this layer's weights."""
        p = next(self.parameters())
        module = self.torch_class(**self._torch_kwargs(), batch_first=True).to(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            for name, ours in self._torch_names():
                getattr(module, name).copy_(ours)
        return module

    def _torch_names(self):
        """(torch.nn parameter name, our parameter) pairs, e.g. ('weight_hh_l1_reverse', cells[1][1].weight_hh)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if self.bias else ("weight_ih", "weight_hh")
        for l, layer in enumerate(self.cells):
            for d, cell in enumerate(layer):
                for n in names:
                    yield f"{n}_l{l}{'_reverse' if d else ''}", getattr(cell, n)


class RNN(_TorchCompatible):
    """The Elman network, s_t = f(U x_t + W s_{t-1} + b), as a layer (torch.nn.RNN's parameters).

    State: RNNState(h), h (L, D, B, H). See `Recurrent` for shapes and the state picture.
    """

    torch_class = nn.RNN

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, dropout: float = 0.0, bidirectional: bool = False,
                 learnable_init: bool = False, weight_drop: float = 0.0, backend: str = "auto"):
        self.bias, self.nonlinearity = bias, nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        cell = partial(ElmanCell, bias=bias, nonlinearity=nonlinearity, weight_drop=weight_drop)
        super().__init__(cell, input_size, hidden_size, num_layers, bidirectional, dropout, learnable_init, backend)

    def _torch_kwargs(self) -> dict:
        return dict(super()._torch_kwargs(), nonlinearity=self.nonlinearity)

    @classmethod
    def _kwargs_from_torch(cls, m: nn.RNNBase) -> dict:
        return dict(super()._kwargs_from_torch(m), nonlinearity=m.nonlinearity)


class LSTM(_TorchCompatible):
    """LSTM layer (torch.nn.LSTM's parameters, gate order i, f, g, o).

    State: LSTMState(h, c), each (L, D, B, H). See `Recurrent` for shapes and the state picture.
    """

    torch_class, mode = nn.LSTM, "LSTM"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 dropout: float = 0.0, bidirectional: bool = False, learnable_init: bool = False,
                 weight_drop: float = 0.0, backend: str = "auto"):
        self.bias = bias
        cell = partial(LSTMCell, bias=bias, weight_drop=weight_drop)
        super().__init__(cell, input_size, hidden_size, num_layers, bidirectional, dropout, learnable_init, backend)


class GRU(_TorchCompatible):
    """GRU layer (torch.nn.GRU's parameters, gate order r, z, n).

    State: RNNState(h), h (L, D, B, H). See `Recurrent` for shapes and the state picture.
    """

    torch_class, mode = nn.GRU, "GRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 dropout: float = 0.0, bidirectional: bool = False, learnable_init: bool = False,
                 weight_drop: float = 0.0, backend: str = "auto"):
        self.bias = bias
        cell = partial(GRUCell, bias=bias, weight_drop=weight_drop)
        super().__init__(cell, input_size, hidden_size, num_layers, bidirectional, dropout, learnable_init, backend)
