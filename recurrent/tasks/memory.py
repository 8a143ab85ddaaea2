"""Long-range memory tasks, generated on the fly, and their Task for the one training loop (recurrent/train/loop.py):
what `recurrent train memory` and `recurrent bench memory` run.

    config = flat_replace(TrainMemoryConfig(), problem="adding", seq_len=100, cell="lstm", out="runs/adding")
    run_dir = train_memory(config)                       # metrics.jsonl: val_loss against the baseline 0.167

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

The data never repeats: each epoch is `epoch_size` fresh batches from a generator seeded by (seed, epoch), so a
resumed run sees the same batches as one run straight through. Validation is one fixed batch.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.cells import registry
from recurrent.checkpoint import load_checkpoint
from recurrent.errors import UserError
from recurrent.train import distributed
from recurrent.train.common import read_metrics
from recurrent.train.loop import TrainConfig, train
from recurrent.validation import at_least, check


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


# --- the model ----------------------------------------------------------------------------------------------


@dataclass
class MemoryModelConfig:
    cell: str = field(default="lstm", metadata={"help": "recurrent cell (recurrent.cells.registry)",
                                                "choices": registry.NAMES})
    hidden_size: int = 64  # H
    num_layers: int = 1
    forget_bias: float = field(default=1.0, metadata={
        "help": "LSTM only (other cells ignore it): the initial forget-gate bias b_f, 0 keeps torch's init. 1 is the "
                "classic choice (Gers et al. 2000; Jozefowicz et al. 2015): f starts near 0.73 instead of 0.5, so "
                "the cell state remembers from the first step"})


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


def build_model(config: MemoryModelConfig, problem: AddingTask | CopyTask) -> MemoryModel:
    """The model at its initial weights (drawn from torch's global RNG), with the forget bias for an LSTM."""
    model = MemoryModel(config.cell, problem.input_size, config.hidden_size, problem.output_size, config.num_layers)
    if config.cell == "lstm" and config.forget_bias:
        model.set_forget_bias(config.forget_bias)
    return model


# --- training: a Task for recurrent.train.loop --------------------------------------------------------------


def memory_training(**changes) -> TrainConfig:
    """The memory tasks' training defaults, with `changes`: AdamW without weight decay (Adam) at lr 1e-2, the gradient
    norm clipped at 1 (values from the ranges Le et al. 2015 search for the adding problem; with lr 1e-3 the LSTM
    still sits on the baseline after 3,000 steps at T = 100, with 1e-2 it leaves it by step 1,500), 120 s, fp32 (the adding problem regresses a sum of reals; bf16 would round the
    inputs to 3 significant digits). The data never ends: `epochs` only caps the steps, the budget is the time."""
    return TrainConfig(**{**dict(out="runs/memory", lr=1e-2, clip=1.0, epochs=100_000, eval_every=100,
                                 max_time=120.0, precision="fp32"), **changes})


@dataclass
class TrainMemoryConfig:
    """Ranges sit in each field's metadata (recurrent/validation.py checks them)."""

    # (`problem`, not `task`: config.json's "task" names what was trained, "memory"; the CLI flag is --task)
    problem: str = field(default="adding", metadata={"help": f"one of {', '.join(TASKS)}", "choices": tuple(TASKS)})
    seq_len: int = field(default=100, metadata=at_least(1))  # adding: the sequence length T; copy: the delay T
    #                                                          (sequences of T + 20 steps)
    batch_size: int = 32  # fresh sequences per step
    epoch_size: int = 100  # batches per epoch: the data is endless, so an epoch is a count of fresh batches
    eval_size: int = 1000  # validation sequences, drawn once from the seed
    training: TrainConfig = field(default_factory=memory_training)  # the loop's: optimizer, budgets, ...
    model: MemoryModelConfig = field(default_factory=MemoryModelConfig)

    def validate(self) -> None:
        """UserError naming the first bad value: types and ranges (recurrent.validation), then the adding problem's
        length and the device."""
        check(self)
        if self.problem == "adding" and self.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2 for the adding task (one marker in each half), got {self.seq_len}")
        self.training.validate()


class StepOutput(NamedTuple):
    loss: Tensor


Callback = Callable[[int, MemoryModel, tuple[Tensor, Tensor]], None]


class MemoryTask:
    """Fresh batches of a memory problem; the metric is the loss on one fixed validation batch (lower is better)."""

    name, metric, higher_is_better, unit = "memory", "val_loss", False, "ex"

    def __init__(self, config: TrainMemoryConfig, callback: Callback | None = None):
        self.config, self.problem = config, make_task(config.problem, config.seq_len)
        self.model = build_model(config.model, self.problem)
        self.valid = self.problem.sample(config.eval_size, torch.Generator().manual_seed(config.training.seed + 10_000))
        self.callback = callback

    def meta(self) -> dict:
        return {"model": asdict(self.config.model), "problem": self.config.problem, "seq_len": self.config.seq_len}

    def steps_per_epoch(self) -> int:
        return self.config.epoch_size

    def batches(self, epoch: int):
        """`epoch_size` fresh batches from this epoch's own generator. With several processes, this one's rows."""
        generator = torch.Generator().manual_seed(self.config.training.seed * 100_003 + epoch)
        world = distributed.world()
        for _ in range(self.config.epoch_size):
            x, y = self.problem.sample(self.config.batch_size, generator)  # (B, T, I), (B,) or (B, T)
            yield world.share(len(x), lambda rows: (x[rows], y[rows]))

    def step(self, model: MemoryModel, batch, carry):
        x, y = batch
        return StepOutput(self.problem.loss(model(x).float(), y)), None

    def after_step(self, model: MemoryModel, batch, step: int) -> None:
        """`callback(step, model, batch)` once the optimizer has stepped on `batch` (the loop's hook)."""
        if self.callback is not None:
            self.callback(step, model, batch)

    def count(self, batch) -> int:
        return len(batch[0])

    def weight(self, batch) -> int:
        return len(batch[0])  # both losses are means over sequences (copy: over their steps, all of one length)

    def evaluate(self, model: MemoryModel) -> dict:
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in self.valid)
        return {"val_loss": self.problem.loss(model(x).float(), y).item(), "baseline": self.problem.baseline}


