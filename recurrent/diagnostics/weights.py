"""Recurrent-weight and gate statistics, and how often gradient clipping fired.

Key: B batch, T time, I input, H hidden, G pre-activations (gates * H).

Spectral radius. For s_t = f(W s_{t-1} + ...), ∂s_t/∂s_{t-1} = diag(f') W, so the largest |eigenvalue|
of W bounds how fast gradients can grow (and, below 1 with |f'| <= 1, forces them to vanish; Pascanu et al.
2013). For LSTM and GRU, W_hh (G, H) stacks one H×H block per gate, and each block is square: we report the
spectral radius of every block (LSTM i, f, g, o; GRU r, z, n). The whole W_hh is not square and has no
eigenvalues; for it we report the spectral norm (its largest singular value), an upper bound on how much
one step can stretch a hidden vector before the gates act.

Gate saturation. A sigmoid gate near 0 or 1 passes (almost) no gradient to its pre-activation:
σ' = σ(1 - σ) < 0.0475 outside [0.05, 0.95]. We run the cells on data and recompute each gate from its
pre-activations U x_t + b_ih + W h_{t-1} + b_hh in torch's gate order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from recurrent.cells import ElmanCell, GRUCell, LSTMCell
from recurrent.layers import Recurrent

GATES = {ElmanCell: ("h",), LSTMCell: ("i", "f", "g", "o"), GRUCell: ("r", "z", "n")}
SIGMOID_GATES = {LSTMCell: ("i", "f", "o"), GRUCell: ("r", "z")}  # g and n are tanh candidates, not gates


def spectral_radius(W: Tensor) -> float:
    """max |λ| over the eigenvalues of a square matrix, computed in float64."""
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"spectral radius needs a square matrix, got shape {tuple(W.shape)}")
    return float(torch.linalg.eigvals(W.detach().double()).abs().max())


@dataclass
class RecurrentSpectrum:
    layer: int
    direction: int
    radius: dict[str, float]  # spectral radius of each H×H gate block of W_hh (Elman: "h", the one W)
    norm: float  # spectral norm (largest singular value) of the whole W_hh (G, H)

    def __str__(self) -> str:
        blocks = " ".join(f"{g} {r:.3f}" for g, r in self.radius.items())
        where = f"layer {self.layer}" + (f" direction {self.direction}" if self.direction else "")
        return f"{where}: spectral radius of W_hh blocks: {blocks}; spectral norm of whole W_hh {self.norm:.3f}"


def recurrent_spectra(layer: Recurrent) -> list[RecurrentSpectrum]:
    """One RecurrentSpectrum per layer and direction of a built-in RNN, LSTM or GRU layer."""
    out = []
    for l, cells in enumerate(layer.cells):
        for d, cell in enumerate(cells):
            names = _gate_names(cell)
            W = cell.weight_hh.detach()  # (G, H)
            blocks = W.double().split(cell.hidden_size)  # gates x (H, H)
            radius = {g: spectral_radius(block) for g, block in zip(names, blocks)}
            out.append(RecurrentSpectrum(l, d, radius, float(torch.linalg.matrix_norm(W.double(), ord=2))))
    return out


def cell_gates(cell, x_t: Tensor, state: NamedTuple) -> dict[str, Tensor]:
    """The gate activations of one LSTM or GRU step, each (B, H), from x_t (B, I) and the previous state.

        LSTM  [i; f; g; o] = [σ; σ; tanh; σ](U x_t + b_ih + W h_{t-1} + b_hh)
        GRU   [r; z] = σ(U_rz x_t + b_ih,rz + W_rz h_{t-1} + b_hh,rz)
              n = tanh(U_n x_t + b_in + r ⊙ (W_n h_{t-1} + b_hn))
    """
    H = cell.hidden_size
    gx = F.linear(x_t, cell.weight_ih, cell.bias_ih)  # (B, G)
    gh = F.linear(state.h, cell.weight_hh, cell.bias_hh)  # (B, G)
    if isinstance(cell, LSTMCell):
        i, f, g, o = (gx + gh).split(H, dim=1)
        return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "g": torch.tanh(g), "o": torch.sigmoid(o)}
    if isinstance(cell, GRUCell):
        r, z = torch.sigmoid(gx[:, : 2 * H] + gh[:, : 2 * H]).split(H, dim=1)
        return {"r": r, "z": z, "n": torch.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])}
    raise ValueError(f"gates are defined for LSTMCell and GRUCell, got {type(cell).__name__}")


@dataclass
class GateSaturation:
    layer: int
    direction: int
    gate: str  # "i", "f", "o" (LSTM) or "r", "z" (GRU)
    low: float  # fraction of sigmoid outputs below `low` (closed)
    high: float  # fraction above `high` (open)

    @property
    def saturated(self) -> float:
        return self.low + self.high


@torch.no_grad()
def gate_saturation(layer: Recurrent, x: Tensor, state: NamedTuple | None = None, low: float = 0.05,
                    high: float = 0.95) -> list[GateSaturation]:
    """Run an LSTM or GRU layer on x (B, T, I) and measure each sigmoid gate's saturation over B·T·H values."""
    B, T = layer._check_input(x)
    state = layer.initial_state(B, x) if state is None else layer._check_state(state, B)
    inp = x.transpose(0, 1)  # (T, B, I)
    out = []
    for l, cells in enumerate(layer.cells):
        outs = []
        for d, cell in enumerate(cells):
            names = SIGMOID_GATES.get(type(cell))
            if names is None:
                raise ValueError(f"gate saturation needs LSTM or GRU cells, got {type(cell).__name__}")
            xin = inp if d == 0 else inp.flip(0)
            s = layer.state_type(*(f[l, d] for f in state))
            counts = {g: [0, 0] for g in names}
            hs = []
            for t in range(T):
                gates = cell_gates(cell, xin[t], s)
                for g in names:
                    counts[g][0] += int((gates[g] < low).sum())
                    counts[g][1] += int((gates[g] > high).sum())
                s = cell(xin[t], s)
                hs.append(s.h)
            n = B * T * cell.hidden_size
            out += [GateSaturation(l, d, g, lo / n, hi / n) for g, (lo, hi) in counts.items()]
            seq = torch.stack(hs)  # (T, B, H)
            outs.append(seq if d == 0 else seq.flip(0))
        inp = torch.cat(outs, dim=-1)  # (T, B, D*H)
    return out


