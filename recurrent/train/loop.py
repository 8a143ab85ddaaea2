"""One training loop for every task, as Keras `fit` or Lightning's `Trainer.fit`: `train(task, config) -> run folder`.

The task supplies what differs (see `Task`): the model and what its checkpoint needs (config, vocabularies), the
batches of each epoch, one step `step(model, batch, carry) -> (output with .loss, carry)` (the language model
carries its hidden state from window to window, the other tasks carry None), and its evaluation. The loop owns
everything else, once for all tasks:

    seeding, the device and the precision (decided once), the optimizer and learning-rate schedule,
    clipping with its statistics, budgets (epochs, --max-steps, --max-time), evaluation every `eval_every`
    steps or once per epoch, early stopping on patience, steps whose loss is not finite skipped,
    the best checkpoint (model.*), the last one (last.*: everything --resume needs) every `checkpoint_every` steps,
    after every evaluation and on SIGINT/SIGTERM (the step finishes, last.* is saved, `Interrupted` is raised),
    the run folder's rules (recurrent/train/run_folder.py: one writer, --resume or --overwrite, no symlinks),
    metrics.jsonl and loss.png (and TensorBoard with `tensorboard`), an optional `after_step` hook,
    progress: a tqdm bar on a terminal, a line every `log_every` steps when stderr is a file,
    several processes started by torchrun (recurrent/train/distributed.py): DDP, the loss weights of each share,
    rank 0 alone writing the run folder.

A run folder holds:
    config.json                the task's config, with "task", "processes" (1, or torchrun's world size) and
                               "precision_used": what ran and why
    model.safetensors/.json    the best model so far, with the task's meta (model config, vocabularies) and metrics
    last.safetensors/.json     model, optimizer, RNG states, schedule, clipping statistics, the position in the
                               epoch and the carry: a resumed run continues bit-identically on the CPU
    metrics.jsonl, loss.png    one JSON object per log line, and the loss curves
Checkpoints hold CPU tensors whatever device trained the model.
"""
from __future__ import annotations

import dataclasses
import json
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import recurrent.state as rc_state
from recurrent.checkpoint import (flatten_optimizer_state, load_checkpoint, rng_state, save_checkpoint,
                                  set_rng_state, unflatten_optimizer_state, write_text_atomic)
from recurrent.errors import Interrupted, UserError
from recurrent.precision import HELP as PRECISION_HELP, PRECISIONS, choose as choose_precision
from recurrent.runs import read_task
from recurrent.schema import META_SCHEMAS, check_last_meta
from recurrent.state import detach
from recurrent.train import distributed
from recurrent.train.common import (OPTIMIZERS, SCHEDULES, Budget, ClipStats, Schedule, append_metrics,
                                    make_optimizer, plot_losses, resolve_device, set_lr, to_device)
from recurrent.train.distributed import StandIn, World
from recurrent.train.run_folder import RunFolder
from recurrent.validation import at_least, between, check, positive

BEST, LAST = "model", "last"  # checkpoint names in the run folder
MAX_BAD_STEPS = 10  # consecutive steps with a non-finite loss before the run stops with an error


