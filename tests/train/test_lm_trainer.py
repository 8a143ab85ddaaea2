"""The language-model trainer on a tiny generated corpus: it learns, writes its run folder, round-trips through
load_lm, resumes bit-identically, and its schedules and clipping statistics do what they say."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

from recurrent.checkpoint import load_checkpoint
from recurrent.data import Vocab
from recurrent.errors import UserError
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.inference.lm import evaluate_loss, load_lm
from recurrent.train import TrainLMConfig, train_lm
from recurrent.train.common import ClipStats, Schedule
from recurrent.train.loop import flat_replace

PNG = b"\x89PNG\r\n\x1a\n"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "café", "世界"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(200)) + "\n"
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(text, encoding="utf-8")
    return path


def tiny(corpus, out, **overrides) -> TrainLMConfig:
    model = LMConfig(hidden_size=24, num_layers=1)
    defaults = dict(out=str(out), batch_size=8, bptt=16, eval_every=10, log_every=5, max_steps=20, progress=False)
    return flat_replace(TrainLMConfig(data=str(corpus), model=model), **{**defaults, **overrides})


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    return train_lm(tiny(corpus, tmp_path_factory.mktemp("runs") / "run"))


def test_run_folder_holds_metrics_plot_config_and_checkpoint(run):
    assert {"metrics.jsonl", "loss.png", "config.json", "model.safetensors", "model.json",
            "last.safetensors", "last.json"} <= {p.name for p in run.iterdir()}
    assert (run / "loss.png").read_bytes()[:8] == PNG
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert {"step", "epoch", "lr", "train_loss", "val_loss", "tok_s", "clip_fraction"} <= set(records[0])
    assert [r["val_loss"] is not None for r in records] == [False, True, False, True]
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["max_steps"] == 20 and config["model"]["hidden_size"] == 24


def test_training_lowers_valid_loss_below_the_untrained_model(run, corpus):
    lm = load_lm(run)
    model, vocab = lm.model, lm.vocab
    untrained = LanguageModel(model.config)
    text = corpus.read_text(encoding="utf-8")
    valid = vocab.encode(text[int(len(text) * 0.9):])
    before, after = evaluate_loss(untrained, valid), evaluate_loss(model, valid)
    assert after < before - 0.3, (before, after)
    assert before == pytest.approx(math.log(len(vocab)), abs=0.3)  # untrained: about uniform


def test_load_lm_round_trips_weights_and_vocabulary(run):
    tensors, meta = load_checkpoint(run)
    lm = load_lm(run)
    model, vocab = lm.model, lm.vocab
    assert vocab == Vocab.from_dict(meta["vocab"]) and not model.training
    fresh = LanguageModel(LMConfig(**meta["model"]))
    fresh.load_state_dict(tensors)
    x = vocab.encode("the café 世界")[None]  # (1, T)
    assert torch.equal(model(x).logits, fresh.eval()(x).logits)


def test_evaluate_lm_spells_out_the_metric(run):
    lm = load_lm(run)
    score = lm.evaluate("the cat sat on a mat\n" * 5)
    assert str(score) == f"bits/char {score.nats_per_token / math.log(2):.3f}"
    assert score.perplexity == pytest.approx(math.exp(score.nats_per_token))
    assert str(score._replace(level="word")).startswith("perplexity ")


def test_resume_continues_bit_identically(corpus, tmp_path):
    """6 steps straight == 3 steps, then --resume for 3 more: weights, optimizer state and carried hidden state.
    Dropout and random window lengths make the RNG states and the window position matter."""
    base = tiny(corpus, tmp_path / "straight", max_steps=6, eval_every=2, random_bptt=True,
                model=LMConfig(hidden_size=16, num_layers=2, dropout=0.3))
    straight = train_lm(base)
    split = train_lm(flat_replace(base, out=str(tmp_path / "split"), max_steps=3))
    split = train_lm(flat_replace(base, out=str(tmp_path / "split"), max_steps=6, resume=True))
    a, meta_a = load_checkpoint(straight, name="last")
    b, meta_b = load_checkpoint(split, name="last")
    assert meta_a["position"] == meta_b["position"] and meta_a["position"]["step"] == 6
    assert a.keys() == b.keys() and any(k.startswith("carry.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6


def test_resuming_a_finished_run_logs_nothing_twice(corpus, tmp_path):
    """A run killed after its final save (last.* at the last step) and resumed: the final evaluation is not run and
    logged again (the fault-injection test once caught a doubled last line this way)."""
    base = tiny(corpus, tmp_path / "done", max_steps=5, eval_every=2)
    run = train_lm(base)
    before = (run / "metrics.jsonl").read_text()
    assert [json.loads(line)["step"] for line in before.splitlines()][-1] == 5
    train_lm(flat_replace(base, resume=True))
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_without_a_checkpoint_is_a_user_error(corpus, tmp_path):
    with pytest.raises(UserError, match="cannot resume"):
        train_lm(tiny(corpus, tmp_path / "none", resume=True))


@pytest.mark.parametrize("overrides, message", [({"bptt": 0}, "bptt must be >= 1"),
                                                ({"schedule": "linear"}, "schedule must be one of"),
                                                ({"lr": -1.0}, "lr must be > 0")])
def test_bad_config_values_are_user_errors(corpus, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        train_lm(tiny(corpus, tmp_path / "bad", **overrides))


def test_patience_stops_early_and_budget_returns_normally(corpus, tmp_path):
    run = train_lm(tiny(corpus, tmp_path / "patient", lr=50.0, optimizer="sgd", clip=0.0, eval_every=1,
                        patience=1, max_steps=50))
    _, meta = load_checkpoint(run, name="last")
    assert meta["position"]["step"] < 50


def test_schedules():
    assert Schedule("zaremba", 1.0, decay_start_epoch=4).lr(0, 4) == 1.0
    assert Schedule("zaremba", 1.0, decay_start_epoch=4).lr(0, 6) == 0.25
    assert Schedule("constant", 1.0, warmup_steps=4).lr(1, 1) == 0.5
    cosine = Schedule("cosine", 1.0, total_steps=10)
    assert cosine.lr(0, 1) == 1.0 and cosine.lr(5, 1) == pytest.approx(0.5) and cosine.lr(10, 1) == 0.0
    timed = Schedule("cosine", 1.0, total_steps=1000, total_time=60.0)  # whichever runs out first
    assert timed.lr(1, 1, elapsed=30.0) == pytest.approx(0.5) and timed.lr(1, 1, elapsed=60.0) == 0.0
    assert timed.lr(500, 1, elapsed=1.0) == pytest.approx(0.5)
    plateau = Schedule("plateau", 1.0, plateau_patience=1)
    for val in (3.0, 2.0, 2.5):
        plateau.on_eval(val)
    assert plateau.lr(0, 1) == 0.5


def test_clip_stats_count_clipped_steps_and_keep_pre_clip_norms():
    p = torch.nn.Parameter(torch.zeros(2))
    stats = ClipStats(max_norm=1.0)
    for g in ([3.0, 4.0], [0.3, 0.4]):
        p.grad = torch.tensor(g)
        stats.clip([p])
    assert stats.norms == pytest.approx([5.0, 0.5]) and stats.clipped == 1 and stats.fraction() == 0.5
    assert p.grad.norm() == pytest.approx(0.5)


def test_word_level_run_reports_perplexity(corpus, tmp_path):
    run = train_lm(tiny(corpus, tmp_path / "words", level="word", bptt=4, batch_size=4, max_steps=2))
    lm = load_lm(run)
    assert lm.vocab.level == "word" and "<eos>" in lm.vocab.stoi
    score = lm.evaluate("the cat sat on a mat\n" * 5)
    assert str(score) == f"perplexity {math.exp(score.nats_per_token):.1f}"


def test_clip_stats_keep_a_bounded_window_and_the_totals(monkeypatch):
    """A checkpoint holds the norms: only the last KEEP are kept, while the counts cover every step, and a state
    saved before `steps` existed loads with every norm counted."""
    monkeypatch.setattr(ClipStats, "KEEP", 3)
    p = torch.nn.Parameter(torch.zeros(1))
    stats = ClipStats(max_norm=1.0)
    for g in (2.0, 0.5, 2.0, 0.5, 0.5, 0.5, 0.5, 2.0):  # clipped at steps 1, 3 and 8
        p.grad = torch.tensor([g])
        stats.clip([p])
    state = stats.state_dict()
    assert state == {"norms": pytest.approx([0.5, 0.5, 2.0]), "clipped": 3, "steps": 8}
    assert stats.fraction() == 3 / 8 and stats.fraction(last=2) == 0.5
    restored = ClipStats(max_norm=1.0)
    restored.load_state_dict(state)
    assert (restored.steps, restored.fraction()) == (8, 3 / 8)
    restored.load_state_dict({"norms": [2.0, 0.5], "clipped": 1})
    assert restored.steps == 2
