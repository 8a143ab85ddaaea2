"""Per-lag gradient norms against references: torch.nn cells with additive zero probes, finite differences in
float64, and the analytic linear recurrence h_t = a h_{t-1} + U x_t whose gradient decays exactly as a^lag.

Key: B batch, T time, I input, H hidden, L layers.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import recurrent as rc
from recurrent.diagnostics.gradients import (GradientMonitor, fit_slope, gradient_profile, judge, linear_probe,
                                             next_token_loss, plot_profiles, step_states, target_steps)
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.tasks.memory import AddingTask, TrainMemoryConfig, load_memory_model, train_memory
from recurrent.train.loop import flat_replace

LAYERS = {"rnn": (rc.RNN, nn.RNNCell), "lstm": (rc.LSTM, nn.LSTMCell), "gru": (rc.GRU, nn.GRUCell)}


def torch_cells(layer) -> list[nn.Module]:
    """torch.nn cells with a copy of each layer's weights: the trusted reference."""
    _, torch_class = LAYERS[type(layer).__name__.lower()]
    cells = []
    for (cell,) in layer.cells:
        ref = torch_class(cell.input_size, cell.hidden_size).double()
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, name).copy_(getattr(cell, name))
        cells.append(ref)
    return cells


def run_with_probes(cells, x, probes):
    """Step torch.nn cells, adding probes[l, k] (B, H) to each h_k: ∂loss/∂probe[l, k] = ∂loss/∂h_k."""
    B, T, _ = x.shape
    inp = x.unbind(1)
    for l, cell in enumerate(cells):
        h = c = x.new_zeros(B, cell.hidden_size)
        outs = []
        for k in range(T):
            if isinstance(cell, nn.LSTMCell):
                h, c = cell(inp[k], (h, c))
            else:
                h = cell(inp[k], h)
            h = h + probes[l, k]
            outs.append(h)
        inp = outs
    return outs  # the top layer's h_k, T x (B, H)


def reference_norms(layer, x, v, targets):
    """(L, T) norms of ∂(v·h_t)/∂h_{t-lag} per target t, mean over the batch, each from its own autograd call."""
    cells = torch_cells(layer)
    L, (B, T, _), H = len(cells), x.shape, layer.hidden_size
    per_target = []
    for t in targets:
        probes = torch.zeros(L, T, B, H, dtype=torch.float64, requires_grad=True)
        loss = (run_with_probes(cells, x, probes)[t] @ v).sum()
        (g,) = torch.autograd.grad(loss, probes)  # (L, T, B, H)
        norms = torch.zeros(L, T, dtype=torch.float64)
        for k in range(t + 1):
            norms[:, t - k] = g[:, k].norm(dim=-1).mean(dim=-1)
        per_target.append(norms)
    return per_target


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_per_lag_norms_match_torch_nn_cells_with_probes(kind):
    layer_class, _ = LAYERS[kind]
    layer = layer_class(3, 5, num_layers=2).double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)  # (B, T, I)
    v = torch.randn(5, dtype=torch.float64)
    profile = gradient_profile(layer, x, lambda h, t: h @ v, n_targets=3)
    assert profile.targets == [4, 6, 8]
    refs = reference_norms(layer, x, v, profile.targets)
    torch.testing.assert_close(profile.last, refs[-1], rtol=1e-10, atol=1e-14)
    # the mean over targets: each lag averages the targets that reach it (lag <= t)
    total, count = sum(refs), torch.tensor([sum(lag <= t for t in profile.targets) for lag in range(9)])
    torch.testing.assert_close(profile.mean, total / count, rtol=1e-10, atol=1e-14)


