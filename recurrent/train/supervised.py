"""The supervised trainer shared by sequence classification (`train/classify.py`) and tagging (`train/tag.py`).

Each task supplies its examples already encoded, a `collate` that turns a list of them into the model's keyword
arguments, and a `score` that measures the model on the dev set (higher "metric" is better). `fit` does the
rest: length-bucketed batches, AdamW or SGD with clipping, a learning-rate schedule, evaluation every epoch (or
every `eval_every` steps), the best checkpoint (early stopping on the dev metric), a progress bar, metrics.jsonl
and loss.png, and the step/time budget.

A run folder holds config.json ({"task": ..., the config}), model.safetensors + model.json (the best model; the
JSON has the model config, the word/char/label lists and the dev metrics), metrics.jsonl and loss.png.
`fit` trains on `config.device`: it moves the model there and each collated batch; checkpoints hold CPU tensors.
A task's `score` runs the model where it is, so it must move its own batches (`to_device(batch, model_device(model))`).
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from recurrent.precision import HELP as PRECISION_HELP, PRECISIONS, choose as choose_precision
from recurrent.checkpoint import load_checkpoint, save_checkpoint
from recurrent.data.buckets import bucket_batches
from recurrent.errors import UserError
from recurrent.train.common import (OPTIMIZERS, SCHEDULES, Budget, ClipStats, Schedule, append_metrics,
                                    make_optimizer, plot_losses, resolve_device, set_lr, to_device)

BEST = "model"
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every word and character list


@dataclass
class SupervisedConfig:
    train: str | None = None  # training file
    valid: str | None = None  # dev file: early stopping and the best checkpoint
    out: str = "runs/supervised"  # the run folder
    lowercase: bool = False  # lowercase words before looking them up (the char encoder still sees case)
    min_freq: int = 1  # words seen fewer times in train become <unk>
    unk_replace: float = 0.0  # in training, replace each word seen once by <unk> with this probability, so that
    #                           <unk> learns an embedding for unseen words (Lample et al. 2016 use 0.5)
    embeddings: str | None = None  # a word2vec/GloVe text file to initialise the word embeddings (never downloaded)
    batch_size: int = 32
    optimizer: str = field(default="adamw", metadata={"help": f"one of {OPTIMIZERS}"})
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = field(default="constant", metadata={"help": f"learning-rate schedule: one of {SCHEDULES}"})
    warmup_steps: int = 0
    clip: float = 5.0  # max global gradient norm (0: no clipping)
    epochs: int = 20
    eval_every: int = 0  # steps between dev evaluations (0: at the end of each epoch)
    patience: int = 5  # stop after this many evaluations without a better dev metric (0: never)
    log_every: int = 50  # steps between metrics lines
    seed: int = 0
    max_steps: int = 0  # stop after this many steps (0: no limit)
    max_time: float = 0.0  # stop after this many seconds (0: no limit); evaluates and saves first
    progress: bool = True  # tqdm progress bar on stderr
    device: str = "cpu"  # cpu | cuda | cuda:N: where the model trains; checkpoints are saved on the CPU either way
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})

    def validate(self) -> None:
        """UserError naming the first bad value."""
        if not self.train or not self.valid:
            raise UserError("training needs --train FILE and --valid FILE")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("batch_size", "epochs", "log_every", "min_freq"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0.0 <= self.unk_replace <= 1.0:
            raise UserError(f"unk_replace must be in [0, 1], got {self.unk_replace!r}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr!r}")
        for name in ("weight_decay", "warmup_steps", "clip", "eval_every", "patience", "max_steps", "max_time"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        model = getattr(self, "model")
        if not 0.0 <= model.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {model.dropout!r}")
        for name in ("embedding_size", "hidden_size", "num_layers"):
            if getattr(model, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(model, name)!r}")
        resolve_device(self.device)


# --- vocabularies -------------------------------------------------------------------------------------------


def build_index(sequences, min_freq: int = 1, specials: tuple[str, ...] = (PAD, UNK)) -> list[str]:
    """specials, then the items of `sequences` seen at least min_freq times, by frequency (ties by the item)."""
    counts = Counter(x for seq in sequences for x in seq)
    items = sorted((x for x, n in counts.items() if n >= min_freq and x not in specials),
                   key=lambda x: (-counts[x], x))
    return list(specials) + items


def singleton_ids(sequences, itos: list[str]) -> torch.Tensor:
    """(V,) bool: True for the words of `itos` seen exactly once in `sequences` (already normalised)."""
    counts = Counter(x for seq in sequences for x in seq)
    return torch.tensor([counts[w] == 1 for w in itos])


def replace_singletons(words: torch.Tensor, singletons: torch.Tensor, p: float) -> torch.Tensor:
    """words (B, T) ids with each singleton replaced by UNK (id 1) with probability p (torch's global RNG)."""
    if p <= 0:
        return words
    drop = singletons[words] & (torch.rand(words.shape) < p)
    return words.masked_fill(drop, 1)


def lookup(itos: list[str]) -> dict[str, int]:
    return {s: i for i, s in enumerate(itos)}


def log(message: str) -> None:
    """A line on stderr for the user (skipped sentences, embedding coverage): stdout stays for results."""
    print(message, file=sys.stderr)


# --- the training loop --------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def fit(config: SupervisedConfig, task: str, model: nn.Module, train: list, lengths: list[int], valid: list,
        collate: Callable[[list], dict], score: Callable[[nn.Module, list], dict], meta: dict) -> Path:
    """Train `model` on the encoded examples `train` (with their `lengths`, for bucketing) and keep the model
    with the best score(model, valid)["metric"]. `meta` (model config, vocabularies) goes in the checkpoint.
    Returns the run folder. Stops at `epochs`, the step/time budget or on patience, always after a final
    evaluation."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    precision = choose_precision(config.precision, device)  # decided once: fp32 or bf16 autocast
    (run_dir / "config.json").write_text(json.dumps({"task": task, **asdict(config),
                                                     "precision_used": precision.to_dict()}, indent=2) + "\n")
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("")

    model.to(device)  # before the optimizer, whose state follows the parameters
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    batches_per_epoch = -(-len(train) // config.batch_size)
    total = config.max_steps or config.epochs * batches_per_epoch
    schedule = Schedule(config.schedule, config.lr, config.warmup_steps, total_steps=total, total_time=config.max_time)
    clip, budget = ClipStats(config.clip), Budget(config.max_steps, config.max_time)
    shuffle = torch.Generator().manual_seed(config.seed)
    step, epoch, best, evals_since_best, evaluated_at = 0, 1, None, 0, None
    log_loss, log_steps, log_start, log_items = 0.0, 0, time.monotonic(), 0

    def evaluate_and_keep_best() -> dict:
        nonlocal best, evals_since_best, evaluated_at
        with precision.autocast(device.type):
            result = score(model, valid)
        schedule.on_eval(result["val_loss"])
        evaluated_at = step
        if best is None or result["metric"] > best["metric"]:
            best, evals_since_best = {"step": step, "epoch": epoch, **result}, 0
            save_checkpoint(run_dir, dict(model.state_dict()), {**meta, "trainer": asdict(config),
                                                                "metrics": _plain(best)}, name=BEST)
        else:
            evals_since_best += 1
        return result

    def write_metrics(lr: float, result: dict | None) -> None:
        nonlocal log_loss, log_steps, log_start, log_items
        elapsed = max(time.monotonic() - log_start, 1e-9)
        record = {"step": step, "epoch": epoch, "lr": lr, "train_loss": log_loss / log_steps if log_steps else None,
                  "val_loss": None, "examples_s": log_items / elapsed, "clip_fraction": clip.fraction(log_steps)}
        if result is not None:
            record.update({k: v for k, v in _plain(result).items() if k != "confusion"})
        append_metrics(metrics_path, record)
        log_loss, log_steps, log_start, log_items = 0.0, 0, time.monotonic(), 0

    bar = tqdm(total=total, disable=not config.progress, desc=f"train {task}", unit="step", dynamic_ncols=True)
    stop = budget.exhausted(step)
    while epoch <= config.epochs and not stop:
        for indices in bucket_batches(lengths, config.batch_size, shuffle):
            lr = schedule.lr(step, epoch, budget.elapsed())
            set_lr(optimizer, lr)
            model.train()
            with precision.autocast(device.type):
                out = model(**to_device(collate([train[i] for i in indices]), device))
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            clip.clip(model.parameters())
            optimizer.step()
            step += 1
            log_loss, log_steps, log_items = log_loss + out.loss.item(), log_steps + 1, log_items + len(indices)
            bar.update(1)
            bar.set_postfix(loss=f"{out.loss.item():.3f}", best=f"{best['metric']:.4f}" if best else "-")
            result = None
            if config.eval_every and step % config.eval_every == 0:
                result = evaluate_and_keep_best()
            if result is not None or step % config.log_every == 0:
                write_metrics(lr, result)
            if config.patience and evals_since_best >= config.patience or budget.exhausted(step):
                stop = True
                break
        if not stop and not config.eval_every:
            write_metrics(optimizer.param_groups[0]["lr"], evaluate_and_keep_best())
            stop = bool(config.patience and evals_since_best >= config.patience)
        epoch += 1 if not stop else 0
    bar.close()
    if evaluated_at != step or best is None:
        write_metrics(optimizer.param_groups[0]["lr"], evaluate_and_keep_best())
    plot_losses(metrics_path, run_dir / "loss.png", f"{run_dir.name}: {task}")
    return run_dir


def _plain(d: dict) -> dict:
    """JSON-safe copy (numpy and torch scalars -> float)."""
    return json.loads(json.dumps(d, default=float))


def load_run(run_dir) -> tuple[dict, dict]:
    """(tensors, meta) of a run folder's best model."""
    return load_checkpoint(run_dir, name=BEST)


