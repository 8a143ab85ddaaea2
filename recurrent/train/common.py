"""Pieces every trainer uses: the device, the optimizer, learning-rate schedules, gradient clipping with statistics,
metrics (JSONL and a loss-curve PNG), and a step/time budget.

Each piece is small and has no hidden state beyond what `state_dict()` returns (JSON-safe), so a checkpoint
can hold it and a resumed run continues with the same numbers.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from recurrent.devices import model_device, resolve_device, to_device  # noqa: F401 (re-exported)
from recurrent.errors import UserError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine", "plateau", "zaremba")


# --- optimizer ----------------------------------------------------------------------------------------------


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019) or plain SGD (Zaremba et al. 2014: lr 1, no momentum)."""
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise UserError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --- learning-rate schedules --------------------------------------------------------------------------------


@dataclass
class Schedule:
    """lr(step, epoch): linear warm-up over `warmup_steps`, then

        constant  base_lr
        cosine    base_lr · ½(1 + cos(π · progress)) down to 0 at `total_steps`, or at `total_time` seconds
                  when that comes first: a time-budgeted run anneals as its budget runs out (Loshchilov &
                  Hutter 2017). Time progress restarts with a resumed run's fresh budget.
        zaremba   base_lr · factor^max(0, epoch - decay_start_epoch), epochs counted from 1 (Zaremba et al.
                  2014: lr 1, halved every epoch after the 4th)
        plateau   base_lr · scale; `on_eval` multiplies scale by `factor` when the validation loss has not
                  improved for `plateau_patience` evaluations (torch's ReduceLROnPlateau)
    """

    kind: str
    base_lr: float
    warmup_steps: int = 0
    total_steps: int = 0
    total_time: float = 0.0  # seconds; 0: no time-based progress
    decay_start_epoch: int = 4
    factor: float = 0.5
    plateau_patience: int = 1
    scale: float = 1.0  # plateau: the product of the reductions so far
    best: float = math.inf  # plateau: the best validation loss seen
    bad_evals: int = 0  # plateau: evaluations since the best

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise UserError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")

    def lr(self, step: int, epoch: int, elapsed: float = 0.0) -> float:
        """The learning rate for optimizer step `step` (0-based) in epoch `epoch` (1-based), `elapsed` seconds in."""
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            if self.total_time > 0:
                progress = max(progress, min(1.0, elapsed / self.total_time))
            return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "zaremba":
            return self.base_lr * self.factor ** max(0, epoch - self.decay_start_epoch)
        if self.kind == "plateau":
            return self.base_lr * self.scale
        return self.base_lr

    def on_eval(self, val_loss: float) -> None:
        if self.kind != "plateau":
            return
        if val_loss < self.best:
            self.best, self.bad_evals = val_loss, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.plateau_patience:
            self.scale *= self.factor
            self.bad_evals = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best if math.isfinite(self.best) else None,
                "bad_evals": self.bad_evals}

    def load_state_dict(self, d: dict) -> None:
        self.scale, self.bad_evals = d["scale"], d["bad_evals"]
        self.best = math.inf if d["best"] is None else d["best"]


# --- gradient clipping --------------------------------------------------------------------------------------


@dataclass
class ClipStats:
    """How often clipping bites: the pre-clip gradient norms of the last KEEP steps (a checkpoint holds them, so
    they are bounded), and the steps and clipped steps in all."""

    KEEP = 10_000
    max_norm: float
    norms: list[float] = field(default_factory=list)  # the last KEEP steps' norms, oldest first
    clipped: int = 0  # steps whose norm was above max_norm, in all
    steps: int = 0  # steps, in all

    def clip(self, parameters) -> float:
        """Clip the gradients in place (no-op when max_norm <= 0) and record the pre-clip norm."""
        parameters = [p for p in parameters if p.grad is not None]
        limit = self.max_norm if self.max_norm > 0 else math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, limit))
        self.norms.append(norm)
        if len(self.norms) > 2 * self.KEEP:  # trimmed now and then, not at every step
            del self.norms[:-self.KEEP]
        self.clipped, self.steps = self.clipped + (norm > limit), self.steps + 1
        return norm

    def fraction(self, last: int | None = None) -> float:
        """Fraction of the last `last` steps (at most KEEP; all steps if None) whose norm was clipped."""
        if self.max_norm <= 0 or not self.steps:
            return 0.0
        if last is None:
            return self.clipped / self.steps
        norms = self.norms[-last:]
        return sum(n > self.max_norm for n in norms) / len(norms) if norms else 0.0

    def state_dict(self) -> dict:
        return {"norms": self.norms[-self.KEEP:], "clipped": self.clipped, "steps": self.steps}

    def load_state_dict(self, d: dict) -> None:
        self.norms, self.clipped = list(d["norms"]), d["clipped"]
        self.steps = d.get("steps", len(self.norms))  # saved before `steps`: every norm was kept


# --- metrics ------------------------------------------------------------------------------------------------


def append_metrics(path, record: dict) -> None:
    """One JSON object per line; the file is appended to, so a resumed run continues it."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(metrics_path, png_path, title: str = "loss") -> None:
    """Train and validation loss (nats/token) against step, from a metrics JSONL file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train_loss", "-"), ("val_loss", "o-")):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "))
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


# --- budget -------------------------------------------------------------------------------------------------


@dataclass
class Budget:
    """Stop after `max_steps` optimizer steps in all (0: no limit) or `max_time` seconds of this process
    (0: no limit). Time counts from construction, so a resumed run gets a fresh time budget."""

    max_steps: int = 0
    max_time: float = 0.0
    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def exhausted(self, step: int, elapsed: float | None = None) -> bool:
        """elapsed: seconds as several processes agreed on them (default: this process's clock)."""
        if self.max_steps > 0 and step >= self.max_steps:
            return True
        return self.max_time > 0 and (self.elapsed() if elapsed is None else elapsed) >= self.max_time