@dataclass
class TrainConfig:
    """What every task's training shares. Each task config nests one (`config.train`), with its own defaults.
    Ranges sit in each field's metadata (recurrent/validation.py checks them)."""

    out: str = "runs/run"  # the run folder
    optimizer: str = field(default="adamw", metadata={"help": f"one of {OPTIMIZERS}", "choices": OPTIMIZERS})
    lr: float = field(default=1e-3, metadata=positive())
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    schedule: str = field(default="constant", metadata={"help": f"learning-rate schedule: one of {SCHEDULES}",
                                                        "choices": SCHEDULES})
    warmup_steps: int = field(default=0, metadata=at_least(0))  # linear warm-up from lr/warmup_steps
    decay_start_epoch: int = field(default=4, metadata=at_least(0))  # zaremba: halve lr every epoch after this one
    clip: float = field(default=1.0, metadata=at_least(0))  # max global gradient norm (0: no clipping)
    epochs: int = field(default=10, metadata=at_least(1))
    eval_every: int = field(default=0, metadata=at_least(0))  # steps between evaluations (0: at the end of each
    #                                                             epoch); always one at the end
    patience: int = field(default=0, metadata=at_least(0))  # stop after this many evaluations without a better
    #                                                          metric (0: never)
    log_every: int = field(default=50, metadata=at_least(1))  # steps between metrics lines
    precision: str = field(default="auto", metadata={"help": PRECISION_HELP, "choices": PRECISIONS})
    device: str = "cpu"  # cpu | cuda | cuda:N: where the model trains; checkpoints are saved on the CPU either way
    seed: int = field(default=0, metadata=between(0, 2**32 - 1025))  # numpy's seeds are 32-bit; ranks add to it
    max_steps: int = field(default=0, metadata=at_least(0))  # stop after this many steps in all (0: no limit)
    max_time: float = field(default=0.0, metadata=at_least(0))  # stop after this many seconds (0: no limit);
    #                                                             evaluates and saves first
    resume: bool = False  # continue from the run folder's last checkpoint
    overwrite: bool = False  # replace the run a folder holds (without it, or --resume, that is an error)
    checkpoint_every: int = field(default=500, metadata=at_least(0))  # steps between saves of last.* (0: only
    #                                               at evaluations, the end, and on SIGINT/SIGTERM, as always)
    tensorboard: bool = False  # also log every metrics line to <out>/tensorboard (pip install 'recurrent[tensorboard]')
    progress: bool = True  # progress on stderr: a bar on a terminal, a line per log_every steps otherwise

    def validate(self) -> None:
        """UserError naming the first bad value: a type or range (recurrent.validation), or the device."""
        check(self)
        resolve_device(self.device)


def flat_replace(config, **changes):
    """dataclasses.replace with flat names, as the command line and TOML files give them: each name goes to the task
    config's own field, else to its nested `training` or `model` config (field names are unique across them, and a
    task field wins over a model field of the same name, such as the LM's vocab_size).

        flat_replace(TrainLMConfig(), data="input.txt", max_steps=20, hidden_size=64)
    """
    own = {f.name for f in dataclasses.fields(config)}  # `training` and `model` may come whole, too
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if k in own})
    parts, left = {}, set(changes) - own
    for part in ("training", "model"):
        sub = getattr(config, part, None)
        if sub is None or not dataclasses.is_dataclass(sub):
            continue
        given = {k: v for k, v in changes.items() if k in left and k in {f.name for f in dataclasses.fields(sub)}}
        if given:
            parts[part] = dataclasses.replace(sub, **given)
            left -= set(given)
    if left:
        raise TypeError(f"{type(config).__name__} has no field {', '.join(sorted(left))}")
    return dataclasses.replace(config, **parts)


class Task(Protocol):
    """What a task gives the loop. `model` is built (or rebuilt from `resumed` meta) before `train` is called."""

    name: str  # config.json's "task": what `evaluate`, `predict` and `generate` dispatch on
    metric: str  # the key of evaluate()'s result that chooses the best checkpoint
    higher_is_better: bool  # for metric
    unit: str  # what count(batch) counts, for throughput: "tok" or "ex"
    model: nn.Module

    def meta(self) -> dict:
        """What the best checkpoint holds beside the tensors: the model config, vocabularies, ..."""

    def steps_per_epoch(self) -> int: ...

    def batches(self, epoch: int) -> Iterator[Any]:
        """The batches of `epoch` (1-based), the same on every call: a resumed run skips those already trained on.
        With several processes, this process's share of each global batch (`distributed.world().share`), the
        same number of batches on every process."""

    def step(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Any, Any]:
        """One forward pass on a batch already on the model's device -> (output with .loss, the next carry). The
        carry is None, or a tuple of states (the LM's, per layer) that the loop detaches before each step."""

    def count(self, batch: Any) -> int:
        """Tokens or examples in a batch, for throughput."""

    def weight(self, batch: Any) -> int:
        """What step()'s loss on this batch is a mean over (tokens, examples, labelled nodes): with several
        processes each one's loss is weighed by it (recurrent/train/distributed.py). One process never calls it."""

    def evaluate(self, model: nn.Module) -> dict:
        """Metrics on the validation data, `metric` and "val_loss" among them (called in eval mode, without grad,
        under the run's precision)."""

    # Optional: after_step(model, batch, step) runs after each optimizer step (not after a skipped one), with the
    # batch it stepped on and the steps taken so far: a hook for monitors such as recurrent.diagnostics.GradientMonitor.