def train_memory(config: TrainMemoryConfig, callback: Callback | None = None) -> Path:
    """Train as `config` says (recurrent.train.loop does the training); return the run folder. `callback(step,
    model, batch)`, if given, runs after each optimizer step (e.g. a GradientMonitor)."""
    config.validate()
    return train(lambda resumed: MemoryTask(config, callback), config.training, asdict(config))


# --- reading a run folder back ------------------------------------------------------------------------------


def load_memory_model(run_dir, name: str = "last") -> MemoryModel:
    """The model of a run folder's last checkpoint ("last") or its best one ("model"), in eval mode, on the CPU."""
    tensors, meta = load_checkpoint(run_dir, name=name)
    config = MemoryModelConfig(**meta["model"])
    model = build_model(config, make_task(meta["problem"], meta["seq_len"]))
    model.load_state_dict({k: v for k, v in tensors.items() if k in model.state_dict()})
    return model.eval()


@dataclass
class TrainResult:
    """One run as `bench memory` reports it, read from its folder."""

    cell: str
    final_loss: float  # on the validation batch, at the end
    baseline: float
    steps: int
    seconds: float  # wall time of the whole run, evaluations included
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss)
    grad_norms: list[float] = field(default_factory=list)  # pre-clip, one per step

    @classmethod
    def read(cls, run_dir, seconds: float) -> TrainResult:
        """From metrics.jsonl (the curve) and last.json (the cell, the clipping statistics)."""
        records = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r.get("val_loss") is not None]
        _, meta = load_checkpoint(run_dir, name="last")
        return cls(meta["model"]["cell"], records[-1]["val_loss"], records[-1]["baseline"], records[-1]["step"],
                   seconds, [(r["step"], r["val_loss"]) for r in records], meta["clip"]["norms"])
