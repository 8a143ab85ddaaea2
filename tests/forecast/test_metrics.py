"""M4's metrics and the probabilistic scores (recurrent/forecast/metrics.py) against hand computations on tiny arrays,
OWA against the competition's published table, and the sample CRPS against the Gaussian closed form.

Key: N series, h horizon, S samples.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from recurrent.errors import UserError
from recurrent.forecast.metrics import (
    coverage,
    crps,
    mase,
    mean_weighted_quantile_loss,
    msis,
    owa,
    quantile_loss,
    score_table,
    smape,
)

X = np.array([1.0, 3, 2, 4, 3, 5])  # an in-sample series: |x_t - x_{t-1}| = 2,1,2,1,2 (mean 1.6); |x_t - x_{t-2}| = 1


def test_smape_by_hand():
    # |1-2|/(1+2) = 1/3, |2-2|/4 = 0, |3-1|/(3+1) = 1/2: 200/3 (1/3 + 0 + 1/2) = 500/9
    assert smape([1, 2, 3], [2, 2, 1]) == pytest.approx(500 / 9)
    assert smape([0, 1], [0, 1]) == 0  # 0/0 at a point where both are 0 scores 0
    assert smape([1, 1], [-1, -1]) == pytest.approx(200)  # the largest possible


def test_smape_many_series_is_per_series():
    y, yhat = np.array([[1, 2, 3], [4, 4, 4]]), np.array([[2, 2, 1], [4, 4, 4]])  # (N, h) = (2, 3)
    np.testing.assert_allclose(smape(y, yhat), [500 / 9, 0])


def test_mase_by_hand():
    # mean |y - yhat| = (|6-5| + |7-5|) / 2 = 1.5; scale 1.6 for m = 1 and 1 for m = 2
    assert mase(X, [6, 7], [5, 5], m=1) == pytest.approx(1.5 / 1.6)
    assert mase(X, [6, 7], [5, 5], m=2) == pytest.approx(1.5)
    # many series of different lengths: the second in-sample is 2X, so its scale doubles
    np.testing.assert_allclose(mase([X, 2 * X[:5]], [[6, 7], [6, 7]], [[5, 5], [5, 5]], m=2), [1.5, 0.75])


def test_msis_and_coverage_by_hand():
    y, lower, upper = [0, 5, 10], [1, 1, 1], [9, 9, 9]
    # width 8 everywhere; y = 0 is 1 below L and y = 10 is 1 above U, each penalised 2/0.05 * 1 = 40:
    # (48 + 8 + 48) / 3 = 104/3, over the scale 1 (m = 2)
    assert msis(X, y, lower, upper, m=2) == pytest.approx(104 / 3)
    assert msis(X, y, lower, upper, m=2, alpha=0.2) == pytest.approx((18 + 8 + 18) / 3)  # 2/0.2 = 10 per unit
    assert coverage(y, lower, upper) == pytest.approx(1 / 3)
    assert coverage([1, 9], [1, 1], [9, 9]) == 1  # the bounds are inside


def test_owa_reproduces_the_published_hourly_table():
    """OWA from the published Hourly sMAPE and MASE, relative to Naive2's (18.383, 2.395), as in SOURCE.md."""
    published = {  # method: (sMAPE, MASE, OWA), "Evaluation and Ranks.xlsx", Hourly
        "seasonal naive": (13.912, 1.193, 0.627),
        "Theta": (18.138, 2.455, 1.006),
        "RNN benchmark": (14.698, 3.048, 1.036),
        "ES-RNN": (9.328, 0.893, 0.440),
        "best (id 238)": (8.913, 0.801, 0.410),
    }
    for s, a, expected in published.values():
        assert round(owa(s, a, 18.383, 2.395), 3) == expected
    assert owa(10, 2, 20, 1) == pytest.approx((0.5 + 2) / 2)


def test_quantile_losses_by_hand():
    y = np.array([1.0, 2, 3])
    # tau = 0.9, q = 2: |(1-2)(1-0.9)| + 0 + |(3-2)(0-0.9)| = 0.1 + 0.9, times 2
    assert quantile_loss(y, [2, 2, 2], 0.9) == pytest.approx(2.0)
    # tau = 0.1, q = 1: 0 + |(2-1)(0-0.1)| + |(3-1)(0-0.1)| = 0.3, times 2 = 0.6
    assert quantile_loss(y, [1, 1, 1], 0.1) == pytest.approx(0.6)
    # weighted by sum |y| = 6, then the mean over the two levels: (0.6/6 + 2/6) / 2 = 13/60
    quantiles = np.array([[1, 1, 1], [2, 2, 2]])  # (Q, h)
    assert mean_weighted_quantile_loss(y, quantiles, [0.1, 0.9]) == pytest.approx(13 / 60)


