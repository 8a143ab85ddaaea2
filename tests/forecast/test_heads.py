"""Forecasting heads against trusted references: torch.distributions for densities and moments, the negative
binomial's pmf written out, hand-computed pinball losses, gradcheck (float64) for what the heads compute
themselves, and sample quantiles against known distributions (a Gaussian, an AR(1) process).

Key: B batch, T time, H hidden, S sample paths, K horizons, Q quantile levels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.distributions import Normal, StudentT

from recurrent.forecast.heads import (
    LIKELIHOODS,
    GaussianHead,
    NegativeBinomialHead,
    QuantileHead,
    StudentTHead,
    make_head,
    masked_nll,
    monotone_quantiles,
    pinball_loss,
    prediction_interval,
    sample_quantiles,
)

B, T, H = 3, 5, 4
EPS = 1e-6


def softplus(x):
    return torch.log1p(torch.exp(x))  # written out, so the reference does not reuse the head's F.softplus


def raw_params(head, out):
    """The head's linear layer applied by hand: (B, T, P) unbound into P tensors (B, T)."""
    return (out @ head.proj.weight.T + head.proj.bias).unbind(-1)


def nb_log_pmf(k, mu, alpha):
    """log P(k) of the negative binomial with mean mu and variance mu + alpha mu², written out."""
    r = 1 / alpha
    return (torch.lgamma(k + r) - torch.lgamma(k + 1) - torch.lgamma(r)
            + r * torch.log(1 / (1 + alpha * mu)) + k * torch.log(alpha * mu / (1 + alpha * mu)))


def counts(*shape):
    return torch.poisson(torch.full(shape, 4.0))


def test_gaussian_head_log_prob_is_torch_normal_of_its_parameters():
    head, out = GaussianHead(H), torch.randn(B, T, H)
    raw_loc, raw_scale = raw_params(head, out)
    y = torch.randn(B, T)
    expected = Normal(raw_loc, softplus(raw_scale) + EPS).log_prob(y)
    torch.testing.assert_close(head(out).log_prob(y), expected)


def test_student_t_head_log_prob_is_torch_student_t_of_its_parameters():
    head, out = StudentTHead(H), torch.randn(B, T, H)
    raw_loc, raw_scale, raw_df = raw_params(head, out)
    y = 3 * torch.randn(B, T)
    expected = StudentT(2 + softplus(raw_df) + EPS, raw_loc, softplus(raw_scale) + EPS).log_prob(y)
    torch.testing.assert_close(head(out).log_prob(y), expected)


def test_negative_binomial_head_log_prob_is_the_pmf_with_mean_mu_and_dispersion_alpha():
    head, out = NegativeBinomialHead(H), torch.randn(B, T, H, dtype=torch.float64)
    head.double()
    raw_mu, raw_alpha = raw_params(head, out)
    mu, alpha = softplus(raw_mu) + EPS, softplus(raw_alpha) + EPS
    k = counts(B, T).double()
    torch.testing.assert_close(head(out).log_prob(k), nb_log_pmf(k, mu, alpha))


def test_torch_negative_binomial_convention_gives_mean_mu_and_variance_mu_plus_alpha_mu_squared():
    mu = torch.tensor([0.5, 3.0, 20.0], dtype=torch.float64)
    alpha = torch.tensor([2.0, 0.3, 0.05], dtype=torch.float64)
    raw_mu, raw_alpha = torch.log(torch.expm1(mu - EPS)), torch.log(torch.expm1(alpha - EPS))  # softplus⁻¹
    distribution = NegativeBinomialHead(1).distribution(raw_mu, raw_alpha, scale=torch.ones(()))
    torch.testing.assert_close(distribution.mean, mu)
    torch.testing.assert_close(distribution.variance, mu + alpha * mu**2)
    draws = distribution.sample((200_000,))  # (S, 3): the sampler agrees with the moments
    torch.testing.assert_close(draws.mean(0), mu, rtol=0.02, atol=0)
    torch.testing.assert_close(draws.var(0), mu + alpha * mu**2, rtol=0.05, atol=0)


@pytest.mark.parametrize("bias", [-200.0, 200.0])
def test_parameters_stay_valid_when_the_linear_outputs_are_extreme(bias):
    out = torch.randn(B, T, H)
    for name, head_class in LIKELIHOODS.items():
        head = head_class(H)
        with torch.no_grad():
            head.proj.weight.zero_()
            head.proj.bias.fill_(bias)
        distribution = head(out)
        if name == "negative_binomial":
            assert (distribution.total_count > 0).all() and distribution.total_count.isfinite().all()
            target = counts(B, T)
        else:
            assert (distribution.scale > 0).all(), name
            target = torch.randn(B, T)
        if name == "student_t":
            assert (distribution.df > 2).all()
        assert distribution.log_prob(target).isfinite().all(), name


