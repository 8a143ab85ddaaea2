"""The one training loop (recurrent/train/loop.py) against hand-built expectations, on a toy task whose every
number is known: budgets and epochs, evaluation intervals, the best and last checkpoints, early stopping, skipped
non-finite steps, progress lines in a log file, and bit-identical resume for every real task."""
from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from toy_data import WORDS, conll, sentiment  # tests/train/toy_data.py

from recurrent.checkpoint import load_checkpoint
from recurrent.errors import UserError
from recurrent.train.loop import TrainConfig, flat_replace, train


class Toy:
    """w x ≈ y on 4 batches an epoch (x = 1, 2, 3, 4; y = 2x): plain SGD steps that can be written out by hand.
    evaluate() returns the next of `scores` (the metric, lower is better), so best/patience are scripted."""

    name, metric, higher_is_better, unit = "toy", "val_loss", False, "ex"

    def __init__(self, scores=None, nan_at=()):
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.fill_(0.0)
        self.scores, self.nan_at, self.evaluations, self.steps = list(scores or []), set(nan_at), [], 0

    def meta(self) -> dict:
        return {"model": {"toy": True}}

    def steps_per_epoch(self) -> int:
        return 4

    def batches(self, epoch: int):
        return iter([torch.tensor([[float(x)]]) for x in (1, 2, 3, 4)])

    def step(self, model, x, carry):
        self.steps += 1
        loss = ((model(x) - 2 * x) ** 2).mean()
        if self.steps in self.nan_at:
            loss = loss * float("nan")
        return SimpleNamespace(loss=loss), None

    def count(self, batch) -> int:
        return 1

    def evaluate(self, model) -> dict:
        self.evaluations.append(float(model.weight.detach()))
        score = self.scores.pop(0) if self.scores else 1.0
        return {"val_loss": score}


def config(tmp_path, **changes) -> TrainConfig:
    return TrainConfig(**{**dict(out=str(tmp_path / "run"), optimizer="sgd", lr=0.01, clip=0.0, epochs=1,
                                 precision="fp32", log_every=1, progress=False, overwrite=True), **changes})


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sgd_steps_match_the_hand_computation(tmp_path):
    """dL/dw of (w x - 2x)^2 is 2 x^2 (w - 2): four SGD steps from w = 0, written out."""
    task = Toy()
    run = train(lambda resumed: task, config(tmp_path), {})
    w = 0.0
    for x in (1, 2, 3, 4):
        w -= 0.01 * 2 * x * x * (w - 2)
    assert float(task.model.weight.detach()) == pytest.approx(w, rel=1e-6)
    tensors, meta = load_checkpoint(run, name="last")
    assert float(tensors["weight"]) == pytest.approx(w, rel=1e-6) and meta["position"]["step"] == 4


def test_epochs_steps_and_evaluation_intervals(tmp_path):
    """eval_every 0: once at the end of each epoch; eval_every 3: at steps 3, 6 and at the end (8)."""
    task = Toy()
    run = train(lambda resumed: task, config(tmp_path, epochs=2), {})
    assert [r["step"] for r in records(run) if r["val_loss"] is not None] == [4, 8]
    task = Toy()
    run = train(lambda resumed: task, config(tmp_path, epochs=2, eval_every=3), {})
    assert [r["step"] for r in records(run) if r["val_loss"] is not None] == [3, 6, 8]
    assert len(task.evaluations) == 3
    task = Toy()
    run = train(lambda resumed: task, config(tmp_path, epochs=5, max_steps=6), {})
    assert task.steps == 6 and records(run)[-1]["step"] == 6 and records(run)[-1]["epoch"] == 2


def test_the_best_checkpoint_is_the_best_evaluation_and_patience_stops(tmp_path):
    """Scores 5, 3, 4, 4: the best is the second evaluation (step 2); patience 2 stops after the fourth."""
    task = Toy(scores=[5.0, 3.0, 4.0, 4.0, 1.0])
    run = train(lambda resumed: task, config(tmp_path, epochs=3, eval_every=1, patience=2), {})
    assert task.steps == 4  # stopped by patience, not by the 12 steps of 3 epochs
    tensors, meta = load_checkpoint(run, name="model")
    assert meta["metrics"]["step"] == 2 and meta["metrics"]["val_loss"] == 3.0
    assert float(tensors["weight"]) == pytest.approx(task.evaluations[1])  # the weights it was scored with
    assert load_checkpoint(run, name="last")[1]["position"]["evals_since_best"] == 2


def test_a_step_whose_loss_is_not_finite_is_skipped(tmp_path):
    """Step 2's loss is NaN: its update is skipped (the weights after it equal those before), and counted."""
    task = Toy(nan_at={2})
    run = train(lambda resumed: task, config(tmp_path), {})
    w = 0.0
    for x in (1, 3, 4):  # batch 2 (x = 2) is skipped
        w -= 0.01 * 2 * x * x * (w - 2)
    assert float(task.model.weight.detach()) == pytest.approx(w, rel=1e-6)
    assert load_checkpoint(run, name="last")[1]["position"]["skipped"] == 1
    with pytest.raises(UserError, match="the loss was not finite for 10 steps in a row"):
        train(lambda resumed: Toy(nan_at=range(1, 20)), config(tmp_path, epochs=5), {})