def test_per_lag_norms_match_finite_differences():
    """Central differences on each coordinate of each h_k, for one sequence through a 2-layer LSTM."""
    layer = rc.LSTM(2, 3, num_layers=2).double()
    x = torch.randn(1, 5, 2, dtype=torch.float64)
    v = torch.randn(3, dtype=torch.float64)
    profile = gradient_profile(layer, x, lambda h, t: h @ v, n_targets=1)
    cells, eps = torch_cells(layer), 1e-6
    fd = torch.zeros(2, 5, dtype=torch.float64)
    with torch.no_grad():
        for l in range(2):
            for k in range(5):
                grad = torch.zeros(3, dtype=torch.float64)
                for j in range(3):
                    probes = torch.zeros(2, 5, 1, 3, dtype=torch.float64)
                    probes[l, k, 0, j] = eps
                    up = run_with_probes(cells, x, probes)[-1] @ v
                    probes[l, k, 0, j] = -eps
                    down = run_with_probes(cells, x, probes)[-1] @ v
                    grad[j] = ((up - down) / (2 * eps)).item()
                fd[l, 4 - k] = grad.norm()
    torch.testing.assert_close(profile.last, fd, rtol=1e-6, atol=1e-9)


def linear_rnn(a: float, hidden_size: int = 4) -> rc.RNN:
    """A ReLU RNN with W = a·I, U >= 0 and no bias: on inputs >= 0 every state is >= 0, so ReLU is the identity
    and h_t = a h_{t-1} + U x_t, with ∂h_t/∂h_k = a^(t-k) I."""
    layer = rc.RNN(2, hidden_size, nonlinearity="relu").double()
    cell = layer.cells[0][0]
    with torch.no_grad():
        cell.weight_hh.copy_(a * torch.eye(hidden_size, dtype=torch.float64))
        cell.weight_ih.abs_()
        cell.bias_ih.zero_()
        cell.bias_hh.zero_()
    return layer


@pytest.mark.parametrize("a, verdict", [(0.5, "vanishing"), (0.9, "healthy"), (1.0, "healthy"),
                                        (1.4, "exploding")])