def test_scaled_gaussian_and_student_t_have_the_moments_and_density_of_scale_times_y():
    out, scale = torch.randn(B, T, H, dtype=torch.float64), torch.tensor([0.5, 2.0, 30.0], dtype=torch.float64)
    s = scale[:, None]  # (B, 1)
    y = 10 * torch.randn(B, T, dtype=torch.float64)
    for head in [GaussianHead(H).double(), StudentTHead(H).double()]:
        unit, data = head(out), head(out, scale)
        variance = unit.scale**2 if isinstance(head, GaussianHead) else unit.scale**2 * unit.df / (unit.df - 2)
        torch.testing.assert_close(data.mean, s * unit.loc)
        torch.testing.assert_close(data.variance, s**2 * variance)
        # change of variables: p_data(y) = p_unit(y / s) / s
        torch.testing.assert_close(data.log_prob(y), unit.log_prob(y / s) - s.log())


def test_scaled_negative_binomial_has_mean_scale_mu_and_dispersion_alpha_over_sqrt_scale():
    head = NegativeBinomialHead(H).double()
    out, scale = torch.randn(B, T, H, dtype=torch.float64), torch.tensor([0.5, 2.0, 30.0], dtype=torch.float64)
    s = scale[:, None]  # (B, 1)
    unit, data = head(out), head(out, scale)
    mu, alpha = unit.mean, 1 / unit.total_count
    torch.testing.assert_close(data.mean, s * mu)
    torch.testing.assert_close(data.variance, s * mu + alpha / s.sqrt() * (s * mu) ** 2)
    k = counts(B, T).double()
    torch.testing.assert_close(data.log_prob(k), nb_log_pmf(k, s * mu, alpha / s.sqrt()))


def test_scale_must_hold_one_value_per_series():
    head, out = GaussianHead(H), torch.randn(B, T, H)
    torch.testing.assert_close(head(out, torch.full((B, 1), 2.0)).mean, head(out, torch.full((B,), 2.0)).mean)
    with pytest.raises(ValueError, match=r"one value per series, shape \(3,\), got \(3, 5\)"):
        head(out, torch.ones(B, T))


def test_registry_builds_each_head_by_name_and_names_the_choices_on_a_typo():
    assert type(make_head("gaussian", H)) is GaussianHead
    assert type(make_head("student_t", H)) is StudentTHead
    assert type(make_head("negative_binomial", H, eps=1e-4)) is NegativeBinomialHead
    with pytest.raises(ValueError, match=r"unknown likelihood 'student'; choose from \['gaussian', "):
        make_head("student", H)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_masked_nll_is_the_mean_over_observed_points_and_nan_targets_leave_gradients_finite(name):
    head = make_head(name, H)
    out = torch.randn(B, T, H, requires_grad=True)
    target = counts(B, T) if name == "negative_binomial" else torch.randn(B, T)
    target[0, 1] = target[2, 4] = float("nan")  # missing values
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, :2] = False  # e.g. padding before a series starts
    distribution = head(out)
    loss = masked_nll(distribution, target, mask)
    loss.backward()
    observed = mask & ~target.isnan()
    assert observed.sum() == B * T - 4
    log_prob = distribution.log_prob(target.nan_to_num(0.0))  # (B, T); NaN is outside every support
    by_hand = -torch.stack([log_prob[b, t] for b, t in observed.nonzero()]).mean()
    torch.testing.assert_close(loss, by_hand)
    assert out.grad.isfinite().all() and head.proj.weight.grad.isfinite().all()
    assert (out.grad[~observed] == 0).all() and (out.grad[observed] != 0).all()


def test_masked_nll_without_a_mask_drops_only_nan_targets_and_an_empty_batch_gives_zero():
    distribution = GaussianHead(H)(torch.randn(B, T, H))
    target = torch.randn(B, T)
    target[1, 3] = float("nan")
    keep = ~target.isnan()
    expected = -distribution.log_prob(target.nan_to_num(0.0))[keep].mean()
    torch.testing.assert_close(masked_nll(distribution, target), expected)
    assert masked_nll(distribution, torch.full((B, T), float("nan"))) == 0


LEVELS = [0.1, 0.5, 0.9]


def test_pinball_loss_matches_hand_computation():
    quantiles = torch.tensor([[[0.0, 1.0, 2.0], [-1.0, 0.0, 1.0], [5.0, 6.0, 7.0]]])  # (B=1, K=3, Q=3)
    target = torch.tensor([[1.5, -2.0, float("nan")]])  # (1, 3)
    # y - q = (1.5, 0.5, -0.5): 0.1 * 1.5, 0.5 * 0.5, (0.9 - 1) * -0.5 -> mean 0.45 / 3 = 0.15
    # y - q = (-1, -2, -3): (0.1 - 1) * -1, (0.5 - 1) * -2, (0.9 - 1) * -3 -> mean 2.2 / 3
    torch.testing.assert_close(pinball_loss(quantiles, target, LEVELS), torch.tensor((0.15 + 2.2 / 3) / 2))
    mask = torch.tensor([[True, False, True]])
    torch.testing.assert_close(pinball_loss(quantiles, target, LEVELS, mask), torch.tensor(0.15))