def test_progress_in_a_log_file_is_a_line_per_log_every_steps(tmp_path, capsys):
    """stderr not a terminal (pytest captures it): no bar redrawn per step, a summary line every log_every steps."""
    train(lambda resumed: Toy(), config(tmp_path, epochs=2, log_every=4, progress=True), {})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("train toy: step 4/8 epoch 1 loss ")


def test_bad_values_name_themselves(tmp_path):
    for changes, message in [({"max_time": math.nan}, "max_time must be a finite number >= 0"),
                             ({"lr": 0.0}, "lr must be > 0"), ({"optimizer": "adam"}, "optimizer must be one of")]:
        with pytest.raises(UserError, match=message):
            train(lambda resumed: Toy(), config(tmp_path, **changes), {})


def test_flat_replace_routes_each_name_to_its_config():
    from recurrent.train.lm import TrainLMConfig

    c = flat_replace(TrainLMConfig(), bptt=7, lr=0.5, hidden_size=9, vocab_size=100)
    assert c.bptt == 7 and c.training.lr == 0.5 and c.model.hidden_size == 9
    assert c.vocab_size == 100 and c.model.vocab_size == 0  # the task's field wins over the model's
    with pytest.raises(TypeError, match="has no field colour"):
        flat_replace(c, colour="red")


# --- bit-identical resume, for every task --------------------------------------------------------------------

def task_configs(tmp_path):
    """Each task's trainer and a config with dropout (so the RNG states matter) that runs in a second or two."""
    from recurrent.models.classifier import ClassifierConfig
    from recurrent.models.lm import LMConfig
    from recurrent.models.seq2seq import Seq2SeqConfig
    from recurrent.models.tagger import TaggerConfig
    from recurrent.train.classify import TrainClassifyConfig, train_classify
    from recurrent.train.lm import TrainLMConfig, train_lm
    from recurrent.train.tag import TrainTagConfig, train_tag
    from recurrent.tasks.memory import TrainMemoryConfig, train_memory
    from recurrent.train.translate import TrainTranslateConfig, train_translate

    text = tmp_path / "text.txt"
    text.write_text(" ".join(random.Random(0).choice(WORDS) for _ in range(600)))
    common = dict(eval_every=2, log_every=1, progress=False)
    return {
        "lm": (train_lm, flat_replace(TrainLMConfig(data=str(text), model=LMConfig(hidden_size=12, dropout=0.3)),
                                      batch_size=4, bptt=8, random_bptt=True, **common)),
        "classify": (train_classify, flat_replace(
            TrainClassifyConfig(model=ClassifierConfig(embedding_size=8, hidden_size=8, dropout=0.3)),
            train=sentiment(tmp_path / "train.tsv", 40, 0), valid=sentiment(tmp_path / "dev.tsv", 10, 1),
            batch_size=8, unk_replace=0.5, **common)),
        "tag": (train_tag, flat_replace(
            TrainTagConfig(model=TaggerConfig(embedding_size=8, hidden_size=8, dropout=0.3, char_encoder="lstm")),
            train=conll(tmp_path / "train.conll", 30, 0), valid=conll(tmp_path / "dev.conll", 8, 1), batch_size=8,
            **common)),
        "translate": (train_translate, flat_replace(
            TrainTranslateConfig(model=Seq2SeqConfig(embedding_size=8, hidden_size=8, dropout=0.3)),
            synthetic="reverse", task_size=80, task_min_len=2, task_max_len=5, batch_size=8, **common)),
        "memory": (train_memory, flat_replace(  # 5 batches an epoch: the resume crosses an epoch boundary
            TrainMemoryConfig(), problem="adding", seq_len=10, cell="lstm", hidden_size=8, batch_size=4, epoch_size=5,
            eval_size=16, max_time=0.0, **common)),
    }


@pytest.mark.parametrize("name", ["lm", "classify", "tag", "translate", "memory"])
def test_resume_is_bit_identical_for_every_task(tmp_path, name):
    """6 steps straight == 3 steps, stop, then --resume to 6: every tensor of the last checkpoint (weights,
    optimizer state, RNG states, carried state) and the position in training are equal. (Which evaluation was
    best may differ: the stopped run also scored its model at step 3.)"""
    trainer, base = task_configs(tmp_path)[name]
    straight = trainer(flat_replace(base, out=str(tmp_path / "straight"), max_steps=6))
    trainer(flat_replace(base, out=str(tmp_path / "split"), max_steps=3))
    split = trainer(flat_replace(base, out=str(tmp_path / "split"), max_steps=6, resume=True))
    a, meta_a = load_checkpoint(straight, name="last")
    b, meta_b = load_checkpoint(split, name="last")
    training = ("step", "epoch", "batch", "evals_since_best", "skipped")
    assert [meta_a["position"][k] for k in training] == [meta_b["position"][k] for k in training]
    assert meta_a["position"]["step"] == 6
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert [r["step"] for r in records(split)][-1] == 6