# --- metrics ------------------------------------------------------------------------------------------------


def confusion_matrix(gold: list[int], pred: list[int], num_classes: int) -> list[list[int]]:
    """counts[g][p]: examples of gold class g predicted as p."""
    counts = [[0] * num_classes for _ in range(num_classes)]
    for g, p in zip(gold, pred):
        counts[g][p] += 1
    return counts


def macro_f1(confusion: list[list[int]]) -> float:
    """The unweighted mean of each gold class's F1 (classes absent from both gold and predictions are left out)."""
    scores = []
    for k in range(len(confusion)):
        tp = confusion[k][k]
        gold = sum(confusion[k])
        pred = sum(row[k] for row in confusion)
        if gold + pred:
            scores.append(2 * tp / (gold + pred))
    return sum(scores) / len(scores) if scores else 0.0


def format_confusion(confusion: list[list[int]], names: list[str]) -> str:
    """A table: one row per gold class, one column per predicted class."""
    width = max(6, *(len(n) for n in names), *(len(str(c)) for row in confusion for c in row)) + 1
    head = "gold \\ pred".ljust(width + 2) + "".join(n.rjust(width) for n in names)
    rows = [n.ljust(width + 2) + "".join(str(c).rjust(width) for c in row) for n, row in zip(names, confusion)]
    return "\n".join([head, *rows])
