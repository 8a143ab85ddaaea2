"""Training throughput (forward + backward tokens/s) of our backends against torch.nn, in one run.

Setting (the issue's char-LM-like default): B=32, T=128, I=H=512, 2 layers, float32. With --precision bf16 (or
auto on a CPU with native bf16 products) our contenders run under CPU bf16 autocast, as `--precision bf16` trains,
still against torch.nn in float32; torch.nn under the same autocast gets a row of its own.
Contenders per cell type: torch.nn (the peer), our `fused`, `bptt` and `autograd` backends,
a generic `Recurrent` of the same cell under `auto` (whatever recurrent.backends picks for this shape: the row
names it), and a naive Python loop over torch.nn.*Cell with autograd. With --custom (the default), the lstm rows
also have two cells a user writes: `PeepholeLSTMCell` below (25 lines, only `forward`: auto runs it on the bptt
engine with its step compiled to C, recurrent/traced.py; a second row asks for backend='compiled', torch.compile)
and `SubclassedLSTMCell` (an LSTMCell subclass that keeps the equations: it keeps the C++ loop); a third row runs
the peephole cell on the plain autograd loop, the reference auto must not be slower than. The gru rows have a
user's `LayerNormedGRUCell` (only `forward`, layer norms inside), under auto and on the plain loop.
All share the same weights (the peephole cell: the same [U W] and b, its peepholes its own).

This machine is shared and noisy, so rounds are interleaved (every contender once per round)
and each contender's median time is used; ratios are against torch.nn measured in the same rounds.
"""
from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

import recurrent as rc
from recurrent import compiled, precision

LAYERS = {"lstm": (rc.LSTM, nn.LSTM, nn.LSTMCell), "gru": (rc.GRU, nn.GRU, nn.GRUCell),
          "rnn": (rc.RNN, nn.RNN, nn.RNNCell)}
CELLS = {"lstm": rc.LSTMCell, "gru": rc.GRUCell, "rnn": rc.ElmanCell}
# the same family's other cells, each timed against the same torch.nn layer (with their own initial weights)
RELATIVES = {"lstm": (rc.LayerNormLSTMCell, rc.MinLSTMCell), "gru": (rc.LayerNormGRUCell, rc.MinGRUCell)}


class PeepholeLSTMCell(rc.Cell):
    """A user's cell, as docs/cells.md writes it: LSTM gates that also see the memory (Gers & Schmidhuber 2000).

        i = σ(U_i x + W_i h + p_i ⊙ c_{t-1} + b_i)      f likewise, with p_f
        c_t = f ⊙ c_{t-1} + i ⊙ tanh(U_g x + W_g h + b_g)
        o = σ(U_o x + W_o h + p_o ⊙ c_t + b_o);   h_t = o ⊙ tanh(c_t)
    """

    state_type = rc.LSTMState

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, 4 * hidden_size)  # [U W] and b for i, f, g, o
        self.peep = nn.Parameter(torch.empty(3, hidden_size).uniform_(-0.5, 0.5))  # p_i, p_f, p_o

    def forward(self, x, state):  # x (B, I); h, c (B, H)
        pre = self.linear(torch.cat([x, state.h], dim=1))  # (B, 4H)
        i, f, g, o = pre.chunk(4, dim=1)
        i = torch.sigmoid(i + self.peep[0] * state.c)
        f = torch.sigmoid(f + self.peep[1] * state.c)
        c = f * state.c + i * torch.tanh(g)
        o = torch.sigmoid(o + self.peep[2] * c)
        return rc.LSTMState(o * torch.tanh(c), c)


class LayerNormedGRUCell(rc.Cell):
    """A user's layer-normed GRU (Ba et al. 2016), only `forward`: nn.LayerNorm on each product, a hand-written norm
    of the candidate (torch.var) and a row sum. auto compiles its step, means over a row included."""

    state_type = rc.RNNState

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        self.x2g = nn.Linear(input_size, 3 * hidden_size, bias=False)
        self.h2g = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.ln_x, self.ln_h = nn.LayerNorm(3 * hidden_size), nn.LayerNorm(3 * hidden_size)
        self.gain = nn.Parameter(torch.rand(hidden_size) + 0.5)

    def forward(self, x, state):  # x (B, I); h (B, H)
        xr, xz, xn = self.ln_x(self.x2g(x)).chunk(3, 1)
        hr, hz, hn = self.ln_h(self.h2g(state.h)).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = xn + r * hn
        n = (n - n.mean(-1, keepdim=True)) / torch.sqrt(n.var(-1, keepdim=True, unbiased=False) + 1e-5)
        n = torch.tanh(n * self.gain) + 0.01 * state.h.sum(-1, keepdim=True)
        return rc.RNNState((1 - z) * n + z * state.h)


