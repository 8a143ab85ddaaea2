"""Train an encoder-decoder translation model on parallel text, or on a synthetic task.

Key: B batch, S source length, T target length, V vocabulary.

    run_dir = train_translate(TrainTranslateConfig(src="train.de", tgt="train.en", valid_src="val.de",
                                                   valid_tgt="val.en", out="runs/de-en"))
    translator = load_translator(run_dir)
    translator.translate(["Ein Mann fährt Fahrrad."], beam_size=5)        # ["A man rides a bike."]

A run folder holds:
    config.json                the final TrainTranslateConfig, with "task": "translate" (model fields under "model")
    model.safetensors/.json    the best model so far (lowest valid loss), its config, both vocabularies (the
                               tokenizers' JSON) and metrics
    metrics.jsonl, loss.png    one JSON object per log line, and the loss curves
The checkpoint holds CPU tensors whatever `device` trained the model.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recurrent.precision import HELP as PRECISION_HELP, PRECISIONS, choose as choose_precision
from recurrent.checkpoint import load_checkpoint, save_checkpoint
from recurrent.data.parallel import (KINDS, PAD_ID, ReadReport, TextCodec, bucket_batches, encode_pairs,
                                     read_parallel)
from recurrent.decoding import Hypothesis, beam_search, greedy_search
from recurrent.errors import UserError
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig
from recurrent.tasks.synthetic import TASKS, SyntheticTask
from recurrent.train.common import (OPTIMIZERS, SCHEDULES, Budget, ClipStats, Schedule, append_metrics,
                                    make_optimizer, model_device, plot_losses, resolve_device, set_lr, to_device)

BEST = "model"


@dataclass
class TrainTranslateConfig:
    # data: parallel files, or a synthetic task
    src: str | None = None  # training source file, one sentence per line
    tgt: str | None = None  # training target file, line-aligned with src
    valid_src: str | None = None
    valid_tgt: str | None = None
    # (`synthetic`, not `task`: config.json's "task" names what was trained, "translate"; the CLI flag is --task)
    synthetic: str | None = field(default=None, metadata={"help": f"a synthetic task instead of files: {TASKS}"})
    task_symbols: int = 10  # synthetic: alphabet size
    task_min_len: int = 8  # synthetic: sequence lengths
    task_max_len: int = 8
    task_size: int = 10000  # synthetic: training pairs (valid: a tenth, at least 100)
    # vocabularies and preprocessing
    vocab: str = field(default="word", metadata={"help": f"vocabulary kind: one of {KINDS}"})
    src_vocab_size: int = 0  # word: keep at most this many (0: all); bpe: merges up to this size (0: 8000)
    tgt_vocab_size: int = 0
    min_freq: int = 1  # drop rarer words (word) / pairs (bpe)
    lowercase: bool = False
    split_punctuation: bool = False  # tokenise: punctuation becomes its own token
    max_len: int = 100  # sentences are cut to this many tokens (counted)
    out: str = "runs/translate"
    # optimisation
    batch_size: int = 64  # sentences per batch, bucketed by length
    optimizer: str = field(default="adamw", metadata={"help": f"one of {OPTIMIZERS}"})
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = field(default="constant", metadata={"help": f"learning-rate schedule: one of {SCHEDULES}"})
    warmup_steps: int = 0
    clip: float = 1.0  # max global gradient norm (0: no clipping)
    epochs: int = 10
    teacher_forcing: float = 1.0  # probability of feeding the true previous token (1: always)
    label_smoothing: float = 0.0  # of the training loss (Szegedy et al. 2016); valid loss is plain
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})
    device: str = "cpu"  # cpu | cuda | cuda:N: where the model trains; the checkpoint is saved on the CPU either way
    # evaluation and stopping
    eval_every: int = 500  # steps between validation runs (and one at the end)
    eval_batch_size: int = 128
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    log_every: int = 50
    seed: int = 0
    max_steps: int = 0  # stop after this many steps (0: no limit)
    max_time: float = 0.0  # stop after this many seconds (0: no limit); evaluates and saves first
    progress: bool = True  # tqdm progress bar on stderr
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)  # vocabulary sizes come from the data

    def validate(self) -> None:
        """UserError naming the first bad value."""
        if self.synthetic is None and not (self.src and self.tgt and self.valid_src and self.valid_tgt):
            raise UserError("give --src, --tgt, --valid-src and --valid-tgt, or a synthetic --task")
        if self.synthetic is not None and self.synthetic not in TASKS:
            raise UserError(f"task must be one of {TASKS}, got {self.synthetic!r}")
        for name, allowed in (("vocab", KINDS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "epochs", "eval_every", "eval_batch_size", "log_every", "min_freq", "max_len",
                     "task_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise UserError(f"lr must be > 0, got {self.lr!r}")
        for name in ("src_vocab_size", "tgt_vocab_size", "weight_decay", "warmup_steps", "clip", "patience",
                     "max_steps", "max_time"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.teacher_forcing <= 1.0:
            raise UserError(f"teacher_forcing must be in [0, 1], got {self.teacher_forcing!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        try:
            dataclasses.replace(self.model, src_vocab_size=1, tgt_vocab_size=1).validate()
        except ValueError as e:
            raise UserError(str(e)) from None
        resolve_device(self.device)


# --- data ---------------------------------------------------------------------------------------------------


def read_data(config: TrainTranslateConfig):
    """(train pairs, valid pairs) of text, from the files or the synthetic task, with what reading dropped."""
    if config.synthetic is not None:
        try:
            task = SyntheticTask(config.synthetic, config.task_symbols, config.task_min_len, config.task_max_len)
        except ValueError as e:
            raise UserError(str(e)) from None
        generator = torch.Generator().manual_seed(config.seed)
        train = list(zip(*task.lines(config.task_size, generator)))
        valid = list(zip(*task.lines(max(100, config.task_size // 10), generator)))
        return train, valid, ReadReport(len(train)), ReadReport(len(valid))
    train, train_report = read_parallel(config.src, config.tgt)
    valid, valid_report = read_parallel(config.valid_src, config.valid_tgt)
    for name, pairs in (("training", train), ("validation", valid)):
        if not pairs:
            raise UserError(f"the {name} files hold no sentence pairs")
    return train, valid, train_report, valid_report


def train_codecs(config: TrainTranslateConfig, train_pairs) -> tuple[TextCodec, TextCodec]:
    """Source and target vocabularies, learned from the training pairs only."""
    kind = "word" if config.synthetic else config.vocab
    options = dict(kind=kind, min_freq=config.min_freq, lowercase=config.lowercase,
                   split_punctuation=config.split_punctuation)
    return (TextCodec.train([s for s, _ in train_pairs], vocab_size=config.src_vocab_size, **options),
            TextCodec.train([t for _, t in train_pairs], vocab_size=config.tgt_vocab_size, **options))


# --- training -----------------------------------------------------------------------------------------------


def train_translate(config: TrainTranslateConfig) -> Path:
    """Train as `config` says; return the run folder. Stops at `epochs`, the step/time budget or on patience,
    and in each case evaluates, keeps the best checkpoint and returns normally."""
    config.validate()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    train_text, valid_text, train_report, valid_report = read_data(config)
    src_codec, tgt_codec = train_codecs(config, train_text)
    train = encode_pairs(train_text, src_codec, tgt_codec, config.max_len, train_report)
    valid = encode_pairs(valid_text, src_codec, tgt_codec, config.max_len, valid_report)
    print(f"train: {train_report}\nvalid: {valid_report}\nvocabularies: source {len(src_codec)}, "
          f"target {len(tgt_codec)} ({config.vocab if not config.synthetic else 'word'})", file=sys.stderr)
    if not train or not valid:
        raise UserError("no sentence pairs left after tokenisation")

    model_config = dataclasses.replace(config.model, src_vocab_size=len(src_codec), tgt_vocab_size=len(tgt_codec))
    model = Seq2Seq(model_config).to(resolve_device(config.device))  # before the optimizer, whose state follows
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    batches_per_epoch = math.ceil(len(train) / config.batch_size)
    schedule = Schedule(config.schedule, config.lr, config.warmup_steps,
                        total_steps=config.max_steps or config.epochs * batches_per_epoch, total_time=config.max_time)
    clip = ClipStats(config.clip)

    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.write_text("")
    precision = choose_precision(config.precision, model_device(model))  # decided once: fp32 or bf16 autocast
    (run_dir / "config.json").write_text(json.dumps({"task": "translate", **asdict(config),
                                                     "precision_used": precision.to_dict()}, indent=2) + "\n")

    step, epoch, best_val, evals_since_best, evaluated_at = 0, 1, None, 0, None

    def validate_and_keep_best() -> float:
        nonlocal best_val, evals_since_best
        val = evaluate_loss(model, valid, config.eval_batch_size)
        schedule.on_eval(val)
        if best_val is None or val < best_val:
            best_val, evals_since_best = val, 0
            meta = {"model": asdict(model_config), "src_vocab": src_codec.to_json(), "tgt_vocab": tgt_codec.to_json(),
                    "max_len": config.max_len, "lowercase": config.lowercase,
                    "metrics": {"step": step, "epoch": epoch, "val_loss": val}}
            save_checkpoint(run_dir, dict(model.state_dict()), meta, name=BEST)
        else:
            evals_since_best += 1
        return val

    budget = Budget(config.max_steps, config.max_time)
    generator = torch.Generator().manual_seed(config.seed)
    bar = tqdm(total=config.max_steps or config.epochs * batches_per_epoch, disable=not config.progress,
               desc="train translate", unit="step", dynamic_ncols=True)
    log_loss, log_tokens, log_steps, log_start, stop = 0.0, 0, 0, time.monotonic(), None
    while epoch <= config.epochs and stop is None and not budget.exhausted(step):
        for batch in bucket_batches(train, config.batch_size, shuffle=True, generator=generator):
            batch = to_device(batch, model_device(model))
            lr = schedule.lr(step, epoch, budget.elapsed())
            set_lr(optimizer, lr)
            loss = train_step(model, optimizer, clip, batch, config.teacher_forcing, config.label_smoothing,
                              precision.bf16)
            step += 1
            tokens = int((batch.tgt_out != PAD_ID).sum())
            log_loss, log_tokens, log_steps = log_loss + loss, log_tokens + tokens, log_steps + 1
            tok_s = log_tokens / max(time.monotonic() - log_start, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:.0f}")
            val = None
            if step % config.eval_every == 0:
                val, evaluated_at = validate_and_keep_best(), step
            if val is not None or step % config.log_every == 0:
                append_metrics(metrics_path, {"step": step, "epoch": epoch, "lr": lr, "train_loss": log_loss / log_steps,
                                              "val_loss": val, "tok_s": tok_s,
                                              "clip_fraction": clip.fraction(last=log_steps)})
                log_loss, log_tokens, log_steps, log_start = 0.0, 0, 0, time.monotonic()
            if config.patience and evals_since_best >= config.patience:
                stop = "patience"
                break
            if budget.exhausted(step):
                stop = "budget"
                break
        else:
            epoch += 1
    bar.close()
    if evaluated_at != step:
        val = validate_and_keep_best()
        append_metrics(metrics_path, {"step": step, "epoch": min(epoch, config.epochs),
                                      "lr": optimizer.param_groups[0]["lr"],
                                      "train_loss": log_loss / log_steps if log_steps else None, "val_loss": val,
                                      "tok_s": None, "clip_fraction": clip.fraction(last=log_steps or None)})
    plot_losses(metrics_path, run_dir / "loss.png", f"{run_dir.name}: {model_config.cell}, "
                                                    f"attention {model_config.attention}")
    return run_dir


def train_step(model: Seq2Seq, optimizer, clip: ClipStats, batch, teacher_forcing: float,
               label_smoothing: float, bf16: bool = False) -> float:
    """One batch: forward over the whole target, backward, clip, step. Returns the plain loss (nats/token)."""
    model.train()
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=bf16):  # the loss stays float32
        out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, teacher_forcing)  # logits (B, T, V)
        loss = out.loss
        if label_smoothing:
            loss = F.cross_entropy(out.logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID,
                                   label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip.clip(model.parameters())
    optimizer.step()
    return out.loss.item()


@torch.no_grad()
def evaluate_loss(model: Seq2Seq, pairs, batch_size: int = 128) -> float:
    """Mean cross-entropy in nats per target token (</s> included, padding excluded), teacher-forced, no dropout,
    on the model's device."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in bucket_batches(pairs, batch_size):
        batch = to_device(batch, model_device(model))
        out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
        n = int((batch.tgt_out != PAD_ID).sum())
        total, count = total + out.loss.item() * n, count + n
    model.train(was_training)
    return total / count


