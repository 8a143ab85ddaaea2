"""Training throughput (forward + backward tokens/s) of our backends against torch.nn, in one run.

Setting (the issue's char-LM-like default): B=32, T=128, I=H=512, 2 layers, float32.
Contenders per cell type: torch.nn (the peer), our `fused`, `bptt` and `autograd` backends,
and a naive Python loop over torch.nn.*Cell with autograd. All share the same weights.

This machine is shared and noisy, so rounds are interleaved (every contender once per round)
and each contender's median time is used; ratios are against torch.nn measured in the same rounds.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

import recurrent as rc

LAYERS = {"lstm": (rc.LSTM, nn.LSTM, nn.LSTMCell), "gru": (rc.GRU, nn.GRU, nn.GRUCell),
          "rnn": (rc.RNN, nn.RNN, nn.RNNCell)}


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


def _train_step(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    out, _ = model(x)
    out.sum().backward()
    return time.perf_counter() - start


def measure(cfg: ThroughputConfig) -> list[dict]:
    """One row per (cell, contender): median seconds per training step, tok/s and ratio to torch.nn."""
    torch.manual_seed(cfg.seed)
    rows = []
    for name in cfg.cells.split(","):
        ours_class, torch_class, cell_class = LAYERS[name]
        peer = torch_class(cfg.input_size, cfg.hidden_size, cfg.num_layers, batch_first=True)
        contenders = {"torch.nn": peer}
        for backend in ("fused", "bptt", "autograd"):
            contenders[backend] = ours_class.from_torch(peer, backend=backend)
        contenders["naive loop"] = NaiveLoop(peer, cell_class)
        slow = {"autograd", "naive loop"}
        x = torch.randn(cfg.batch_size, cfg.seq_len, cfg.input_size)
        times = {k: [] for k in contenders}
        for model in contenders.values():  # warm-up (oneDNN primitive creation, allocator)
            _train_step(model, x)
        for r in range(cfg.rounds):
            for k, model in contenders.items():
                if k not in slow or r < 2:
                    times[k].append(_train_step(model, x))
        ref = statistics.median(times["torch.nn"])
        tokens = cfg.batch_size * cfg.seq_len
        for k, ts in times.items():
            sec = statistics.median(ts)
            rows.append(dict(cell=name, contender=k, seconds=sec, tok_per_s=tokens / sec, ratio=ref / sec))
    return rows


def format_table(rows: list[dict], cfg: ThroughputConfig) -> str:
    head = (f"training tok/s (forward + backward), B={cfg.batch_size} T={cfg.seq_len} I={cfg.input_size} "
            f"H={cfg.hidden_size} layers={cfg.num_layers}, float32, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}\n")
    lines = ["| cell | implementation | ms / step | tok/s | × torch.nn |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['contender']} | {r['seconds'] * 1e3:.0f} | {r['tok_per_s']:,.0f} "
                     f"| {r['ratio']:.2f} |")
    return head + "\n".join(lines)
