"""Several training processes (recurrent/train/distributed.py) against one: two processes on gloo, each with its
share of every global batch, take the same steps as one process with the same global batch (to rounding; without
dropout, whose masks differ between one process and two), only rank 0 writes the run folder, and a two-process run
resumes from its last checkpoint."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
from toy_data import WORDS, conll, sentiment  # tests/train/toy_data.py

from recurrent.checkpoint import load_checkpoint
from recurrent.errors import UserError
from recurrent.train import distributed
from recurrent.train.distributed import StandIn, World
from recurrent.train.loop import flat_replace

STEPS = 6  # with classify's 41 examples in batches of 8: one epoch, whose last batch of 1 needs a stand-in


# --- the pieces ---------------------------------------------------------------------------------------------


def test_rows_split_a_batch_once_in_rank_order():
    for n in range(1, 12):
        for size in (1, 2, 3, 4):
            rows = [list(range(n))[World(r, size).rows(n)] for r in range(size)]
            assert [i for part in rows for i in part] == list(range(n))
            assert max(map(len, rows)) - min(map(len, rows)) <= 1


def test_a_process_without_rows_steps_on_a_stand_in():
    items = [7]
    assert World(0, 2).share(1, lambda rows: items[rows]) == StandIn([7])
    assert World(1, 2).share(1, lambda rows: items[rows]) == [7]


def test_the_lm_batch_must_split_evenly(tmp_path, monkeypatch):
    from recurrent.train.lm import LMTask, TrainLMConfig

    text = tmp_path / "text.txt"
    text.write_text("abcdefgh" * 20)
    monkeypatch.setattr(distributed, "world", lambda: World(0, 3))
    with pytest.raises(UserError, match="batch_size 4 must be divisible by the 3 processes"):
        LMTask(flat_replace(TrainLMConfig(data=str(text)), batch_size=4), None)


# --- two processes against one ------------------------------------------------------------------------------


def task_config(tmp_path, name):
    """A task's trainer and a config without dropout (so one process and two draw nothing different) that takes
    STEPS plain SGD steps, with clipping and evaluations, in a second or two."""
    from recurrent.models.classifier import ClassifierConfig
    from recurrent.models.lm import LMConfig
    from recurrent.models.seq2seq import Seq2SeqConfig
    from recurrent.models.tagger import TaggerConfig
    from recurrent.train.classify import TrainClassifyConfig, train_classify
    from recurrent.train.lm import TrainLMConfig, train_lm
    from recurrent.train.tag import TrainTagConfig, train_tag
    from recurrent.train.translate import TrainTranslateConfig, train_translate

    common = dict(optimizer="sgd", lr=0.5, clip=1.0, eval_every=2, log_every=1, progress=False, max_steps=STEPS,
                  precision="fp32")  # bf16 (auto on a CPU with native bf16) rounds differently per batch split
    if name == "lm":
        text = tmp_path / "text.txt"
        text.write_text(" ".join(random.Random(0).choice(WORDS) for _ in range(600)))
        return train_lm, flat_replace(TrainLMConfig(data=str(text), model=LMConfig(hidden_size=12, dropout=0.0)),
                                      batch_size=4, bptt=8, random_bptt=True, **common)
    if name == "classify":
        return train_classify, flat_replace(
            TrainClassifyConfig(model=ClassifierConfig(embedding_size=8, hidden_size=8, dropout=0.0)),
            train=sentiment(tmp_path / "train.tsv", 41, 0), valid=sentiment(tmp_path / "dev.tsv", 10, 1),
            batch_size=8, epochs=1, **common)
    if name == "conditional":  # one sentence per line, its label setting the initial state; batch 7: uneven shares
        train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
        for path, n in ((train, 30), (valid, 8)):
            rng = random.Random(n)
            path.write_text("".join(f"{label}\t{' '.join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))}\n"
                                    for label in (rng.choice("ab") for _ in range(n))))
        return train_lm, flat_replace(TrainLMConfig(model=LMConfig(hidden_size=12, dropout=0.0)), train=str(train),
                                      valid=str(valid), level="word", condition="label", batch_size=7, **common)
    if name == "tag":
        return train_tag, flat_replace(
            TrainTagConfig(model=TaggerConfig(embedding_size=8, hidden_size=8, dropout=0.0, char_encoder="lstm")),
            train=conll(tmp_path / "train.conll", 30, 0), valid=conll(tmp_path / "dev.conll", 8, 1), batch_size=8,
            **common)
    return train_translate, flat_replace(
        TrainTranslateConfig(model=Seq2SeqConfig(embedding_size=8, hidden_size=8, dropout=0.0)),
        synthetic="reverse", task_size=80, task_min_len=2, task_max_len=5, batch_size=7, **common)


def _worker(rank: int, size: int, port: int, jobs) -> None:
    """One process of `size`, as torchrun would start it: run each (trainer, config per rank) in turn."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    for trainer, configs in jobs:
        trainer(configs[rank])


