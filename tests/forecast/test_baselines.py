"""M4's benchmarks (recurrent/forecast/baselines.py): hand computations on tiny series, and the competition's published
Hourly scores reproduced from ../shared/data/m4 (skipped when the data is absent).

Key: n in-sample length, h horizon (48 for hourly), m seasonal period (24), N series (414).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recurrent.errors import UserError
from recurrent.forecast.baselines import (acf, naive, naive2, naive_interval, seasonal_indices, seasonal_naive,
                                          seasonality_test)
from recurrent.forecast.data import read_series
from recurrent.forecast.metrics import msis, score_table

M4 = Path(__file__).resolve().parents[3] / "shared" / "data" / "m4"
H, M = 48, 24  # M4 Hourly: horizon and seasonal period


def test_naive_and_seasonal_naive_by_hand():
    x = np.array([1.0, 2, 3, 4, 5])
    np.testing.assert_array_equal(naive(x, 3), [5, 5, 5])
    np.testing.assert_array_equal(seasonal_naive(x, 5, m=2), [4, 5, 4, 5, 4])  # the last season (4, 5), repeated


def test_acf_by_hand():
    # x = 1,2,3,4: deviations -1.5,-0.5,0.5,1.5, sum of squares 5; r1 = (0.75 - 0.25 + 0.75)/5, r2 = (-0.75 - 0.75)/5
    np.testing.assert_allclose(acf([1, 2, 3, 4], 2), [1, 0.25, -0.3])


def test_seasonality_test_by_hand():
    # 1,3,1,3,... of length n: deviations -1,+1,..., so r1 = -(n-1)/n and r2 = (n-2)/n
    # n = 10: r2 = 0.8 < 1.645 sqrt((1 + 2 (9/10)^2)/10) = 0.842: not seasonal (at a 1.282 limit it would be)
    assert not seasonality_test(np.resize([1.0, 3], 10), 2)
    # n = 12: r2 = 0.833 > 1.645 sqrt((1 + 2 (11/12)^2)/12) = 0.777: seasonal
    assert seasonality_test(np.resize([1.0, 3], 12), 2)
    # a spike every 8 hours: seasonal at n = 24 = 3m; at n = 23 (r8 = 0.514 above its limit 0.372) it is too short
    # to be tested, as in M4
    spikes = np.array([1.0] * 7 + [50])
    assert seasonality_test(np.resize(spikes, 24), 8)
    assert not seasonality_test(np.resize(spikes, 23), 8)


def test_seasonal_indices_by_hand():
    # m = 2: the 2x2 MA is (x_{t-1} + 2 x_t + x_{t+1}) / 4 = 2 at t = 1..4; ratios 3/2, 1/2, 3/2, 1/2 at
    # positions 1, 0, 1, 0: indices (0.5, 1.5), already of mean 1
    np.testing.assert_allclose(seasonal_indices([1.0, 3, 1, 3, 1, 3], 2), [0.5, 1.5])
    # m = 3 (odd): a plain MA of 3 = 4 everywhere; ratios 3/4, 6/4, 3/4 at positions 1, 2, 0 (and again)
    np.testing.assert_allclose(seasonal_indices([3.0, 3, 6, 3, 3, 6, 3], 3), [0.75, 0.75, 1.5])
    # x = 1,2,4,2,1,2,4, m = 3: MA 7/3, 8/3, 7/3, 5/3, 7/3 at t = 1..5; ratios 6/7, 3/2, 6/7, 3/5, 6/7 at positions
    # 1, 2, 0, 1, 2; means (6/7, 51/70, 33/28) = (120, 102, 165)/140, of mean 129/140: normalised, (120, 102, 165)/129
    np.testing.assert_allclose(seasonal_indices([1.0, 2, 4, 2, 1, 2, 4], 3), np.array([120, 102, 165]) / 129)


def test_naive2_on_an_exactly_seasonal_series_is_the_seasonal_naive():
    s = np.array([0.5, 0.8, 1.2, 1.5])  # seasonal indices of mean 1
    x = 10 * np.resize(s, 4 * 10 + 1)  # a constant level of 10 times the season; n = 41 ends on position 0
    np.testing.assert_allclose(seasonal_indices(x, 4), s)
    np.testing.assert_allclose(naive2(x, 6, 4), 10 * s[[1, 2, 3, 0, 1, 2]])  # the cycle continues from position 1
    np.testing.assert_allclose(naive2(x, 6, 4), seasonal_naive(x, 6, 4))


def test_naive2_of_a_non_seasonal_series_is_naive():
    x = np.resize([1.0, 3], 6)  # not seasonal by the test above
    np.testing.assert_array_equal(naive2(x, 3, 2), naive(x, 3))


def test_naive_interval_by_hand():
    # x = 1,3,2: differences 2, -1; sigma^2 = (4 + 1)/2 = 2.5; the j-step half-width is 1.95996 sqrt(2.5 j)
    lower, upper = naive_interval([1.0, 3, 2], 2)
    half = 1.959963984540054 * np.sqrt(2.5 * np.array([1, 2]))
    np.testing.assert_allclose(lower, 2 - half)
    np.testing.assert_allclose(upper, 2 + half)


@pytest.mark.parametrize("call, words", [
    (lambda: naive([1.0, 2], 0), "the horizon h must be an integer >= 1, got 0"),
    (lambda: naive([], 3), "non-empty 1-D array, got shape (0,)"),
    (lambda: seasonal_naive([1.0, 2], 3, m=5), "m must be an integer in 1..2 (the series length), got 5"),
    (lambda: naive2([1.0, np.inf, 2], 3, 1), "finite, got 1 NaN or inf"),
    (lambda: naive_interval([1.0, 2], 3, level=95), "level must be in (0, 1), got 95"),
    (lambda: acf([2.0, 2, 2], 1), "constant series"),
    (lambda: seasonal_indices([1.0, 2, 3], 2), "at least 2 seasons (4 observations), got 3"),
])
def test_bad_input_raises_a_user_error_naming_the_values(call, words):
    with pytest.raises(UserError) as error:
        call()
    assert words in str(error.value)


@pytest.fixture(scope="module")
def hourly():
    """(train, y): 414 in-sample series (700..960 hours each), and their next 48 hours (414, 48)."""
    if not (M4 / "Hourly-train.csv").is_file():
        pytest.skip(f"M4 Hourly data not found at {M4} (see ../shared/data/m4/SOURCE.md)")
    train = read_series(M4 / "Hourly-train.csv").series  # the wide format, its end padding dropped
    test = read_series(M4 / "Hourly-test.csv").series
    assert [s.id for s in train] == [s.id for s in test] and len(train) == 414
    return [s.values.astype(np.float64) for s in train], np.stack([s.values for s in test]).astype(np.float64)


def test_m4_hourly_published_scores(hourly):
    """Published Hourly scores ("Evaluation and Ranks.xlsx"): Naive2 18.383 / 2.395, seasonal naive 13.912 / 1.193,
    Naive 43.003 / 11.608, to the published 3 decimals."""
    train, y = hourly
    forecasts = {
        "naive2": np.stack([naive2(x, H, M) for x in train]),  # (N, h)
        "seasonal naive": np.stack([seasonal_naive(x, H, M) for x in train]),
        "naive": np.stack([naive(x, H) for x in train]),
    }
    table = score_table(train, y, forecasts, m=M)
    assert (round(table["naive2"].smape, 3), round(table["naive2"].mase, 3)) == (18.383, 2.395)
    assert (round(table["seasonal naive"].smape, 3), round(table["seasonal naive"].mase, 3)) == (13.912, 1.193)
    assert (round(table["naive"].smape, 3), round(table["naive"].mase, 3)) == (43.003, 11.608)
    # Published OWA 0.627 is what the rounded table gives ((13.912/18.383 + 1.193/2.395)/2 = 0.62745); from the
    # unrounded means it is 0.62750, a hair above the rounding boundary
    assert abs(table["seasonal naive"].owa - 0.627) < 0.00051
    assert round(table["naive"].owa, 3) == 3.593


def test_m4_hourly_naive_interval_msis(hourly):
    """Published 95% MSIS of Naive on Hourly: 71.245 (M4's PI benchmark, R's forecast::naive intervals)."""
    train, y = hourly
    lower, upper = (np.stack(b) for b in zip(*[naive_interval(x, H) for x in train]))  # (N, h) each
    assert round(float(np.mean(msis(train, y, lower, upper, m=M))), 3) == 71.245