@dataclass
class Position:
    """Where training stands: all a resumed run needs besides the tensors."""

    step: int = 0  # optimizer steps taken
    epoch: int = 1  # 1-based
    batch: int = 0  # batches of this epoch already trained on
    best: float | None = None  # the best value of task.metric so far
    best_step: int | None = None
    evals_since_best: int = 0
    skipped: int = 0  # steps whose loss was not finite, skipped in all
    evaluated_step: int | None = None  # the last step evaluated and logged (a run resumed after its final
    # evaluation, killed before it returned, does not evaluate and log that step again)


def train(make_task: Callable[[dict | None], Task], config: TrainConfig, run_config: dict) -> Path:
    """Build the task with `make_task(resumed)` (resumed: the last checkpoint's meta with --resume, else None:
    seeded first, so the model's initial weights follow `seed`), then train it as `config` says; return the run
    folder. `run_config` (the task's whole config) goes into config.json. Stops at `epochs`, the step/time budget, or
    on patience, and in each case evaluates, keeps the best checkpoint and the last one, and returns normally.
    On SIGINT or SIGTERM it stops after the step, saves last.* and raises `Interrupted`: `--resume` continues.
    Started by torchrun, each process trains on its share of every batch (recurrent/train/distributed.py)."""
    config.validate()
    world, device = distributed.start(config.device)  # one process, or this one's rank and device under torchrun
    folder = _open_folder(config, world)  # rank 0: made, checked and locked (RunFolder); the others: None
    try:
        with Signals() as signals:
            return _train(make_task, config, run_config, world, device, signals)
    finally:
        if folder is not None:
            folder.close()


def _open_folder(config: TrainConfig, world: World) -> RunFolder | None:
    """Rank 0 opens the run folder for writing; every process learns whether that failed, and raises alike."""
    folder, refusal = None, None
    if world.main:
        try:
            folder = RunFolder.open(config.out, resume=config.resume, overwrite=config.overwrite)
        except UserError as e:
            if world.size == 1:
                raise
            refusal = str(e)
    refusal = world.from_main(refusal)
    if refusal is not None:
        raise UserError(refusal)
    return folder


