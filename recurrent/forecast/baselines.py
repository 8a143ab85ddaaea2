"""M4's statistical benchmarks: Naive, seasonal naive, Naive2 (seasonally adjusted naive) and Naive's 95% interval.

They follow the competition's own R code ("Benchmarks and Evaluation.R" in github.com/Mcompetitions/M4-methods,
written for the forecast package v8.2), so that on the Hourly subset they reproduce the published scores
(tests/forecast/test_baselines.py). Also a minimal reader for M4's wide CSV files.

Key: n in-sample length, h horizon, m seasonal period (24 for hourly), N series.
Every forecaster takes one in-sample series x (n,) and returns a forecast (h,).
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from recurrent.errors import UserError


def naive(x: np.ndarray, h: int) -> np.ndarray:
    """Naive (M4's "Naive 1"): the last observation, repeated h times."""
    x = _series(x, h)
    return np.full(h, x[-1])  # (h,)


def seasonal_naive(x: np.ndarray, h: int, m: int) -> np.ndarray:
    """Seasonal naive: the last full season, repeated: yhat_{n+j} = x_{n+j-m*ceil(j/m)}."""
    x = _series(x, h, m)
    return np.resize(x[-m:], h)  # np.resize repeats the season cyclically: (h,)


def naive2(x: np.ndarray, h: int, m: int) -> np.ndarray:
    """Naive2: naive on the seasonally adjusted series, re-seasonalised.

    If `seasonality_test` finds the series seasonal, it is divided by the seasonal indices of a classical
    multiplicative decomposition (`seasonal_indices`); the last adjusted value is carried forward and multiplied by
    the indices of the next h positions of the cycle. A non-seasonal series gets the plain naive forecast.
    """
    x = _series(x, h, m)
    n = len(x)
    if m <= 1 or not seasonality_test(x, m):
        return naive(x, h)
    s = seasonal_indices(x, m)  # (m,); position t of the series has index s[t % m]
    level = x[-1] / s[(n - 1) % m]  # the last deseasonalised value
    return level * s[(n + np.arange(h)) % m]  # (h,)


def naive_interval(x: np.ndarray, h: int, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Naive's central prediction interval, as R's forecast::naive computes it (M4's Naive interval benchmark).

    A random walk: the one-step error variance is the mean squared first difference, sigma^2 = mean_t (x_t -
    x_{t-1})^2 (no mean removed, n - 1 differences: forecast's lagwalk), and the j-step error has sd sigma sqrt(j).
    Returns (lower, upper), each (h,): x_n -+ z sigma sqrt(j), z the normal's (1 + level) / 2 quantile.
    """
    x = _series(x, h)
    if not 0 < level < 1:
        raise UserError(f"level must be in (0, 1), got {level}")
    if len(x) < 2:
        raise UserError(f"the naive interval needs at least 2 observations, got {len(x)}")
    z = NormalDist().inv_cdf(0.5 + level / 2)  # 1.96 for 95%
    sigma = np.sqrt(np.mean(np.diff(x) ** 2))
    half = z * sigma * np.sqrt(np.arange(1, h + 1))  # (h,)
    return x[-1] - half, x[-1] + half


def seasonality_test(x: np.ndarray, m: int) -> bool:
    """M4's 90% test for seasonality: |r_m| > 1.645 sqrt((1 + 2 sum_{k<m} r_k^2) / n), r_k the lag-k autocorrelation.

    The limit is Bartlett's standard error of r_m under an MA(m - 1). Series shorter than 3m are not tested (False),
    as in M4's code.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if m <= 1 or n < 3 * m:
        return False
    r = acf(x, m)  # (m + 1,): r[0] = 1
    limit = 1.645 * np.sqrt((1 + 2 * np.sum(r[1:m] ** 2)) / n)
    return bool(abs(r[m]) > limit)


def acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelations r_0..r_max_lag (max_lag + 1,), as R's acf:

        r_k = sum_t (x_t - mean)(x_{t+k} - mean) / sum_t (x_t - mean)^2
    """
    d = np.asarray(x, dtype=np.float64) - np.mean(x)
    denom = np.dot(d, d)
    if denom == 0:
        raise UserError("the autocorrelation of a constant series is undefined")
    return np.array([np.dot(d[: len(d) - k], d[k:]) / denom for k in range(max_lag + 1)])  # (max_lag + 1,)


def seasonal_indices(x: np.ndarray, m: int) -> np.ndarray:
    """Seasonal indices (m,) of a classical multiplicative decomposition, as R's decompose(type="multiplicative").

    The trend is a centred moving average of order m (a 2 x m MA for even m: weights 1/2, 1, ..., 1, 1/2 over m);
    index i is the mean of x_t / trend_t over the positions t = i mod m where the trend exists, and the indices are
    normalised to mean 1. Position 0 is the first observation.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2 * m:
        raise UserError(f"a seasonal decomposition needs at least 2 seasons ({2 * m} observations), got {n}")
    weights = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    half = len(weights) // 2
    trend = np.convolve(x, weights, mode="valid")  # (n - 2 half,): the centred MA at positions half .. n - 1 - half
    ratio = x[half : n - half] / trend
    position = np.arange(half, n - half) % m
    s = np.array([ratio[position == i].mean() for i in range(m)])  # (m,)
    return s / s.mean()


def _series(x: np.ndarray, h: int, m: int = 1) -> np.ndarray:
    """Check one in-sample series (n,) and the horizon; return x as float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise UserError(f"the in-sample series must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UserError(f"the in-sample series must be finite, got {np.sum(~np.isfinite(x))} NaN or inf values")
    if not (isinstance(h, (int, np.integer)) and h >= 1):
        raise UserError(f"the horizon h must be an integer >= 1, got {h!r}")
    if not (isinstance(m, (int, np.integer)) and 1 <= m <= len(x)):
        raise UserError(f"the seasonal period m must be an integer in 1..{len(x)} (the series length), got {m!r}")
    return x

