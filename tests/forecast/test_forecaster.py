"""The DeepAR forecaster: its inputs and loss against a hand computation, seeded sampling, and an AR(1) process it
must learn. Key: B batch, P past steps, C context, H horizon, S sample paths."""
import math

import pytest
import torch

from recurrent.forecast.data import Batch, Series, windows
from recurrent.forecast.heads import masked_nll
from recurrent.models.forecaster import Forecaster, ForecasterConfig


def tiny(**changes) -> tuple[Forecaster, Batch]:
    """A model with lags (1, 2), one feature and a series embedding, and a batch of 2 windows (P = 5, H = 2), one
    value missing."""
    torch.manual_seed(0)
    config = ForecasterConfig(**{**dict(cell="gru", hidden_size=4, num_layers=1, dropout=0.0, likelihood="gaussian",
                                        embedding_size=2, num_features=1, num_series=3, context_length=3, horizon=2,
                                        lags=(1, 2)), **changes})
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], [8.0, 6.0, 0.0, 4.0, 2.0, 1.0, 3.0]])  # (B, P + H)
    observed = torch.ones(2, 7, dtype=torch.bool)
    observed[1, 2] = False  # the 0.0
    features = torch.linspace(-0.5, 0.5, 7).expand(2, 7)[..., None]  # (B, P + H, 1)
    scale = torch.tensor([3.0, 4.0])
    batch = Batch(values[:, :5], values[:, 5:], features[:, :5], features[:, 5:], observed, scale,
                  torch.tensor([2, 0]), torch.tensor([0, 0]))
    return Forecaster(config).eval(), batch


def test_loss_is_the_masked_nll_of_inputs_built_by_hand():
    model, batch = tiny()
    values = torch.cat([batch.past, batch.future], 1)  # (B, 7)
    features = torch.cat([batch.past_features, batch.future_features], 1)
    rows = []
    for b in range(2):
        steps = []
        for t in range(2, 7):  # the last C = 3 past steps and the H = 2 future ones
            lag = [values[b, t - k] / batch.scale[b] if batch.observed[b, t - k] else torch.tensor(0.0)
                   for k in (1, 2)]
            steps.append(torch.cat([torch.stack(lag), features[b, t], batch.scale[b].log()[None],
                                    model.embedding.weight[batch.series[b]]]))
        rows.append(torch.stack(steps))
    out, _ = model.rnn(torch.stack(rows))  # (B, 5, N)
    raw = model.head.proj(out)  # (B, 5, 2): loc and the scale before softplus, in scaled units
    loc = raw[..., 0] * batch.scale[:, None]
    sd = (torch.nn.functional.softplus(raw[..., 1]) + 1e-6) * batch.scale[:, None]
    y, seen = values[:, 2:], batch.observed[:, 2:]
    nll = 0.5 * ((y - loc) / sd) ** 2 + sd.log() + 0.5 * math.log(2 * math.pi)  # (B, 5)
    expected = (nll * seen).sum() / seen.sum()

    result = model(batch)
    assert seen.sum() == 9  # the missing value falls in the context of the second window and is not scored
    assert result.distribution.batch_shape == (2, 5)
    assert torch.allclose(result.loss, expected, atol=1e-6)
    assert torch.allclose(result.loss, masked_nll(result.distribution, y, seen))


def test_sampling_is_seeded_and_leaves_the_global_rng_alone():
    model, batch = tiny(likelihood="student_t", cell="lstm", num_layers=2)
    before = torch.get_rng_state()
    a = model.sample(batch, 5, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), before)
    b = model.sample(batch, 5, torch.Generator().manual_seed(1))
    c = model.sample(batch, 5, torch.Generator().manual_seed(2))
    assert a.shape == (5, 2, 2)  # (S, B, H)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_sampling_feeds_each_draw_back():
    """With one lag and a one-step context, path s's second value is drawn from the head given its first draw:
    replaying the first step by hand and forcing the draw gives the same distribution."""
    model, batch = tiny(lags=(1,), embedding_size=0, num_features=1, context_length=1)
    batch = batch._replace(past=batch.past[:, -2:], past_features=batch.past_features[:, -2:],
                           observed=batch.observed[:, -4:])
    paths = model.sample(batch, 3, torch.Generator().manual_seed(0))  # (S, B, H)
    for s in range(3):
        forced = batch._replace(future=paths[s], observed=torch.ones(2, 4, dtype=torch.bool))
        out = model(forced)  # teacher forced through the drawn path: step 2's distribution follows draw 1
        assert torch.isfinite(out.loss)
        mean = out.distribution.mean[:, -1]  # (B,)
        again = model(forced._replace(future=torch.stack([paths[s][:, 0], mean], 1)))
        assert torch.allclose(again.distribution.mean[:, -1], mean)  # step 2 depends only on what came before