def _train(make_task, config: TrainConfig, run_config: dict, world: World, device: torch.device,
           signals: Signals) -> Path:
    run_dir = Path(config.out)
    seed_everything(config.seed)  # the same on every process: the same initial weights, the same data
    last = load_last(run_dir) if config.resume else None
    task = make_task(last[1] if last else None)
    if world.size > 1 and not hasattr(task, "weight"):
        raise UserError(f"task {task.name!r} cannot train in several processes: it does not say what its loss is a "
                        f"mean over (Task.weight), so the processes' losses cannot be weighed")
    precision = choose_precision(config.precision, device)  # decided once: fp32 or bf16 autocast
    model = task.model.to(device)  # before the optimizer, whose state follows the parameters
    optimizer = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    per_epoch = task.steps_per_epoch()
    schedule = Schedule(config.schedule, config.lr, config.warmup_steps,
                        total_steps=config.max_steps or config.epochs * per_epoch, total_time=config.max_time,
                        decay_start_epoch=config.decay_start_epoch)
    clip, pos, carry = ClipStats(config.clip), Position(), None
    metrics_path = run_dir / "metrics.jsonl"
    if last:
        pos, carry = _restore(last, model, optimizer, schedule, clip, device)
        if pos.batch > per_epoch:
            raise UserError(f"cannot resume: last.json's position is batch {pos.batch} of an epoch of {per_epoch}")
        carry = world.take_carry(carry)  # this process's streams
        _keep_recorded_best(pos, run_dir, task)  # a crash after a best save and before the next last.* save
    if world.main:  # only rank 0 writes the run folder
        if last:  # what a killed run logged after its last save is logged again
            _truncate(metrics_path, last[1].get("metrics_bytes"))
        else:
            metrics_path.write_text("")
        # whole or not at all: the other processes of a resumed run read it meanwhile (load_last)
        write_text_atomic(run_dir / "config.json", json.dumps({"task": task.name, **run_config, "processes": world.size,
                                                               "precision_used": precision.to_dict()}, indent=2) + "\n")
    else:  # its own dropout masks (rank 0 keeps the stream of one process, or the resumed one)
        seed_everything(config.seed + world.rank)
    stepped = world.wrap(model, device)  # what task.step runs: DDP with several processes; `model` is the module

    def evaluate(scheduled: bool = True) -> dict:
        """Score the model and keep it if it is the best so far. Only scheduled evaluations (every eval_every
        steps, or each epoch) drive patience and the plateau schedule: the one a budget forces at the end does not,
        so that stopping and resuming trains exactly as running straight through. Rank 0 scores; every process
        takes its result, so that all decide alike."""
        result = None
        if world.main:
            was_training = model.training
            model.eval()
            with torch.no_grad(), precision.autocast(device.type):
                result = _plain(task.evaluate(model))
            model.train(was_training)
        result = world.from_main(result)
        value = result[task.metric]
        if scheduled:
            schedule.on_eval(result["val_loss"])
        better = pos.best is None or (value > pos.best if task.higher_is_better else value < pos.best)
        again = pos.best_step == pos.step and value == pos.best  # a resumed run scoring the saved best's step anew
        if better or again:
            pos.best, pos.best_step = value, pos.step
            pos.evals_since_best = 0 if scheduled else pos.evals_since_best
            metrics = {"step": pos.step, "epoch": pos.epoch, **result}
            if world.main:
                save_checkpoint(run_dir, dict(model.state_dict()), {**task.meta(), "trainer": run_config,
                                                                    "metrics": metrics}, name=BEST)
        elif scheduled:
            pos.evals_since_best += 1
        return result

    def save_last() -> None:
        """last.*: everything --resume needs, as of now. Every process takes part (the carry is gathered)."""
        gathered = world.gather_carry(carry)  # every stream's state
        if world.main:
            _save_last(run_dir, model, optimizer, schedule, clip, pos, gathered,
                       {**task.meta(), "trainer": run_config, "metrics_bytes": metrics_path.stat().st_size})

    after_step = getattr(task, "after_step", None)  # optional: see Task
    budget = Budget(config.max_steps, config.max_time)
    elapsed = 0.0  # seconds since the start, as of the last step (with several processes: rank 0's clock)
    progress = Progress(config, config.max_steps or config.epochs * per_epoch, pos.step, task.name, world.main)
    log = Log(metrics_path if world.main else None, task.unit, run_dir if config.tensorboard and world.main else None)
    stop, bad_in_a_row = None, 0
    while pos.epoch <= config.epochs and stop is None and not budget.exhausted(pos.step, elapsed):
        batches = task.batches(pos.epoch)
        for _ in range(pos.batch):  # a resumed run: skip what this epoch already trained on
            next(batches)
        for batch in batches:
            batch, weight, count = _weigh_batch(task, batch, world)
            lr = schedule.lr(pos.step, pos.epoch, elapsed)
            set_lr(optimizer, lr)
            stepped.train()
            if carry is not None:
                carry = tuple(detach(s) for s in carry)  # cut the graph: BPTT spans one batch
            batch = to_device(batch, device)
            with precision.autocast(device.type):
                out, carry = task.step(stepped, batch, carry)
            loss, totals = world.weigh(out.loss.float(), weight, count, budget.elapsed(), signals.signum or 0)
            elapsed = totals.elapsed
            optimizer.zero_grad(set_to_none=True)
            if totals.finite:
                loss.backward()  # with DDP: the gradients are averaged over the processes here
                clip.clip(model.parameters())
                optimizer.step()
                bad_in_a_row = 0
                if after_step is not None:
                    after_step(model, batch, pos.step + 1)
            else:  # a NaN or inf loss would poison the weights: skip the update, and stop if it persists
                pos.skipped, bad_in_a_row = pos.skipped + 1, bad_in_a_row + 1
                if bad_in_a_row >= MAX_BAD_STEPS:
                    raise UserError(f"the loss was not finite for {MAX_BAD_STEPS} steps in a row (step "
                                    f"{pos.step + 1}): lower --lr or set --clip")
            pos.step, pos.batch = pos.step + 1, pos.batch + 1
            log.add(totals.loss, totals.count)
            progress.update(pos, totals.loss, log)
            if totals.stop:  # SIGINT or SIGTERM (on any process): save and stop, without evaluating
                stop, signum = "signal", totals.stop
                break

            result = None
            if config.eval_every and pos.step % config.eval_every == 0:
                result, pos.evaluated_step = evaluate(), pos.step
            if result is not None or pos.step % config.log_every == 0:
                log.write(pos, lr, result, clip)
            if config.patience and pos.evals_since_best >= config.patience:
                stop = "patience"
                break
            if budget.exhausted(pos.step, elapsed):
                stop = "budget"
                break
            if result is not None or (config.checkpoint_every and pos.step % config.checkpoint_every == 0):
                save_last()
        else:  # the epoch is done: evaluate if that is the interval, then read the data from the start
            if not config.eval_every and pos.evaluated_step != pos.step:
                pos.evaluated_step = pos.step
                log.write(pos, optimizer.param_groups[0]["lr"], evaluate(), clip)
                if config.patience and pos.evals_since_best >= config.patience:
                    stop = "patience"
            if stop is None:
                pos.epoch, pos.batch, carry = pos.epoch + 1, 0, None
                if pos.epoch <= config.epochs:
                    save_last()  # at the start of the next epoch: a resumed run does not evaluate this one again
    progress.close()

    if stop != "signal" and (pos.evaluated_step != pos.step or pos.best is None):
        pos.evaluated_step = pos.step
        log.write(pos, optimizer.param_groups[0]["lr"], evaluate(scheduled=False), clip,
                  epoch=min(pos.epoch, config.epochs))
    log.close()
    save_last()
    if world.main:
        plot_losses(metrics_path, run_dir / "loss.png", f"{run_dir.name}: {task.name}")
    world.barrier()  # every process returns once the run folder is complete
    if stop == "signal":
        raise Interrupted(signum,
                          f"stopped at step {pos.step}; saved in {run_dir}: continue with --resume")
    return run_dir