# --- using a trained model ----------------------------------------------------------------------------------


class Translation(NamedTuple):
    text: str  # detokenised output
    hypothesis: Hypothesis  # ids, score, attention (output step x source token)
    src_tokens: list[str]  # the source as the model saw it (after lowercasing, tokenisation, truncation)


@dataclass
class Translator:
    """A trained model with its vocabularies: text in, text out."""

    model: Seq2Seq
    src_codec: TextCodec
    tgt_codec: TextCodec
    max_len: int
    lowercase: bool = False  # trained on lowercased text: score case-insensitively
    truncated: int = 0  # source sentences cut to max_len so far

    def translate(self, lines: list[str], beam_size: int = 1, batch_size: int = 64, alpha: float = 1.0,
                  progress: bool = False) -> list[Translation]:
        """One Translation per line, in order. An empty line gives an empty translation. beam_size 1: greedy."""
        ids = self.src_codec.encode_batch(lines)
        self.truncated += sum(len(s) > self.max_len for s in ids)
        ids = [s[: self.max_len] for s in ids]
        order = sorted((i for i in range(len(ids)) if ids[i]), key=lambda i: -len(ids[i]))  # bucket by length
        results: list[Translation | None] = [None] * len(ids)
        bar = tqdm(total=len(order), disable=not progress, desc="translate", unit="sent", file=sys.stderr)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            src = torch.nn.utils.rnn.pad_sequence([torch.tensor(ids[i]) for i in idx], batch_first=True,
                                                  padding_value=PAD_ID)  # (B, S)
            lengths = torch.tensor([len(ids[i]) for i in idx])
            src = src.to(model_device(self.model))  # (the lengths may stay on the CPU: the search moves them)
            if beam_size == 1:
                hyps = greedy_search(self.model, src, lengths, alpha=alpha)
            else:
                hyps = beam_search(self.model, src, lengths, beam_size, alpha=alpha)
            for i, h in zip(idx, hyps):
                results[i] = Translation(self.tgt_codec.decode(h.tokens), h, self._tokens(ids[i]))
            bar.update(len(idx))
        bar.close()
        empty = Hypothesis([], 0.0, 0.0, None)
        return [r if r is not None else Translation("", empty, []) for r in results]

    def _tokens(self, ids: list[int]) -> list[str]:
        return [self.src_codec.tokenizer.id_to_token(i) for i in ids]

    def target_tokens(self, ids: list[int]) -> list[str]:
        return [self.tgt_codec.tokenizer.id_to_token(i) for i in ids]

    def perplexity(self, src_lines: list[str], tgt_lines: list[str], batch_size: int = 128) -> float:
        """exp(nats per target token), teacher-forced on the references; empty pairs skipped."""
        pairs = [(s, t) for s, t in zip(src_lines, tgt_lines) if s.strip() and t.strip()]
        encoded = encode_pairs(pairs, self.src_codec, self.tgt_codec, self.max_len)
        if not encoded:
            raise UserError("no sentence pairs to score")
        return math.exp(evaluate_loss(self.model, encoded, batch_size))


def load_translator(run_dir, device: str = "cpu") -> Translator:
    """The best model of a run folder (in eval mode, on `device`) with its vocabularies."""
    device = resolve_device(device)
    tensors, meta = load_checkpoint(run_dir, name=BEST)
    if "src_vocab" not in meta or "tgt_vocab" not in meta:
        raise UserError(f"{run_dir} does not hold a translation model checkpoint (no vocabularies)")
    model = Seq2Seq(Seq2SeqConfig(**meta["model"]))
    model.load_state_dict(tensors)
    model.to(device).eval()
    return Translator(model, TextCodec.from_json(meta["src_vocab"]), TextCodec.from_json(meta["tgt_vocab"]),
                      meta["max_len"], meta.get("lowercase", False))