def test_crps_by_hand():
    # samples {0, 2}, y = 1: E|X - y| = 1, E|X - X'| = (0 + 2 + 2 + 0)/4 = 1, so 1 - 1/2; the step CDF gives
    # the same: integral of (F - 1{x >= 1})^2 = 0.25 over [0, 1] + 0.25 over [1, 2]
    assert crps([1.0], [[0.0], [2.0]]) == pytest.approx(0.5)
    assert crps([1.0, 2.0], np.full((5, 2), 4.0)) == pytest.approx((3 + 2) / 2)  # point mass: the absolute error


def test_crps_from_samples_matches_the_gaussian_closed_form():
    """CRPS(N(mu, sigma^2), y) = sigma [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)], z = (y - mu) / sigma."""
    mu, sigma, S = 1.0, 2.0, 200_000
    y = np.array([[-1.0], [1.0], [1.5], [6.0]])  # (N, h) = (4, 1)
    samples = np.random.default_rng(0).normal(mu, sigma, size=(S, 4, 1))  # (S, N, h)
    z = (y[:, 0] - mu) / sigma
    Phi = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])
    phi = np.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    exact = sigma * (z * (2 * Phi - 1) + 2 * phi - 1 / math.sqrt(math.pi))  # 1.2049, 0.4674, 0.5170, 3.8796
    np.testing.assert_allclose(crps(y, samples), exact, rtol=0.005)


def test_score_table_averages_per_series_then_owa():
    insample = [X, 2 * X]  # scales (m = 2): 1 and 2
    y = np.array([[2.0, 2], [4, 4]])
    forecasts = {"naive2": np.array([[1.0, 1], [2, 2]]), "good": np.array([[2.0, 2], [3, 3]])}
    table = score_table(insample, y, forecasts, m=2)
    # naive2: sMAPE 200 (1/3) = 66.67 on both rows; MASE 1/1 and 2/2 -> means 66.67, 1
    # good: sMAPE 0 and 200 (1/7); MASE 0 and 1/2 -> means 100/7, 1/4; OWA (100/7 / (200/3) + 1/4) / 2
    assert table["naive2"] == pytest.approx((200 / 3, 1.0, 1.0))
    assert table["good"] == pytest.approx((100 / 7, 0.25, (3 / 14 + 0.25) / 2))


@pytest.mark.parametrize("call, words", [
    (lambda: smape([1, 2, 3], [1, 2]), "y and yhat must have the same shape, got (3,) and (2,)"),
    (lambda: smape([], []), "h >= 1, got shape (0,)"),
    (lambda: smape([1, np.nan], [1, 1]), "y must be finite, got 1 NaN"),
    (lambda: mase([5, 5, 5, 5], [1, 2], [1, 1], m=1), "in-sample series 0 repeats with period m = 1 (constant?)"),
    (lambda: mase([1, 2], [1, 2], [1, 1], m=2), "more than m = 2 values, got shape (2,)"),
    (lambda: mase(X, [1, 2], [1, 1], m=0), "m must be an integer >= 1, got 0"),
    (lambda: mase([X], [[1, 2], [1, 2]], [[1, 1], [1, 1]], m=1), "expected 2 in-sample series"),
    (lambda: msis(X, [1], [2], [1], m=1), "lower must be <= upper"),
    (lambda: msis(X, [1], [0], [2], m=1, alpha=1.5), "alpha must be in (0, 1), got 1.5"),
    (lambda: owa(10, 1, 0, 1), "Naive2's sMAPE and MASE must be > 0"),
    (lambda: quantile_loss([1], [1], 1.0), "tau must be in (0, 1), got 1.0"),
    (lambda: mean_weighted_quantile_loss([1, 2], [[1, 2]], [0.1, 0.9]), "(Q, *y.shape) = (2, 2), got (1, 2)"),
    (lambda: mean_weighted_quantile_loss([0, 0], [[1, 2]], [0.5]), "all-zero target"),
    (lambda: crps([1.0, 2.0], np.zeros((5, 3))), "(S, *y.shape) = (S, 2), got (5, 3)"),
    (lambda: score_table([X], np.ones((1, 2)), {"a": np.ones((1, 2))}, m=1), "reference 'naive2' must be one of"),
])
def test_bad_input_raises_a_user_error_naming_the_values(call, words):
    with pytest.raises(UserError) as error:
        call()
    assert words in str(error.value)
    assert "\n" not in str(error.value)