def _weigh_batch(task: Task, batch, world: World) -> tuple[Any, int, int]:
    """(the batch to step on, what its loss is a mean over, its tokens or examples). A StandIn weighs 0 and counts
    nothing. One process needs no weight (and a task need not define `weight`)."""
    if isinstance(batch, StandIn):
        return batch.batch, 0, 0
    return batch, task.weight(batch) if world.size > 1 else 1, task.count(batch)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _plain(d: dict) -> dict:
    """JSON-safe copy (numpy and torch scalars -> float)."""
    return json.loads(json.dumps(d, default=float))


# --- metrics and progress -----------------------------------------------------------------------------------


class Log:
    """Training loss and throughput since the last metrics line, and the writing of that line."""

    def __init__(self, path: Path | None, unit: str, tensorboard_dir: Path | None = None):
        self.path, self.unit = path, unit  # path None: keep the numbers, write nothing (not rank 0)
        self.tensorboard = None
        if tensorboard_dir is not None:  # --tensorboard: every line to TensorBoard too
            from recurrent.train.tensorboard import TensorBoard

            self.tensorboard = TensorBoard(tensorboard_dir)
        self.reset()

    def reset(self) -> None:
        self.loss, self.count, self.steps, self.start = 0.0, 0, 0, time.monotonic()

    def add(self, loss: float, count: int) -> None:
        self.loss, self.count, self.steps = self.loss + loss, self.count + count, self.steps + 1

    @property
    def rate(self) -> float:
        return self.count / max(time.monotonic() - self.start, 1e-9)

    def write(self, pos: Position, lr: float, result: dict | None, clip: ClipStats, epoch: int | None = None) -> None:
        record = {"step": pos.step, "epoch": pos.epoch if epoch is None else epoch, "lr": lr,
                  "train_loss": self.loss / self.steps if self.steps else None, "val_loss": None,
                  f"{self.unit}_s": self.rate if self.steps else None,
                  "clip_fraction": clip.fraction(last=self.steps or None)}
        if result is not None:
            record.update({k: v for k, v in result.items() if k != "confusion"})
        if self.path is not None:
            append_metrics(self.path, record)
        if self.tensorboard is not None:
            self.tensorboard.log(record)
        self.reset()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """A tqdm bar when stderr is a terminal; otherwise (a log file) one summary line every `log_every` steps,
    instead of a bar redrawn into the file at every step."""

    def __init__(self, config: TrainConfig, total: int, initial: int, name: str, shown: bool = True):
        self.enabled, self.every, self.total, self.name = config.progress and shown, config.log_every, total, name
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=f"train {name}", unit="step", dynamic_ncols=True)

    def update(self, pos: Position, loss: float, log: Log) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", best=f"{pos.best:.4f}" if pos.best is not None else "-")
        elif self.enabled and pos.step % self.every == 0:
            best = f"{pos.best:.4f}" if pos.best is not None else "-"
            print(f"train {self.name}: step {pos.step}/{self.total} epoch {pos.epoch} loss {loss:.4f} "
                  f"best {best} {log.rate:,.0f} {log.unit}/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- stopping on a signal ----------------------------------------------------------------------------------


class Signals:
    """While training: SIGINT (Ctrl-C) and SIGTERM (kill, a scheduler's preemption) ask the loop to stop after the
    step it is in, save last.* and raise `Interrupted`, instead of dying with nothing saved. A second signal acts
    as it would have without us (Ctrl-C raises KeyboardInterrupt at once), and the saves already made stay
    consistent: every checkpoint write is atomic. Handlers can only be set from the main thread; elsewhere (a
    library user training in a thread) signals keep their usual meaning."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        for sig, previous in self._previous.items():  # the next signal: as before
            signal.signal(sig, previous)
        print(f"recurrent: {signal.Signals(signum).name}: stopping after this step and saving (again to stop now)",
              file=sys.stderr, flush=True)

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


# --- the last checkpoint: resume ----------------------------------------------------------------------------


def _save_last(run_dir: Path, model, optimizer, schedule: Schedule, clip: ClipStats, pos: Position, carry,
               meta: dict) -> None:
    tensors = dict(model.state_dict())
    optim_tensors, meta["optimizer"] = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, meta["rng"] = rng_state()
    carry_tensors, meta["carry"] = {}, None
    if carry is not None:  # the state carried into the next batch (the LM's), one named state per layer
        meta["carry"] = [type(s).__name__ for s in carry]
        carry_tensors = {f"carry.{l}.{i}": f for l, s in enumerate(carry) for i, f in enumerate(s)}
    meta.update(position=asdict(pos), schedule=schedule.state_dict(), clip=clip.state_dict())
    save_checkpoint(run_dir, {**tensors, **optim_tensors, **rng_tensors, **carry_tensors}, meta, name=LAST)


def load_last(run_dir) -> tuple[dict, dict]:
    """(tensors, meta) of a run folder's last checkpoint, checked before anything is built from it (the schema of
    recurrent/schema.py, the checksum, finite tensors); UserError where there is none or it does not check out."""
    if not (Path(run_dir) / f"{LAST}.safetensors").exists():
        raise UserError(f"cannot resume: {run_dir} has no {LAST}.safetensors (train without --resume first, with "
                        f"--overwrite if it holds a run that never saved)")
    tensors, meta = load_checkpoint(run_dir, name=LAST, finite=True)
    task = read_task(run_dir)
    check_last_meta(meta, Path(run_dir) / f"{LAST}.json", tensors, task=task if task in META_SCHEMAS else None)
    return tensors, meta


def _keep_recorded_best(pos: Position, run_dir: Path, task: Task) -> None:
    """The best checkpoint (model.*) can be newer than last.*: a run killed after saving a best and before its next
    last.* save. Take its metric, so that a resumed run never replaces a better saved model with a worse one."""
    path = run_dir / f"{BEST}.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8")).get("metrics") or {}
        value, step = float(metrics[task.metric]), int(metrics["step"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # none yet, or not ours: nothing to keep
        return
    if pos.best is None or (value > pos.best if task.higher_is_better else value < pos.best):
        pos.best, pos.best_step = value, step


def _truncate(path: Path, size) -> None:
    """Cut a file back to `size` bytes where it is longer (metrics logged after the save a run resumes from)."""
    if isinstance(size, int) and path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


def _restore(last: tuple[dict, dict], model, optimizer, schedule: Schedule, clip: ClipStats, device: torch.device):
    """Load the last checkpoint (CPU tensors) into a model and optimizer already on `device`."""
    tensors, meta = last
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in tensors or tensors[key].shape != value.shape:
            found = tuple(tensors[key].shape) if key in tensors else "nothing"
            raise UserError(f"cannot resume: last.safetensors holds {found} for {key}, the model needs "
                            f"{tuple(value.shape)}")
    model.load_state_dict({k: v for k, v in tensors.items() if k in expected})  # onto the parameters' device
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))  # torch moves it to the params
    set_rng_state(tensors, meta["rng"])
    schedule.load_state_dict(meta["schedule"])
    clip.load_state_dict(meta["clip"])
    carry = None
    if meta.get("carry") is not None:
        types = [getattr(rc_state, name) for name in meta["carry"]]  # LSTMState or RNNState
        carry = tuple(kind(*(tensors[f"carry.{l}.{i}"].to(device) for i in range(len(kind._fields))))
                      for l, kind in enumerate(types))
    return Position(**meta["position"]), carry