def ar1(n_series: int, length: int, phi: float = 0.8, level: float = 10.0, seed: int = 0) -> torch.Tensor:
    """x_t = level + y_t, y_t = phi y_{t-1} + e_t, e_t ~ N(0, 1), started from the stationary law."""
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n_series, length)
    y[:, 0] = torch.randn(n_series, generator=g) / math.sqrt(1 - phi**2)
    for t in range(1, length):
        y[:, t] = phi * y[:, t - 1] + torch.randn(n_series, generator=g)
    return level + y


@pytest.fixture(scope="module")
def ar1_model() -> tuple[Forecaster, torch.Tensor]:
    """A Gaussian DeepAR trained on the first 450 steps of 4 AR(1) series of 600."""
    torch.manual_seed(0)
    x = ar1(4, 600)
    train = [Series(f"s{i}", x[i, :450].numpy()) for i in range(4)]
    config = ForecasterConfig(cell="lstm", hidden_size=16, num_layers=1, dropout=0.0, likelihood="gaussian",
                              context_length=8, horizon=8, lags=(1,))
    model = Forecaster(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for lr in [1e-2] * 8 + [1e-3] * 8:  # epochs of 50 batches
        for group in optimizer.param_groups:
            group["lr"] = lr
        for batch in windows(train, model.past_length, 8, 32, g, per_series=400):
            optimizer.zero_grad()
            model(batch).loss.backward()
            optimizer.step()
    return model.eval(), x


def test_sample_paths_give_the_true_multi_step_quantiles_of_an_ar1_process(ar1_model):
    """h steps ahead of x_t, AR(1) is Gaussian with mean 10 + 0.8^h (x_t - 10) and variance sum_{k<h} 0.64^k. On 64
    new series of the same process, from 3 origins each, the 10% and 90% quantiles of 400 sample paths are near
    those, and their 80% interval covers 80% +- 5 points of the 1,536 values that followed."""
    model, _ = ar1_model
    x = ar1(64, 100, seed=1)
    P, H = model.past_length, 8
    h = torch.arange(1, H + 1)
    sd = ((1 - 0.64 ** h) / (1 - 0.64)).sqrt()  # (H,)
    g, covered, errors = torch.Generator().manual_seed(1), [], []
    for t in (40, 60, 80):  # origins: forecast x_t .. x_{t+H-1}
        past, future = x[:, t - P:t], x[:, t:t + H]
        batch = Batch(past, future, torch.zeros(64, P, 0), torch.zeros(64, H, 0),
                      torch.ones(64, P + H, dtype=torch.bool), past.abs().mean(1), torch.arange(64),
                      torch.zeros(64, dtype=torch.long))
        q = model.quantiles(batch, [0.1, 0.9], g, num_samples=400)  # (B, H, 2)
        mean = 10 + 0.8 ** h * (x[:, t - 1, None] - 10)  # (B, H)
        truth = torch.stack([mean - 1.2816 * sd, mean + 1.2816 * sd], dim=-1)  # (B, H, 2)
        covered.append((future >= q[..., 0]) & (future <= q[..., 1]))
        errors.append((q - truth) / sd[None, :, None])
    coverage = torch.cat(covered).float().mean()
    error = torch.cat(errors).abs().mean()  # in sds of each horizon
    assert 0.75 <= coverage <= 0.85 and error < 0.25, (coverage, error)


def test_learns_an_ar1_process(ar1_model):
    """After a few hundred steps the one-step-ahead Gaussian is close to the truth on held-out points: mean
    10 + 0.8 (x_{t-1} - 10), sd 1, and its 80% interval covers about 80% of them."""
    model, x = ar1_model

    P, H = model.past_length, 150  # teacher forced over the last 150 steps: one-step-ahead forecasts
    past, future = x[:, 450 - P:450], x[:, 450:]
    batch = Batch(past, future, torch.zeros(4, P, 0), torch.zeros(4, H, 0), torch.ones(4, P + H, dtype=torch.bool),
                  past.abs().mean(1), torch.arange(4), torch.zeros(4, dtype=torch.long))
    with torch.no_grad():
        d = model(batch).distribution
    mean, sd = d.mean[:, -H:], d.stddev[:, -H:]  # (B, H)
    truth = 10 + 0.8 * (x[:, 449:-1] - 10)
    assert (mean - truth).abs().mean() < 0.25
    assert 0.75 < sd.mean() < 1.3
    lower, upper = d.icdf(torch.tensor(0.1))[:, -H:], d.icdf(torch.tensor(0.9))[:, -H:]
    covered = ((future >= lower) & (future <= upper)).float().mean()
    assert 0.7 <= covered <= 0.9


def test_bad_lags_fail_at_construction():
    with pytest.raises(ValueError, match="start at 1"):
        Forecaster(ForecasterConfig(lags=(2, 3)))
