"""Long-range memory tasks, generated on the fly, and a plain loop that trains a cell on them.

Key: B batch, T time (the whole input sequence), I input, O output, H hidden.

Adding problem (Hochreiter & Schmidhuber 1997; the variant of Arjovsky et al. 2016, "Unitary Evolution RNNs"):
    x[:, t] = (u_t, m_t), u_t ~ U[0, 1], m_t = 1 at exactly two steps (one in each half of the sequence), else 0
    y       = the sum of the two marked u_t, predicted from the last step
    Predicting the mean, E[y] = 1, scores MSE = Var[u_a + u_b] = 2/12 ≈ 0.167: the baseline to beat.

Copy memory (Hochreiter & Schmidhuber 1997; as set up by Arjovsky et al. 2016):
    input   a_1..a_10 (symbols 1..8), T-1 blanks (0), the delimiter (9), 10 blanks        length T + 20
    target  T + 10 blanks, then a_1..a_10
    Predicting blank for the first T + 10 steps and a uniform guess over the 8 symbols for the last 10
    scores cross-entropy 10 ln 8 / (T + 20) per step: the baseline to beat.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.cells import registry


class AddingTask:
    """The adding problem over T steps: regress the sum of the two marked numbers. Loss: MSE at the last step."""

    name = "adding"
    input_size, output_size = 2, 1

    def __init__(self, seq_len: int):
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"adding: seq_len must be an int >= 2 (one marker in each half), got {seq_len!r}")
        self.seq_len = seq_len

    @property
    def baseline(self) -> float:
        """MSE of always predicting E[y] = 1: the variance of a sum of two U[0, 1] numbers."""
        return 2 / 12

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """x (B, T, 2) float, y (B,) float."""
        B, T, half = batch_size, self.seq_len, self.seq_len // 2
        u = torch.rand(B, T, generator=generator)
        first = torch.randint(0, half, (B,), generator=generator)  # one marker in [0, T/2)
        second = torch.randint(half, T, (B,), generator=generator)  # one in [T/2, T)
        marks = torch.zeros(B, T)
        rows = torch.arange(B)
        marks[rows, first] = 1.0
        marks[rows, second] = 1.0
        y = u[rows, first] + u[rows, second]  # (B,)
        return torch.stack([u, marks], dim=-1), y  # (B, T, 2), (B,)

    def step_loss(self, out_t: Tensor, y: Tensor, t: int) -> Tensor:
        """Per-sequence loss from the model's output at step t, out_t (B, 1) -> (B,). Only t = T-1 is scored."""
        return (out_t.squeeze(-1) - y) ** 2

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """out (B, T, 1) -> the mean squared error at the last step."""
        return self.step_loss(out[:, -1], y, self.seq_len - 1).mean()


class CopyTask:
    """Copy memory: read 10 symbols, wait `delay` steps, write them back. Loss: cross-entropy over all T + 20 steps."""

    name = "copy"
    n_symbols, n_recall = 8, 10  # 10 symbols drawn from 8 classes
    blank, delimiter = 0, 9  # symbols are 1..8
    input_size = output_size = 10

    def __init__(self, delay: int):
        if not isinstance(delay, int) or delay < 1:
            raise ValueError(f"copy: delay (--seq-len) must be a positive int, got {delay!r}")
        self.delay = delay
        self.seq_len = delay + 2 * self.n_recall

    @property
    def baseline(self) -> float:
        """Cross-entropy of predicting blank until the delimiter, then uniform over the 8 symbols."""
        return self.n_recall * math.log(self.n_symbols) / self.seq_len

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """x (B, T+20, 10) one-hot float, y (B, T+20) class indices."""
        B, T, R = batch_size, self.seq_len, self.n_recall
        symbols = torch.randint(1, self.n_symbols + 1, (B, R), generator=generator)
        tokens = torch.full((B, T), self.blank, dtype=torch.long)
        tokens[:, :R] = symbols
        tokens[:, R + self.delay - 1] = self.delimiter  # "recall now", after delay - 1 blanks
        y = torch.full((B, T), self.blank, dtype=torch.long)
        y[:, -R:] = symbols
        return F.one_hot(tokens, self.input_size).float(), y  # (B, T, 10), (B, T)

    def step_loss(self, out_t: Tensor, y: Tensor, t: int) -> Tensor:
        """Per-sequence cross-entropy at step t: out_t (B, 10) logits -> (B,)."""
        return F.cross_entropy(out_t, y[:, t], reduction="none")

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """out (B, T, 10) logits -> mean cross-entropy over every step."""
        return F.cross_entropy(out.flatten(0, 1), y.flatten())  # (B*T, 10) vs (B*T,)