def test_linear_recurrence_decays_exactly_as_a_to_the_lag(a, verdict):
    T = 30
    x = torch.rand(3, T, 2, dtype=torch.float64)  # >= 0
    profile = gradient_profile(linear_rnn(a), x, linear_probe(4), n_targets=4)  # unit probe: ∂ℓ/∂h_T has norm 1
    expected = a ** torch.arange(T, dtype=torch.float64)
    torch.testing.assert_close(profile.last[0], expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(profile.mean[0], expected, rtol=1e-10, atol=0)
    (v,) = profile.verdicts()
    assert v.slope == pytest.approx(math.log(a), abs=1e-9)
    assert v.rate == pytest.approx(a, rel=1e-9)
    assert v.verdict == verdict  # 0.9^29 = 0.047 is healthy; 0.5^29 = 1.9e-9 and 1.4^29 = 1.7e4 are not


def test_step_states_match_the_layer_forward():
    layer = rc.GRU(3, 4, num_layers=2).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    hs = step_states(layer, x)
    out, state = layer(x)
    torch.testing.assert_close(torch.stack(hs[-1], dim=1), out)  # (B, T, H)
    torch.testing.assert_close(torch.stack([h[-1] for h in hs]), state.h[:, 0])  # (L, B, H)


def test_a_stack_of_layers_is_the_same_network_as_one_stacked_layer():
    """LanguageModel.layers is a list of one-layer Recurrents: with the same weights and carried state it must
    give what one two-layer Recurrent gives."""
    stacked = rc.LSTM(3, 4, num_layers=2).double()
    stack = [rc.LSTM(3, 4).double(), rc.LSTM(4, 4).double()]
    for (cell,), single in zip(stacked.cells, stack):
        single.cells[0][0].load_state_dict(cell.state_dict())
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    state = rc.LSTMState(torch.randn(2, 1, 2, 4, dtype=torch.float64), torch.randn(2, 1, 2, 4, dtype=torch.float64))
    per_layer = [rc.LSTMState(state.h[l : l + 1], state.c[l : l + 1]) for l in range(2)]  # fields (1, 1, B, H)
    for a, b in zip(step_states(stacked, x, state), step_states(stack, x, per_layer)):
        torch.testing.assert_close(torch.stack(a), torch.stack(b), rtol=0, atol=0)
    v = torch.randn(4, dtype=torch.float64)
    one = gradient_profile(stacked, x, lambda h, t: h @ v, n_targets=3, state=state)
    two = gradient_profile(stack, x, lambda h, t: h @ v, n_targets=3, state=per_layer)
    torch.testing.assert_close(one.last, two.last, rtol=0, atol=0)
    torch.testing.assert_close(one.mean, two.mean, rtol=0, atol=0)


def test_language_model_loss_norms_match_torch_nn_cells_with_probes():
    """The LM's own loss (decoder + cross-entropy of the next token) through its trained-layer stack, against
    torch.nn cells with copied weights and additive zero probes on every h_k."""
    model = LanguageModel(LMConfig(vocab_size=7, cell="gru", hidden_size=5, embedding_size=3, num_layers=2)).double()
    tokens = torch.randint(7, (3, 9))  # (B, T + 1)
    x, y = model.embedding(tokens[:, :-1]).detach(), tokens[:, 1:]  # (B, T, E), (B, T)
    profile = gradient_profile(model.layers, x, next_token_loss(model.decoder, y), n_targets=1)
    cells = [torch_cells(layer)[0] for layer in model.layers]
    probes = torch.zeros(2, 8, 3, 5, dtype=torch.float64, requires_grad=True)  # (L, T, B, H)
    h_last = run_with_probes(cells, x, probes)[-1]
    loss = torch.nn.functional.cross_entropy(model.decoder(h_last), y[:, -1], reduction="sum")
    (g,) = torch.autograd.grad(loss, probes)
    expected = g.flip(1).norm(dim=-1).mean(dim=-1)  # (L, T) by lag: lag 0 is the last step
    torch.testing.assert_close(profile.last, expected, rtol=1e-10, atol=1e-14)


def test_bidirectional_is_refused():
    with pytest.raises(ValueError, match="unidirectional"):
        step_states(rc.LSTM(2, 3, bidirectional=True), torch.randn(1, 4, 2))


def test_target_steps():
    assert target_steps(200, 1) == [199]
    assert target_steps(200, 4) == [99, 132, 166, 199]
    assert target_steps(1, 4) == [0]


def test_fit_and_verdict_edge_cases():
    norms = torch.tensor([1.0, 0.5, 0.25, 0.125])
    assert fit_slope(norms) == (pytest.approx(math.log(0.5)), 3)
    assert judge(0, torch.tensor([1.0, 1e-30, 0.0, 0.0])).verdict == "vanishing"  # underflowed to zero
    assert judge(0, torch.tensor([1.0, 1e30, math.inf])).verdict == "exploding"  # overflowed
    assert judge(0, torch.tensor([1.0, 0.9, 1.1, 1.0])).verdict == "healthy"


def test_plot_writes_a_png(tmp_path):
    profile = gradient_profile(linear_rnn(0.8), torch.rand(2, 10, 2, dtype=torch.float64), linear_probe(4))
    plot_profiles({"relu a=0.8": profile}, str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_monitor_logs_every_n_steps_during_training(tmp_path):
    task = AddingTask(8)
    path = tmp_path / "grads.jsonl"

    def loss_of(model, batch):
        x, y = batch
        return x, lambda h, t: task.step_loss(model.head(h), y, t)

    monitor = GradientMonitor(layer_of=lambda m: m.rnn, loss_of=loss_of, every=2, path=str(path))
    batches = {}

    def callback(step, model, batch):
        batches[step] = batch
        monitor(step, model, batch)

    config = flat_replace(TrainMemoryConfig(), seq_len=8, cell="lstm", hidden_size=6, batch_size=4, eval_size=8,
                          max_steps=4, max_time=0.0, progress=False, out=str(tmp_path / "run"))
    model = load_memory_model(train_memory(config, callback=callback))
    assert [r["step"] for r in monitor.history] == [2, 4]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == json.loads(json.dumps(monitor.history))
    # the record at step 4 is the profile of the final model on that step's batch
    x, loss_fn = loss_of(model, batches[4])
    expected = gradient_profile(model.rnn, x, loss_fn, n_targets=1)
    assert lines[-1]["norms"][0] == pytest.approx(expected.last[0].tolist(), rel=1e-6)
    assert lines[-1]["layers"][0]["verdict"] == expected.verdicts()[0].verdict