class SubclassedLSTMCell(rc.LSTMCell):
    """A user's LSTMCell subclass that keeps the equations (it only adds a method): it keeps the C++ loop."""

    def gates(self, x):  # (B, I) -> (B, 4H): the pre-activations from the input alone
        return self.project_input(x.unsqueeze(0))[0]


@dataclass
class ThroughputConfig:
    batch_size: int = 32  # B
    seq_len: int = 128  # T
    input_size: int = 512  # I
    hidden_size: int = 512  # H
    num_layers: int = 2
    rounds: int = 5  # interleaved rounds; slow contenders (autograd, naive) run in the first 2 only
    cells: str = "lstm,gru,rnn"
    seed: int = 0
    custom: bool = True  # lstm: rows for a user's peephole cell and an LSTMCell subclass
    relatives: bool = True  # rows for the family's other cells (LayerNorm, minGRU/minLSTM), against the same peer
    # our contenders' products: fp32, bf16 (CPU autocast, as `--precision bf16` trains), or auto (bf16 where the
    # CPU multiplies it natively). torch.nn stays float32, the reference of every ratio; under bf16 a second
    # peer row runs it under the same autocast
    precision: str = "fp32"


class NaiveLoop(nn.Module):
    """The textbook loop: torch.nn.*Cell called once per step and layer, autograd does BPTT."""

    def __init__(self, torch_layer: nn.RNNBase, cell_class: type):
        super().__init__()
        self.cells = nn.ModuleList()
        for l in range(torch_layer.num_layers):
            kwargs = {"nonlinearity": torch_layer.nonlinearity} if cell_class is nn.RNNCell else {}
            cell = cell_class(torch_layer.input_size if l == 0 else torch_layer.hidden_size,
                              torch_layer.hidden_size, **kwargs)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).data.copy_(getattr(torch_layer, f"{name}_l{l}"))
            self.cells.append(cell)

    def forward(self, x):  # x (B, T, I)
        for cell in self.cells:
            state, outs = None, []
            for t in range(x.shape[1]):
                state = cell(x[:, t], state)
                outs.append(state[0] if isinstance(state, tuple) else state)
            x = torch.stack(outs, dim=1)  # (B, T, H)
        return x, None


def _train_step(model: nn.Module, x: torch.Tensor, autocast=nullcontext) -> float:
    start = time.perf_counter()
    with autocast():
        out, _ = model(x)
    out.float().sum().backward()
    return time.perf_counter() - start