def test_pinball_loss_is_least_at_the_true_quantile():
    y = Normal(3.0, 2.0).sample((20_000,))  # (S,)
    true = Normal(3.0, 2.0).icdf(torch.tensor(0.9))
    losses = [pinball_loss(torch.full((1, len(y), 1), float(true + shift)), y[None], [0.9])
              for shift in (-0.5, 0.0, 0.5)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


def test_monotone_quantiles_add_softplus_steps_to_the_lowest():
    raw = 10 * torch.randn(B, 6, 5)
    quantiles = monotone_quantiles(raw)
    torch.testing.assert_close(quantiles[..., 0], raw[..., 0])
    torch.testing.assert_close(quantiles.diff(dim=-1), softplus(raw[..., 1:]))
    assert (quantiles.diff(dim=-1) >= 0).all()


def test_quantile_head_gives_non_crossing_quantiles_per_horizon_in_data_units():
    head = QuantileHead(H, horizon=6, levels=LEVELS)
    with torch.no_grad():
        head.proj.weight.mul_(100)  # large raw outputs: crossing would show if it could happen
    context, scale = torch.randn(B, H), torch.tensor([1.0, 2.0, 0.5])
    quantiles = head(context)
    assert quantiles.shape == (B, 6, 3)
    assert (quantiles.diff(dim=-1) >= 0).all()
    torch.testing.assert_close(head(context, scale), quantiles * scale[:, None, None])


@pytest.mark.parametrize("levels", [[0.5, 0.1], [0.0, 0.5], [0.5, 1.0], []])
def test_quantile_levels_must_increase_inside_zero_one(levels):
    with pytest.raises(ValueError, match="quantile levels must"):
        QuantileHead(H, horizon=2, levels=levels)


def test_gradcheck_pinball_loss_and_the_monotone_quantile_head():
    quantiles = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, dtype=torch.float64)
    assert ((target[..., None] - quantiles).abs() > 1e-3).all()  # away from the kink at y = q
    assert gradcheck(lambda q: pinball_loss(q, target, LEVELS), (quantiles,))
    raw = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(monotone_quantiles, (raw,))
    head = QuantileHead(H, horizon=3, levels=LEVELS).double()
    assert gradcheck(head, (torch.randn(2, H, dtype=torch.float64, requires_grad=True),))


def test_sample_quantiles_take_quantiles_over_the_sample_axis():
    samples = torch.randn(50, B, T, dtype=torch.float64)
    expected = np.quantile(samples.numpy(), LEVELS, axis=0)  # (Q, B, T)
    np.testing.assert_allclose(sample_quantiles(samples, LEVELS).numpy(), np.moveaxis(expected, 0, -1))


def test_sample_quantiles_of_a_gaussian_are_within_0_05_of_the_true_ones():
    samples = Normal(3.0, 2.0).sample((20_000, 1, 1))  # (S, B, T)
    quantiles = sample_quantiles(samples, LEVELS)[0, 0]  # (Q,)
    true = Normal(3.0, 2.0).icdf(torch.tensor(LEVELS))  # 3 -/+ 2.563 at 10% and 90%
    assert (quantiles - true).abs().max() < 0.05


def test_80_percent_interval_of_sampled_ar1_paths_covers_80_percent_of_fresh_paths():
    # x_t = 0.8 x_{t-1} + eps, eps ~ N(0, 1): the Gaussian head given the true parameters (mu = 0.8 x, sigma = 1)
    head = GaussianHead(1)
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[0.8], [0.0]]))
        head.proj.bias.copy_(torch.tensor([0.0, np.log(np.expm1(1.0 - EPS))]))
    S, K, x0 = 5_000, 10, 2.0
    x, paths = torch.full((S, 1), x0), []
    for _ in range(K):  # ancestral sampling: each draw is the next step's input
        distribution = head(x[:, :, None])  # (S, T=1, H=1) -> Normal over (S, 1)
        torch.testing.assert_close(distribution.scale, torch.ones(S, 1))
        x = distribution.sample()  # (S, 1)
        paths.append(x)
    lower, upper = prediction_interval(torch.stack(paths, -1), coverage=0.8)  # (S, B=1, K) -> (1, K) each

    fresh, x = [], torch.full((S,), x0)
    for _ in range(K):
        x = 0.8 * x + torch.randn(S)
        fresh.append(x)
    fresh = torch.stack(fresh, -1)  # (S, K)
    coverage = ((fresh >= lower) & (fresh <= upper)).float().mean(0)  # (K,)
    assert ((coverage > 0.75) & (coverage < 0.85)).all(), coverage
