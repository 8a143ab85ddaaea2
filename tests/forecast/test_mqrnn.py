"""The MQ-RNN forecaster: its inputs, levels and forking targets against a hand computation, causality (a fork never
sees what it forecasts), exact back-transforms, interpolated quantile levels, and an AR(1) process whose quantiles
are known. Key: B batch, P past steps, C context (forks), W window, H horizon, Q levels."""
import math

import pytest
import torch

from recurrent.forecast.data import Batch, Series, mean_scale, windows
from recurrent.forecast.heads import pinball_loss
from recurrent.models.forecaster import ForecasterConfig, build
from recurrent.models.mqrnn import MQForecaster


def tiny(transform="log", **changes) -> tuple[MQForecaster, Batch]:
    """C = 4 forks, W = 3, season 2, H = 2: P = 6 past steps; one value missing."""
    torch.manual_seed(0)
    config = ForecasterConfig(**{**dict(architecture="mqrnn", cell="gru", hidden_size=5, num_layers=1, dropout=0.0,
                                        context_length=4, horizon=2, window=3, season=2, transform=transform,
                                        num_features=1, quantile_levels="0.1,0.5,0.9"), **changes})
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                           [3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0]])  # (B, P + H)
    observed = torch.ones(2, 8, dtype=torch.bool)
    observed[1, 4] = False
    features = torch.linspace(-0.5, 0.5, 8).expand(2, 8)[..., None]  # (B, P + H, 1)
    scale = mean_scale(values[:, :6], observed[:, :6])
    batch = Batch(values[:, :6], values[:, 6:], features[:, :6], features[:, 6:], observed, scale,
                  torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long))
    return build(config).eval(), batch


def test_forks_target_the_next_h_values_relative_to_the_level_built_by_hand():
    model, batch = tiny()
    out = model(batch)
    z = torch.tensor([1.0, 2, 4, 8, 16, 32, 64, 128]).log()  # series 0, every value observed
    assert not out.observed[:, 0].any()  # the first C // 4 forks warm the state up: not scored
    for c in range(1, 4):  # fork c reads steps c..c+2 and forecasts steps c+3, c+4
        t = c + 2
        level = (z[t - 1] + z[t]) / 2  # the mean over the last season (2 steps)
        assert torch.allclose(out.target[0, c], z[t + 1:t + 3] - level, atol=1e-6)
    assert out.quantiles.shape == (2, 4, 2, 3)
    assert (out.quantiles.diff(dim=-1) >= 0).all()  # levels never cross
    # series 1: step 4 is missing; forks whose targets hold it do not score it; the first fork is warm-up
    assert out.observed[1].tolist() == [[False, False], [False, True], [True, True], [True, True]]
    expected = pinball_loss(out.quantiles.reshape(2, 8, 3), out.target.reshape(2, 8),
                            [0.1, 0.5, 0.9], out.observed.reshape(2, 8))
    assert torch.allclose(out.loss, expected)


def test_a_fork_never_sees_what_it_forecasts():
    """Gradients of fork c's quantiles reach only the steps up to the end of its window, c + W - 1 (its level and,
    with the scale transform, its scale included)."""
    for transform in ("log", "scale"):
        model, batch = tiny(transform=transform)
        past = batch.past.clone().requires_grad_()
        given = batch._replace(past=past)
        given_forks = model._forks(given)
        out = model._encode(given, given_forks)
        for c in range(4):
            (grad,) = torch.autograd.grad(model._decode(out, given_forks.window)[:, c].sum(), past, retain_graph=True)
            assert (grad[:, c + 3:] == 0).all() and grad[0, c + 2] != 0  # series 1 misses step 4


def test_quantiles_map_back_exactly_and_interpolate_between_trained_levels():
    for transform in ("log", "scale"):
        model, batch = tiny(transform=transform)
        with torch.no_grad():  # a decoder that says "level + 0.1 k" for the k-th level: known quantiles
            model.skip.weight.zero_()
            model.skip.bias.zero_()
            last = model.decoder[-1]
            last.weight.zero_()
            last.bias.copy_(torch.tensor([0.1, math.log(math.expm1(0.1)), math.log(math.expm1(0.1))]).repeat(2))
        q = model.quantiles(batch, [0.1, 0.3, 0.5, 0.9, 0.99])  # (B, H, 5)
        scale = batch.past[0, -3:].abs().mean()  # series 0's last window (W = 3): 8, 16, 32
        z = batch.past[0].log() if transform == "log" else batch.past[0] / scale
        level = z[-2:].mean()  # the last season (2 steps)
        expected = level + torch.tensor([0.1, 0.15, 0.2, 0.3, 0.3])  # 0.3 halfway; beyond 0.9 held at 0.9's
        expected = expected.exp() if transform == "log" else expected * scale
        assert torch.allclose(q[0, 0], expected, rtol=1e-5)