TASKS = {"adding": AddingTask, "copy": CopyTask}


def make_task(name: str, seq_len: int) -> AddingTask | CopyTask:
    """`seq_len` is T for the adding problem and the delay (blanks between read and recall) for copy."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](seq_len)


class MemoryModel(nn.Module):
    """A recurrent layer and a linear readout at every step: x (B, T, I) -> out (B, T, O)."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1):
        super().__init__()
        self.rnn = registry.layer(cell, input_size, hidden_size, num_layers=num_layers)  # any registered cell
        self.head = nn.Linear(hidden_size, output_size)

    @torch.no_grad()
    def set_forget_bias(self, value: float) -> None:
        """LSTM: b_f = value (in bias_ih; the f block of bias_hh is zeroed), so f_t = σ(value + ...) at init."""
        for (cell,) in self.rnn.cells:
            H = cell.hidden_size
            cell.bias_ih[H : 2 * H] = value  # gate order i, f, g, o
            cell.bias_hh[H : 2 * H] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out)  # (B, T, O)


@dataclass
class TrainConfig:
    """One cell's training budget on a memory task: the same for every cell in a comparison."""

    hidden_size: int = field(default=128, metadata={"help": "hidden units per layer"})
    num_layers: int = field(default=1, metadata={"help": "stacked layers"})
    batch_size: int = field(default=64, metadata={"help": "fresh sequences per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    clip: float = field(default=1.0, metadata={"help": "max gradient norm (clip_grad_norm_)"})
    max_time: float = field(default=120.0, metadata={"help": "seconds of training steps per cell (evaluations "
                                                                 "and callbacks are not counted)"})
    max_steps: int = field(default=0, metadata={"help": "steps per cell; 0: no limit but --max-time"})
    forget_bias: float = field(default=0.0, metadata={
        "help": "LSTM only: initial forget-gate bias (b_f in bias_ih; 0 keeps torch's init). 1 is the classic "
                "choice (Gers et al. 2000; Jozefowicz et al. 2015): f starts near 0.73 instead of 0.5"})
    eval_every: int = field(default=50, metadata={"help": "steps between held-out evaluations"})
    eval_size: int = field(default=500, metadata={"help": "held-out sequences, drawn once from the seed"})
    seed: int = field(default=0, metadata={"help": "initial weights, training data and held-out data"})


@dataclass
class TrainResult:
    cell: str
    final_loss: float  # on the held-out batch
    baseline: float
    steps: int
    seconds: float  # spent in training steps (the budget), without evaluations and callbacks
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    train_losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)  # pre-clip, one per step


def train_memory(task, cell: str, cfg: TrainConfig, callback=None) -> tuple[MemoryModel, TrainResult]:
    """Adam with gradient-norm clipping on fresh batches until the time or step budget is spent.

    `callback(step, model, batch)`, if given, runs after each optimiser step (e.g. a GradientMonitor).
    """
    torch.manual_seed(cfg.seed)  # the same initial weights for a given cell and seed
    model = MemoryModel(cell, task.input_size, cfg.hidden_size, task.output_size, cfg.num_layers)
    if cell == "lstm" and cfg.forget_bias:
        model.set_forget_bias(cfg.forget_bias)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = torch.Generator().manual_seed(cfg.seed)
    held_out = task.sample(cfg.eval_size, torch.Generator().manual_seed(cfg.seed + 10_000))
    result = TrainResult(cell, float("nan"), task.baseline, 0, 0.0)
    result.curve.append((0, evaluate(model, task, held_out)))
    step, seconds = 0, 0.0  # the budget counts training steps only, not evaluations or the callback
    while seconds < cfg.max_time and (not cfg.max_steps or step < cfg.max_steps):
        start = time.perf_counter()
        x, y = task.sample(cfg.batch_size, data)
        loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        step += 1
        result.train_losses.append(loss.item())
        result.grad_norms.append(norm.item())
        seconds += time.perf_counter() - start
        if callback is not None:
            callback(step, model, (x, y))
        if step % cfg.eval_every == 0:
            result.curve.append((step, evaluate(model, task, held_out)))
    if result.curve[-1][0] != step:
        result.curve.append((step, evaluate(model, task, held_out)))
    result.final_loss, result.steps, result.seconds = result.curve[-1][1], step, seconds
    return model, result


@torch.no_grad()
def evaluate(model: MemoryModel, task, batch: tuple[Tensor, Tensor]) -> float:
    x, y = batch
    model.eval()
    loss = task.loss(model(x), y).item()
    model.train()
    return loss
