"""The memory tasks: their stated baselines, checked empirically on 10k samples, their structure, seeding,
and that the training loop can learn the adding problem at a short length.

Key: B batch, T time.
"""
from __future__ import annotations

import math

import pytest
import torch

from recurrent.tasks.memory import AddingTask, CopyTask, TrainConfig, make_task, train_memory

N = 10_000


def test_adding_baseline_is_the_variance_of_the_target():
    task = AddingTask(50)
    x, y = task.sample(N, torch.Generator().manual_seed(0))
    assert task.baseline == pytest.approx(0.167, abs=5e-4)
    # predicting the mean, E[y] = 1: MSE = Var[u_a + u_b] = 1/6. Its standard error on 10k samples is 0.002.
    mean_prediction = torch.ones(N, task.seq_len, 1)
    assert task.loss(mean_prediction, y).item() == pytest.approx(task.baseline, abs=0.01)
    assert ((y - y.mean()) ** 2).mean().item() == pytest.approx(task.baseline, abs=0.01)


def test_adding_structure():
    task = AddingTask(10)
    x, y = task.sample(64, torch.Generator().manual_seed(1))  # (B, T, 2), (B,)
    assert x.shape == (64, 10, 2) and y.shape == (64,)
    u, marks = x.unbind(-1)
    assert ((u >= 0) & (u < 1)).all()
    assert (marks[:, :5].sum(1) == 1).all() and (marks[:, 5:].sum(1) == 1).all()  # one marker in each half
    torch.testing.assert_close(y, (u * marks).sum(1))


@pytest.mark.parametrize("delay", [5, 100])
def test_copy_baseline_is_uniform_guess_over_the_recalled_symbols(delay):
    task = CopyTask(delay)
    x, y = task.sample(N, torch.Generator().manual_seed(0))
    T = delay + 20
    assert task.baseline == pytest.approx(10 * math.log(8) / T)
    # blank with certainty before the recall, uniform over symbols 1..8 during it (-inf elsewhere: a target
    # outside the stated classes would make the loss infinite)
    logits = torch.full((N, T, 10), -math.inf)
    logits[:, : T - 10, 0] = 0.0
    logits[:, T - 10 :, 1:9] = 0.0
    assert task.loss(logits, y).item() == pytest.approx(task.baseline, rel=1e-6)


def test_copy_structure():
    task = CopyTask(7)
    x, y = task.sample(32, torch.Generator().manual_seed(2))
    tokens = x.argmax(-1)  # (B, T)
    assert x.shape == (32, 27, 10) and (x.sum(-1) == 1).all()  # one-hot
    symbols = tokens[:, :10]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert (tokens[:, 10:16] == 0).all() and (tokens[:, 16] == 9).all() and (tokens[:, 17:] == 0).all()
    assert (y[:, :17] == 0).all() and torch.equal(y[:, 17:], symbols)


def test_samples_are_seeded():
    for task in (AddingTask(20), CopyTask(5)):
        a = task.sample(8, torch.Generator().manual_seed(3))
        b = task.sample(8, torch.Generator().manual_seed(3))
        assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_bad_task_arguments():
    with pytest.raises(ValueError, match="task must be one of"):
        make_task("reverse", 10)
    with pytest.raises(ValueError, match="seq_len"):
        AddingTask(1)
    with pytest.raises(ValueError, match="delay"):
        CopyTask(0)


def test_gru_learns_a_short_adding_problem():
    cfg = TrainConfig(hidden_size=16, batch_size=32, lr=1e-2, max_steps=250, eval_every=250, eval_size=256)
    _, result = train_memory(AddingTask(10), "gru", cfg)
    assert result.steps == 250 and len(result.grad_norms) == 250
    assert result.curve[0][1] > result.baseline  # untrained
    assert result.final_loss < 0.2 * result.baseline