def _gate_names(cell) -> tuple[str, ...]:
    for cls, names in GATES.items():
        if isinstance(cell, cls):
            return names
    raise ValueError(f"expected an Elman, LSTM or GRU cell, got {type(cell).__name__}")


@dataclass
class ClipStats:
    """How often gradient-norm clipping fired over a run, and the distribution of pre-clip norms."""

    steps: int
    max_norm: float
    fired: int  # steps whose pre-clip norm exceeded max_norm (clip_grad_norm_ rescaled them)
    percentiles: dict[float, float]  # percentile -> pre-clip norm
    mean: float
    max: float

    @property
    def fraction(self) -> float:
        return self.fired / self.steps

    def __str__(self) -> str:
        pct = ", ".join(f"p{p:g} {v:.3g}" for p, v in self.percentiles.items())
        return (f"clipping at {self.max_norm:g} fired on {self.fired}/{self.steps} steps ({self.fraction:.1%}); "
                f"pre-clip norm mean {self.mean:.3g}, {pct}, max {self.max:.3g}")


def clip_stats(norms: Sequence[float], max_norm: float, percentiles: Sequence[float] = (50, 90, 99)) -> ClipStats:
    """Summarise pre-clip gradient norms (e.g. the values `clip_grad_norm_` returns) against the clip value."""
    a = np.asarray(norms, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"norms must be a non-empty 1-d sequence, got shape {a.shape}")
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm!r}")
    pct = {float(p): float(v) for p, v in zip(percentiles, np.percentile(a, percentiles))}
    return ClipStats(int(a.size), float(max_norm), int((a > max_norm).sum()), pct, float(a.mean()), float(a.max()))
