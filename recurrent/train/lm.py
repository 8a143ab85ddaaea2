"""Train a recurrent language model with truncated BPTT (Zaremba et al. 2014; Merity et al. 2018).

Key: N tokens, B batch (parallel streams), t window length (<= bptt), V vocab.

    run_dir = train_lm(TrainLMConfig(data="input.txt", out="runs/shakespeare", model=LMConfig(hidden_size=256)))
    model, vocab = load_lm(run_dir)
    print(evaluate_lm(model, vocab, read_text("test.txt")))     # bits/char 1.912

The corpus is cut into B streams read side by side (`batchify`); each step trains on the next window of every
stream, starting from the state the previous window left, detached so that gradients span one window.

A run folder holds:
    config.json                the final TrainLMConfig (model fields under "model")
    model.safetensors/.json    the best model so far (lowest valid loss), its config, vocabulary and metrics
    last.safetensors/.json     everything needed to resume: model, optimizer, RNG states, schedule, position
                               in the epoch and the carried hidden state
    metrics.jsonl, loss.png    one JSON object per log line, and the loss curves
Checkpoints hold CPU tensors whatever `device` trained the model, so a GPU run loads on a CPU-only machine.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

import recurrent.state as rc_state
from recurrent.precision import HELP as PRECISION_HELP, PRECISIONS, choose as choose_precision
from recurrent.checkpoint import (flatten_optimizer_state, load_checkpoint, rng_state, save_checkpoint,
                                  set_rng_state, unflatten_optimizer_state)
from recurrent.data import Vocab, batchify, bptt_batches, load_corpus, num_bptt_batches
from recurrent.data.text import LEVELS
from recurrent.errors import UserError
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.state import detach
from recurrent.train.common import (OPTIMIZERS, SCHEDULES, Budget, ClipStats, Schedule, append_metrics,
                                    make_optimizer, model_device, plot_losses, resolve_device, set_lr)

BEST, LAST = "model", "last"  # checkpoint names in the run folder


@dataclass
class TrainLMConfig:
    # data
    data: str | None = None  # a text file or directory; its last 10% becomes valid
    train: str | None = None  # or explicit train / valid (/ test) files
    valid: str | None = None
    test: str | None = None
    level: str = field(default="char", metadata={"help": f"tokens: one of {LEVELS}"})
    vocab_size: int = 0  # keep at most this many tokens, specials included (0: all)
    min_freq: int = 1  # drop tokens seen fewer times
    out: str = "runs/lm"  # the run folder
    # batches
    batch_size: int = 32  # B parallel streams
    bptt: int = 64  # window length: gradients flow back at most this many tokens
    random_bptt: bool = False  # AWD-LSTM's variable window lengths, around bptt
    # optimisation
    optimizer: str = field(default="adamw", metadata={"help": f"one of {OPTIMIZERS}"})
    lr: float = 2e-3
    weight_decay: float = 0.0
    schedule: str = field(default="constant", metadata={"help": f"learning-rate schedule: one of {SCHEDULES}"})
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps
    decay_start_epoch: int = 4  # zaremba: halve lr every epoch after this one
    clip: float = 1.0  # max global gradient norm (0: no clipping)
    epochs: int = 10
    # evaluation and stopping
    eval_every: int = 500  # steps between validation runs (and one at the end)
    eval_batch_size: int = 10
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    log_every: int = 50  # steps between metrics lines
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})
    device: str = "cpu"  # cpu | cuda | cuda:N: where the model trains; checkpoints are saved on the CPU either way
    seed: int = 0
    max_steps: int = 0  # stop after this many steps in all (0: no limit)
    max_time: float = 0.0  # stop after this many seconds (0: no limit); evaluates and saves first
    resume: bool = False  # continue from the run folder's last checkpoint
    progress: bool = True  # tqdm progress bar on stderr
    model: LMConfig = field(default_factory=LMConfig)  # vocab_size is taken from the data

    def validate(self) -> None:
        """UserError naming the first bad value."""
        checks = [
            (self.level in LEVELS, f"level must be one of {LEVELS}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        positive = ["batch_size", "bptt", "epochs", "eval_every", "eval_batch_size", "log_every", "min_freq"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr!r}")
        non_negative = ["vocab_size", "weight_decay", "warmup_steps", "clip", "patience", "max_steps", "max_time"]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("dropout", "dropout_input", "dropout_hidden", "dropout_embedding", "weight_drop"):
            p = getattr(self.model, name)
            if not 0.0 <= p < 1.0:
                raise UserError(f"{name} must be in [0, 1), got {p!r}")
        for name in ("hidden_size", "num_layers"):
            if getattr(self.model, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self.model, name)!r}")
        resolve_device(self.device)


@dataclass
class Position:
    """Where training stands: all a resumed run needs besides the tensors."""

    step: int = 0  # optimizer steps taken
    epoch: int = 1  # 1-based
    window: int = 0  # windows of this epoch already trained on
    best_val: float | None = None
    evals_since_best: int = 0
    last_val: float | None = None
    last_train: float | None = None


# --- training -----------------------------------------------------------------------------------------------


def train_lm(config: TrainLMConfig) -> Path:
    """Train as `config` says; return the run folder. Stops at `epochs`, the step/time budget, or on patience,
    and in each case evaluates, keeps the best checkpoint and returns normally."""
    config.validate()
    run_dir = Path(config.out)
    corpus = load_corpus(config.data, config.train, config.valid, config.test)
    resumed = _load_last(run_dir) if config.resume else None
    vocab = Vocab.from_dict(resumed[1]["vocab"]) if resumed else _build_vocab(corpus, config)

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    model_config = dataclasses.replace(config.model, vocab_size=len(vocab))
    try:
        model = LanguageModel(model_config)
    except ValueError as e:
        raise UserError(str(e)) from None
    device = resolve_device(config.device)
    precision = choose_precision(config.precision, device)  # decided once: fp32 or bf16 autocast
    model.to(device)  # before the optimizer, whose state follows the parameters
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    train_streams = batchify(vocab.encode(corpus.train), config.batch_size).to(device)  # (B, L): windows are views
    valid_ids = vocab.encode(corpus.valid)  # (N,)
    windows_per_epoch = num_bptt_batches(train_streams, config.bptt)
    schedule = Schedule(config.schedule, config.lr, config.warmup_steps,
                        total_steps=config.max_steps or config.epochs * windows_per_epoch, total_time=config.max_time,
                        decay_start_epoch=config.decay_start_epoch)
    clip = ClipStats(config.clip)
    pos, state = Position(), None

    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    if resumed:
        pos, state = _restore(resumed, model, optimizer, schedule, clip, device)
    else:
        metrics_path.write_text("")
    (run_dir / "config.json").write_text(json.dumps({"task": "lm", **asdict(config),
                                                     "precision_used": precision.to_dict()}, indent=2) + "\n")

    def checkpoint_meta() -> dict:
        return {"model": asdict(model_config), "vocab": vocab.to_dict(), "trainer": asdict(config),
                "metrics": {"step": pos.step, "epoch": pos.epoch, "val_loss": pos.last_val,
                            "train_loss": pos.last_train}}

    def validate_and_keep_best() -> float:
        val = evaluate_loss(model, valid_ids, config.eval_batch_size, config.bptt, precision.bf16)
        pos.last_val = val
        schedule.on_eval(val)
        if pos.best_val is None or val < pos.best_val:
            pos.best_val, pos.evals_since_best = val, 0
            save_checkpoint(run_dir, dict(model.state_dict()), checkpoint_meta(), name=BEST)
        else:
            pos.evals_since_best += 1
        return val

    budget = Budget(config.max_steps, config.max_time)
    bar = tqdm(total=config.max_steps or config.epochs * windows_per_epoch, initial=pos.step,
               disable=not config.progress, desc="train lm", unit="step", dynamic_ncols=True)
    log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, time.monotonic()
    evaluated_at, stop = None, None
    while pos.epoch <= config.epochs and stop is None and not budget.exhausted(pos.step):
        # The window lengths of an epoch come from their own seeded generator, so a resumed run can skip the
        # windows it has already trained on and see the same ones next.
        lengths = torch.Generator().manual_seed(config.seed * 100_003 + pos.epoch)
        windows = bptt_batches(train_streams, config.bptt, config.random_bptt, lengths)
        for _ in range(pos.window):
            next(windows)
        for x, y in windows:  # x, y (B, t)
            lr = schedule.lr(pos.step, pos.epoch, budget.elapsed())
            set_lr(optimizer, lr)
            if state is not None:
                state = tuple(detach(s) for s in state)  # cut the graph: BPTT spans one window
            loss, state = train_step(model, optimizer, clip, x, y, state, precision.bf16)
            pos.step, pos.window = pos.step + 1, pos.window + 1
            log_loss, log_tokens, log_steps = log_loss + loss, log_tokens + y.numel(), log_steps + 1
            tok_s = log_tokens / max(time.monotonic() - log_start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:.0f}")

            val = None
            if pos.step % config.eval_every == 0:
                val, evaluated_at = validate_and_keep_best(), pos.step
            if val is not None or pos.step % config.log_every == 0:
                pos.last_train = log_loss / log_steps
                append_metrics(metrics_path, {"step": pos.step, "epoch": pos.epoch, "lr": lr,
                                              "train_loss": pos.last_train, "val_loss": val, "tok_s": tok_s,
                                              "clip_fraction": clip.fraction(last=log_steps)})
                log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, time.monotonic()
            if config.patience and pos.evals_since_best >= config.patience:
                stop = "patience"
                break
            if budget.exhausted(pos.step):
                stop = "budget"
                break
        else:
            pos.epoch, pos.window, state = pos.epoch + 1, 0, None  # a new epoch reads the streams from the start
    bar.close()

    if evaluated_at != pos.step:
        val = validate_and_keep_best()
        append_metrics(metrics_path, {"step": pos.step, "epoch": min(pos.epoch, config.epochs),
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "train_loss": log_loss / log_steps if log_steps else None, "val_loss": val,
                                      "tok_s": None, "clip_fraction": clip.fraction(last=log_steps or None)})
    _save_last(run_dir, model, optimizer, schedule, clip, pos, state, checkpoint_meta())
    plot_losses(metrics_path, run_dir / "loss.png", f"{run_dir.name}: {model_config.cell}, "
                                                    f"hidden {model_config.hidden_size}, {config.level} level")
    return run_dir


def train_step(model: LanguageModel, optimizer, clip: ClipStats, x: Tensor, y: Tensor, state, bf16: bool):
    """One window on x's device (the model's): forward from the carried state, backward, clip, step.
    Returns (loss, new state)."""
    model.train()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x, state, targets=y)  # logits (B, t, V)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    clip.clip(model.parameters())
    optimizer.step()
    return out.loss.item(), out.state


def _build_vocab(corpus, config: TrainLMConfig) -> Vocab:
    """Word level: from train only (PTB). Char level: from all the text, as nanoGPT does, since a char vocabulary
    has no "<unk>" for characters that only valid or test contains."""
    text = corpus.train
    if config.level == "char":
        text += corpus.valid + (corpus.test or "")
    return Vocab.build(text, config.level, max_size=config.vocab_size or None, min_freq=config.min_freq)


# --- resume -------------------------------------------------------------------------------------------------


def _save_last(run_dir: Path, model, optimizer, schedule: Schedule, clip: ClipStats, pos: Position, state,
               meta: dict) -> None:
    tensors = dict(model.state_dict())
    optim_tensors, meta["optimizer"] = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, meta["rng"] = rng_state()
    state_tensors, meta["state"] = {}, None
    if state is not None:
        meta["state"] = [type(s).__name__ for s in state]
        state_tensors = {f"state.{l}.{i}": f for l, s in enumerate(state) for i, f in enumerate(s)}
    meta.update(position=asdict(pos), schedule=schedule.state_dict(), clip=clip.state_dict())
    save_checkpoint(run_dir, {**tensors, **optim_tensors, **rng_tensors, **state_tensors}, meta, name=LAST)


def _load_last(run_dir: Path) -> tuple[dict, dict]:
    if not (run_dir / f"{LAST}.safetensors").exists():
        raise UserError(f"cannot resume: {run_dir} has no {LAST}.safetensors (train without --resume first)")
    return load_checkpoint(run_dir, name=LAST)


def _restore(resumed, model, optimizer, schedule: Schedule, clip: ClipStats, device: torch.device):
    """Load a last checkpoint (CPU tensors) into a model and optimizer already on `device`."""
    tensors, meta = resumed
    model_keys = set(model.state_dict())
    model.load_state_dict({k: v for k, v in tensors.items() if k in model_keys})  # copies onto the parameters' device
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))  # torch moves it to the params
    set_rng_state(tensors, meta["rng"])
    schedule.load_state_dict(meta["schedule"])
    clip.load_state_dict(meta["clip"])
    state = None
    if meta["state"] is not None:  # the hidden state carried into the next window, one named state per layer
        types = [getattr(rc_state, name) for name in meta["state"]]  # LSTMState or RNNState
        state = tuple(kind(*(tensors[f"state.{l}.{i}"].to(device) for i in range(len(kind._fields))))
                      for l, kind in enumerate(types))
    return Position(**meta["position"]), state


# --- evaluation ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_loss(model: LanguageModel, ids: Tensor, batch_size: int = 10, bptt: int = 64,
                  bf16: bool = False) -> float:
    """Mean cross-entropy in nats/token over a whole token stream (N,), read as `batch_size` streams with the
    state carried from window to window, without dropout, on the model's device. Up to batch_size - 1 trailing
    tokens are not scored."""
    B = min(batch_size, ids.numel() // 2)
    if B < 1:
        raise UserError(f"{ids.numel()} tokens are too few to evaluate on: need at least 2")
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    device = model_device(model)
    for x, y in bptt_batches(batchify(ids, B).to(device), bptt):  # x, y (B, t)
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():  # (not enabled=False:
            out = model(x, state, targets=y)  # that would switch off an autocast the caller is in)
        total += out.loss.float().item() * y.numel()
        count += y.numel()
        state = out.state
    model.train(was_training)
    return total / count


class LMScore(NamedTuple):
    nats_per_token: float
    level: str  # char or word

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    def __str__(self) -> str:
        """"bits/char 1.912" at char level, "perplexity 114.2" at word level: each field's usual number."""
        if self.level == "char":
            return f"bits/char {self.bits_per_token:.3f}"
        return f"perplexity {self.perplexity:.1f}"


def evaluate_lm(model: LanguageModel, vocab: Vocab, text: str, batch_size: int = 10, bptt: int = 64) -> LMScore:
    """Score a text: nats/token, with bits/char (char level) and perplexity as properties."""
    return LMScore(evaluate_loss(model, vocab.encode(text), batch_size, bptt), vocab.level)


def load_lm(run_dir, device: str = "cpu") -> tuple[LanguageModel, Vocab]:
    """The best model of a run folder (in eval mode, on `device`) and its vocabulary."""
    device = resolve_device(device)
    tensors, meta = load_checkpoint(run_dir, name=BEST)
    if "model" not in meta or "vocab" not in meta:
        raise UserError(f"{run_dir} does not hold a language model checkpoint (no model config or vocabulary)")
    model = LanguageModel(LMConfig(**meta["model"]))
    model.load_state_dict(tensors)
    model.to(device).eval()
    return model, Vocab.from_dict(meta["vocab"])