def test_log_transform_treats_values_at_or_below_zero_as_missing():
    model, batch = tiny()
    values = torch.cat([batch.past, batch.future], 1)
    values[0, 3] = 0.0
    broken = batch._replace(past=values[:, :6])
    out = model(broken)
    assert torch.isfinite(out.loss) and torch.isfinite(model.quantiles(broken, [0.5])).all()


def test_the_task_builds_it_and_picks_the_transform_from_the_data(tmp_path):
    from recurrent.forecast.task import pick_transform
    assert pick_transform("auto", [Series("a", torch.tensor([1.0, float("nan"), 2.0]).numpy())]) == "log"
    assert pick_transform("auto", [Series("a", torch.tensor([1.0, 0.0]).numpy())]) == "scale"
    assert pick_transform("scale", [Series("a", torch.tensor([1.0]).numpy())]) == "scale"
    with pytest.raises(ValueError, match="transform must be log or scale"):
        MQForecaster(ForecasterConfig(architecture="mqrnn", window=3))  # "auto" is for the task to resolve


def ar1(n: int, length: int, seed: int = 0) -> torch.Tensor:
    """x_t = 10 + 0.8 (x_{t-1} - 10) + N(0, 1): stationary, so x_t given x_{t-1} is known."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(n, length)
    x[:, 0] = 10 + torch.randn(n, generator=g) / math.sqrt(1 - 0.64)
    for t in range(1, length):
        x[:, t] = 10 + 0.8 * (x[:, t - 1] - 10) + torch.randn(n, generator=g)
    return x


@pytest.mark.parametrize("transform", ["log", "scale"])
def test_learns_the_quantiles_of_an_ar1_process(transform):
    """One step ahead, the true 10%, 50% and 90% quantiles are known: m_t -/+ 1.2816 sd with m_t = 10 + 0.8 (x_{t-1}
    - 10) for x = AR(1) (transform scale), and exp of those / 10 for x = exp(AR(1) / 10) (transform log). After
    training, the 80% interval covers 80% +- 5 points of 1,200 held-out values, and every quantile is within 0.3
    sd of the truth on average."""
    torch.manual_seed(0)
    x = ar1(4, 1200)
    if transform == "log":
        x = (x / 10).exp()
    train = [Series(f"s{i}", x[i, :900].numpy()) for i in range(4)]
    config = ForecasterConfig(architecture="mqrnn", cell="gru", hidden_size=16, num_layers=1, dropout=0.0,
                              context_length=16, horizon=1, window=2, season=1, transform=transform,
                              quantile_levels="0.1,0.5,0.9")
    model = build(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for lr in [1e-2] * 10 + [1e-3] * 5:  # epochs of 25 batches
        for group in optimizer.param_groups:
            group["lr"] = lr
        for batch in windows(train, model.past_length, 1, 32, g, per_series=200):
            optimizer.zero_grad()
            model(batch).loss.backward()
            optimizer.step()
    model.eval()
    z = torch.tensor([-1.2816, 0.0, 1.2816])  # standard normal quantiles at 0.1, 0.5, 0.9
    P, covered, errors = model.past_length, [], []
    for t in range(900, 1200):  # forecast x_t from the P steps before it
        past, future = x[:, t - P:t], x[:, t:t + 1]
        batch = Batch(past, future, torch.zeros(4, P, 0), torch.zeros(4, 1, 0), torch.ones(4, P + 1, dtype=torch.bool),
                      mean_scale(past, torch.ones_like(past, dtype=torch.bool)), torch.arange(4),
                      torch.zeros(4, dtype=torch.long))
        q = model.quantiles(batch, [0.1, 0.5, 0.9])[:, 0]  # (B, 3)
        covered.append((future[:, 0] >= q[:, 0]) & (future[:, 0] <= q[:, 2]))
        previous = x[:, t - 1] if transform == "scale" else 10 * x[:, t - 1].log()
        truth = 10 + 0.8 * (previous - 10)[:, None] + z  # (B, 3)
        if transform == "log":
            truth = (truth / 10).exp()
        sd = (truth[:, 2] - truth[:, 0]) / (2 * 1.2816)  # the local sd, data units
        errors.append((q - truth) / sd[:, None])
    coverage = torch.cat(covered).float().mean()
    error = torch.cat(errors).abs().mean(0)  # (3,) in sds
    assert 0.75 <= coverage <= 0.85 and (error < 0.3).all(), (coverage, error)