def spawn(jobs, size: int = 2, timeout: float = 120.0) -> None:
    """Run `jobs` in `size` fresh processes; fail (and stop them) if one raises or they outlast `timeout`."""
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.start_processes(_worker, args=(size, port, jobs), nprocs=size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"{size} training processes still ran after {timeout:.0f} s")


def assert_close(run_a, run_b):
    """The last checkpoints of two runs hold the same tensors (weights, optimizer state, carried state; the RNG
    states aside), to 1e-5, and the same position in training."""
    a, meta_a = load_checkpoint(run_a, name="last")
    b, meta_b = load_checkpoint(run_b, name="last")
    assert a.keys() == b.keys()
    for key in a:
        if not key.startswith("rng."):
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5, msg=key)
    training = ("step", "epoch", "batch", "evals_since_best", "skipped")
    assert [meta_a["position"][k] for k in training] == [meta_b["position"][k] for k in training]


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", ["lm", "classify", "tag", "translate", "conditional"])
def test_two_processes_train_as_one_and_resume(tmp_path, name):
    """Two processes with the global batch split between them == one process with the whole batch, STEPS steps
    straight, and STEPS // 2 steps, stop, --resume to STEPS in two processes or in one. Rank 1 never makes its
    --out folder; the train loss that rank 0 logs is the global batch's."""
    trainer, base = task_config(tmp_path, name)
    one = trainer(flat_replace(base, out=str(tmp_path / "one")))
    two, unmade = tmp_path / "two", tmp_path / "rank1"
    split, mixed = flat_replace(base, out=str(tmp_path / "split")), flat_replace(base, out=str(tmp_path / "mixed"))
    spawn([(trainer, [flat_replace(base, out=str(two)), flat_replace(base, out=str(unmade))]),
           (trainer, [flat_replace(split, max_steps=STEPS // 2)] * 2),
           (trainer, [flat_replace(split, resume=True)] * 2),
           (trainer, [flat_replace(mixed, max_steps=STEPS // 2)] * 2)])
    trainer(flat_replace(mixed, resume=True))  # the last checkpoint holds every stream's state, whatever W was
    assert not unmade.exists()
    assert_close(one, two)
    assert_close(one, tmp_path / "split")
    assert_close(one, tmp_path / "mixed")
    for a, b in zip(records(one), records(two), strict=True):
        assert a["step"] == b["step"]
        for key in ("train_loss", "val_loss"):
            assert a[key] == (None if b[key] is None else pytest.approx(b[key], rel=1e-5)), key


class NanInRank1:
    """w x ≈ 2x on x = 1..4, each process half of each batch of 2; rank 1's loss is NaN at step 2."""

    name, metric, higher_is_better, unit = "toy", "val_loss", False, "ex"

    def __init__(self):
        self.model = torch.nn.Linear(1, 1, bias=False)
        self.steps = 0

    def meta(self) -> dict:
        return {}

    def steps_per_epoch(self) -> int:
        return 2

    def batches(self, epoch: int):
        world = distributed.world()
        for xs in ([1.0, 2.0], [3.0, 4.0]):
            yield world.share(2, lambda rows: torch.tensor(xs)[rows].unsqueeze(1))

    def step(self, model, x, carry):
        from types import SimpleNamespace

        self.steps += 1
        loss = ((model(x) - 2 * x) ** 2).mean()
        if self.steps == 2 and distributed.world().rank == 1:
            loss = loss * float("nan")
        return SimpleNamespace(loss=loss), None

    def count(self, x) -> int:
        return len(x)

    def weight(self, x) -> int:
        return len(x)

    def evaluate(self, model) -> dict:
        return {"val_loss": 1.0}


def train_nan(config):
    from recurrent.train.loop import train

    return train(lambda resumed: NanInRank1(), config, {})


def test_a_loss_not_finite_in_one_process_skips_the_step_in_all(tmp_path):
    from recurrent.train.loop import TrainConfig

    config = TrainConfig(out=str(tmp_path / "run"), optimizer="sgd", lr=0.01, epochs=2, log_every=1, progress=False)
    spawn([(train_nan, [config] * 2)])
    _, meta = load_checkpoint(tmp_path / "run", name="last")
    assert meta["position"]["step"] == 4 and meta["position"]["skipped"] == 1
    losses = [(r["step"], math.isnan(r["train_loss"])) for r in records(tmp_path / "run") if r["train_loss"]]
    assert losses == [(1, False), (2, True), (3, False), (4, False)]  # the global loss, NaN where rank 1's was


class SigtermInRank1(NanInRank1):
    """Rank 1 alone receives SIGTERM after its 3rd step (as a scheduler preempting one machine would)."""

    def step(self, model, x, carry):
        self.steps += 1
        from types import SimpleNamespace

        return SimpleNamespace(loss=((model(x) - 2 * x) ** 2).mean()), None

    def after_step(self, model, batch, step: int) -> None:
        if step == 3 and distributed.world().rank == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def train_sigterm(config):
    """Train; each process writes where it stopped (an Interrupted is what a process must end with here)."""
    from recurrent.errors import Interrupted
    from recurrent.train.loop import train

    try:
        train(lambda resumed: SigtermInRank1(), config, {})
        outcome = "finished"
    except Interrupted as e:
        outcome = f"interrupted by signal {e.signum}"
    path = f"{config.out}.rank{distributed.world().rank}"
    with open(path, "w") as f:
        f.write(outcome)


def test_a_signal_to_one_process_stops_all_after_the_same_step_and_saves(tmp_path):
    from recurrent.train.loop import TrainConfig

    config = TrainConfig(out=str(tmp_path / "run"), optimizer="sgd", lr=0.01, epochs=50, log_every=1, progress=False,
                         checkpoint_every=0)
    spawn([(train_sigterm, [config] * 2)])
    for rank in (0, 1):
        assert (tmp_path / f"run.rank{rank}").read_text() == f"interrupted by signal {int(signal.SIGTERM)}"
    _, meta = load_checkpoint(tmp_path / "run", name="last")
    assert meta["position"]["step"] == 4  # rank 1's flag went into step 4's all-reduce: both stopped after it


def test_torchrun_starts_the_command_line(tmp_path):
    """`torchrun --nproc-per-node 2 -m recurrent train lm`: both processes train, rank 0 alone reports and writes
    a run folder that says 2 processes."""
    text = tmp_path / "text.txt"
    text.write_text(" ".join(random.Random(0).choice(WORDS) for _ in range(600)))
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "recurrent",
         "train", "lm", "--data", str(text), "--hidden-size", "8", "--batch-size", "4", "--bptt", "8",
         "--max-steps", "2", "--out", str(run), "--threads", "1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1
    assert json.loads((run / "config.json").read_text())["processes"] == 2
    assert (run / "last.safetensors").exists() and (run / "model.safetensors").exists()