def measure(cfg: ThroughputConfig) -> list[dict]:
    """One row per (cell, contender): median seconds per training step, tok/s and ratio to torch.nn."""
    torch.manual_seed(cfg.seed)
    run = precision.choose(cfg.precision)
    rows = []
    for name in cfg.cells.split(","):
        ours_class, torch_class, cell_class = LAYERS[name]
        peer = torch_class(cfg.input_size, cfg.hidden_size, cfg.num_layers, batch_first=True)
        contenders = {"torch.nn": peer}
        if run.bf16:  # the peer under the same autocast (oneDNN's bf16 LSTM): a row, not the reference
            contenders["torch.nn, bf16 autocast"] = peer
        for backend in ("fused", "bptt", "autograd"):
            contenders[backend] = ours_class.from_torch(peer, backend=backend)
        contenders[f"Recurrent({CELLS[name].__name__})"] = generic(CELLS[name], peer)
        if name == "lstm" and cfg.custom:
            contenders["LSTMCell subclass"] = generic(SubclassedLSTMCell, peer)
            contenders["peephole (user cell)"] = generic(PeepholeLSTMCell, peer)
            contenders["peephole (user cell), autograd"] = generic(PeepholeLSTMCell, peer, backend="autograd")
            if compiled.unavailable("cpu") is None:  # its step compiled by torch.compile: asked for by name
                contenders["peephole (user cell), compiled"] = generic(PeepholeLSTMCell, peer, backend="compiled")
        if name == "gru" and cfg.custom:  # a user's layer-normed GRU: its step compiled, and on the plain loop
            contenders["layer-normed GRU (user cell)"] = rc.Recurrent(LayerNormedGRUCell, cfg.input_size,
                                                                     cfg.hidden_size, cfg.num_layers)
            plain = rc.Recurrent(LayerNormedGRUCell, cfg.input_size, cfg.hidden_size, cfg.num_layers,
                                 backend="autograd")
            plain.load_state_dict(contenders["layer-normed GRU (user cell)"].state_dict())
            contenders["layer-normed GRU (user cell), autograd"] = plain
        for cell in RELATIVES.get(name, ()) if cfg.relatives else ():  # other cells of the family, their own weights
            layer = rc.Recurrent(cell, cfg.input_size, cfg.hidden_size, cfg.num_layers)
            contenders[f"Recurrent({cell.__name__})"] = layer
            plain = rc.Recurrent(cell, cfg.input_size, cfg.hidden_size, cfg.num_layers, backend="autograd")
            plain.load_state_dict(layer.state_dict())  # the plain loop: what auto must not be slower than
            contenders[f"Recurrent({cell.__name__}), autograd"] = plain
        contenders["naive loop"] = NaiveLoop(peer, cell_class)
        x = torch.randn(cfg.batch_size, cfg.seq_len, cfg.input_size)
        def autocast(k: str):  # every contender but the float32 reference runs in the run's precision
            return nullcontext if k == "torch.nn" else lambda: run.autocast("cpu")

        for k, model in contenders.items():  # warm-up (oneDNN primitive creation, allocator; torch.compile)
            _train_step(model, x, autocast(k))
        contenders = {label(k, m): (m, autocast(k)) for k, m in contenders.items()}
        slow = {k for k, (m, _) in contenders.items()
                if k == "naive loop" or getattr(m, "backend", None) == "autograd"}
        times = {k: [] for k in contenders}
        for r in range(cfg.rounds):
            for k, (model, cast) in contenders.items():
                if k not in slow or r < 2:
                    times[k].append(_train_step(model, x, cast))
        ref = statistics.median(times["torch.nn"])
        tokens = cfg.batch_size * cfg.seq_len
        for k, ts in times.items():
            sec = statistics.median(ts)
            rows.append({"cell": name, "contender": k, "seconds": sec, "tok_per_s": tokens / sec, "ratio": ref / sec})
    return rows


def generic(cell: type, peer: nn.RNNBase, backend: str = "auto") -> rc.Recurrent:
    """A generic Recurrent of `cell`, with the peer's weights (a peephole cell: its [U W], b)."""
    layer = rc.Recurrent(cell, peer.input_size, peer.hidden_size, peer.num_layers, backend=backend)
    with torch.no_grad():
        for l, (ours,) in enumerate(layer.cells):
            w_ih, w_hh, b_ih, b_hh = (getattr(peer, f"{n}_l{l}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            if isinstance(ours, PeepholeLSTMCell):
                ours.linear.weight.copy_(torch.cat([w_ih, w_hh], dim=1))  # (4H, I + H): [U W]
                ours.linear.bias.copy_(b_ih + b_hh)
            else:
                for n, w in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), (w_ih, w_hh, b_ih, b_hh)):
                    getattr(ours, n).copy_(w)
    return layer


def label(name: str, model: nn.Module) -> str:
    """A generic layer's row names the backend auto picked for this shape, e.g. 'peephole (user cell), compiled'."""
    backend = getattr(model, "backend", None)
    if (not isinstance(model, rc.Recurrent) or name in ("fused", "bptt", "autograd") or "compiled" in name
            or name.endswith(", autograd")):
        return name
    how = (" (C++ loop)" if backend.native else " (shared products)" if backend.shared
           else " (compiled step)" if backend.traced else "")
    return f"{name}, auto: {backend.name}{how}"


def format_table(rows: list[dict], cfg: ThroughputConfig) -> str:
    head = (f"training tok/s (forward + backward), B={cfg.batch_size} T={cfg.seq_len} I={cfg.input_size} "
            f"H={cfg.hidden_size} layers={cfg.num_layers}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}; torch.nn float32, ours {precision.choose(cfg.precision).name} "
            f"({cfg.precision} asked)\n")
    lines = ["| cell | implementation | ms / step | tok/s | × torch.nn |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['contender']} | {r['seconds'] * 1e3:.0f} | {r['tok_per_s']:,.0f} "
                     f"| {r['ratio']:.2f} |")
    return head + "\n".join(lines)
