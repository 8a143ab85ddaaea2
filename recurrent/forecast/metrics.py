"""Forecast accuracy as the M4 competition scores it (sMAPE, MASE, OWA, MSIS; Makridakis, Spiliotis &
Assimakopoulos, IJF 2020, and the competition's guide), and the probabilistic scores DeepAR-style forecasters are
judged by (GluonTS's mean weighted quantile loss, and CRPS from sample paths).

Key: N series, h horizon, n in-sample length (may differ per series), m seasonal period, S sample paths,
Q quantile levels. Numpy in and out. y and forecasts are (h,) for one series or (N, h) for many; an in-sample
history is (n,) for one series or a sequence of N arrays (n_i,) for many. Per-series metrics average over the
horizon and return a float for (h,) or an array (N,) for (N, h); M4 then averages them over the series
(`score_table`). Samples and quantile forecasts carry their S or Q axis first: (S, *y.shape), (Q, *y.shape).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from recurrent.errors import UserError


def smape(y: np.ndarray, yhat: np.ndarray) -> np.ndarray | float:
    """Symmetric MAPE in percent: 200/h sum_t |y_t - yhat_t| / (|y_t| + |yhat_t|). A point where both are 0 scores 0."""
    y, yhat = _same_shape(y=y, yhat=yhat)
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(np.abs(y - yhat), denom, out=np.zeros_like(y), where=denom > 0)
    return _per_series(200 * ratio.mean(-1))


def mase(insample, y: np.ndarray, yhat: np.ndarray, m: int) -> np.ndarray | float:
    """Mean absolute scaled error: mean_t |y_t - yhat_t| / mean_{t>m} |x_t - x_{t-m}|, the in-sample mean absolute
    error of the seasonal naive forecast (m = 1: of the naive forecast)."""
    y, yhat = _same_shape(y=y, yhat=yhat)
    return _per_series(np.abs(y - yhat).mean(-1) / _scale_like(insample, y, m))


def owa(smape: float, mase: float, smape_naive2: float, mase_naive2: float) -> float:
    """Overall weighted average: the mean of sMAPE and MASE, each relative to Naive2's (M4's 1.0 reference)."""
    if smape_naive2 <= 0 or mase_naive2 <= 0:
        raise UserError(f"Naive2's sMAPE and MASE must be > 0, got {smape_naive2} and {mase_naive2}")
    return float((smape / smape_naive2 + mase / mase_naive2) / 2)


def msis(insample, y: np.ndarray, lower: np.ndarray, upper: np.ndarray, m: int,
         alpha: float = 0.05) -> np.ndarray | float:
    """Mean scaled interval score of a central (1 - alpha) interval [L, U], on MASE's scale:

        1/h sum_t [(U_t - L_t) + 2/alpha (L_t - y_t) 1{y_t < L_t} + 2/alpha (y_t - U_t) 1{y_t > U_t}] / scale
    """
    y, lower, upper = _same_shape(y=y, lower=lower, upper=upper)
    if not 0 < alpha < 1:
        raise UserError(f"alpha must be in (0, 1), got {alpha}")
    if np.any(lower > upper):
        raise UserError(f"lower must be <= upper everywhere, got lower > upper at {np.sum(lower > upper)} points")
    penalty = 2 / alpha * ((lower - y) * (y < lower) + (y - upper) * (y > upper))
    return _per_series((upper - lower + penalty).mean(-1) / _scale_like(insample, y, m))


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray | float:
    """The fraction of the horizon where L_t <= y_t <= U_t (M4's ACD is |mean coverage - 0.95|)."""
    y, lower, upper = _same_shape(y=y, lower=lower, upper=upper)
    return _per_series(((lower <= y) & (y <= upper)).mean(-1))


def quantile_loss(y: np.ndarray, q: np.ndarray, tau: float) -> float:
    """GluonTS's QuantileLoss of a tau-quantile forecast q, summed over all points: 2 sum |(y - q)(1{y <= q} - tau)|."""
    y, q = _same_shape(y=y, q=q)
    if not 0 < tau < 1:
        raise UserError(f"the quantile level tau must be in (0, 1), got {tau}")
    return float(2 * np.sum(np.abs((y - q) * ((y <= q) - tau))))


def mean_weighted_quantile_loss(y: np.ndarray, quantiles: np.ndarray, levels: Sequence[float]) -> float:
    """GluonTS's mean_wQuantileLoss: per level tau, QuantileLoss / sum |y| over all series and points, then the mean
    over the levels. quantiles is (Q, *y.shape), quantiles[i] the forecast of level levels[i]."""
    y = _values(y, "y")
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape != (len(levels), *y.shape):
        raise UserError(f"quantiles must have shape (Q, *y.shape) = {(len(levels), *y.shape)}, got {quantiles.shape}")
    total = np.sum(np.abs(y))
    if total == 0:
        raise UserError("the weighted quantile loss divides by sum |y|, got an all-zero target")
    return float(np.mean([quantile_loss(y, q, tau) / total for q, tau in zip(quantiles, levels)]))


def crps(y: np.ndarray, samples: np.ndarray) -> np.ndarray | float:
    """CRPS of the empirical distribution of S sample paths, per series: mean over the horizon of

        E|X - y| - 1/2 E|X - X'|,   X, X' drawn from the S samples (all S^2 pairs, so this is the exact CRPS of the
                                    samples' step CDF; it overstates the forecast's CRPS by about E|X - X'| / 2S).

    samples is (S, *y.shape). E|X - X'| uses the sorted samples: sum_{i,j} |x_i - x_j| = 2 sum_i (2i - S - 1) x_(i).
    """
    y = _values(y, "y")
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != y.ndim + 1 or samples.shape[1:] != y.shape or len(samples) == 0:
        raise UserError(f"samples must have shape (S, *y.shape) = (S, {', '.join(map(str, y.shape))}), "
                        f"got {samples.shape}")
    S = len(samples)
    spread = np.abs(samples - y).mean(0)  # E|X - y|: y.shape
    rank = (2 * np.arange(1, S + 1) - S - 1).reshape(-1, *[1] * y.ndim)  # (S, 1, ...)
    pairs = 2 * np.sum(rank * np.sort(samples, axis=0), axis=0) / S**2  # E|X - X'|: y.shape
    return _per_series((spread - pairs / 2).mean(-1))


class Scores(NamedTuple):
    """One method's scores over a set of series, as M4 reports them."""

    smape: float  # mean over series of the per-series sMAPE (percent)
    mase: float  # mean over series of the per-series MASE
    owa: float  # from these two means, relative to the reference method's


def score_table(insample, y: np.ndarray, forecasts: Mapping[str, np.ndarray], m: int,
                reference: str = "naive2") -> dict[str, Scores]:
    """Score each method's forecasts (N, h) against y (N, h) as M4 does: average the per-series sMAPE and MASE over
    all series, then OWA from those averages relative to `reference` (Naive2 in M4)."""
    if reference not in forecasts:
        raise UserError(f"the OWA reference {reference!r} must be one of the forecasts, got {sorted(forecasts)}")
    means = {name: (float(np.mean(smape(y, f))), float(np.mean(mase(insample, y, f, m))))
             for name, f in forecasts.items()}
    s0, m0 = means[reference]
    return {name: Scores(s, a, owa(s, a, s0, m0)) for name, (s, a) in means.items()}


def seasonal_scale(insample: Sequence[np.ndarray], m: int) -> np.ndarray:
    """MASE's scale per series (N,): mean_{t>m} |x_t - x_{t-m}| over each in-sample history (n_i,)."""
    if not (isinstance(m, (int, np.integer)) and m >= 1):
        raise UserError(f"the seasonal period m must be an integer >= 1, got {m!r}")
    scales = []
    for i, x in enumerate(insample):
        x = _values(x, "insample")
        if x.ndim != 1 or len(x) <= m:
            raise UserError(f"in-sample series {i} must be 1-D with more than m = {m} values, got shape {x.shape}")
        scale = np.abs(x[m:] - x[:-m]).mean()
        if scale == 0:
            raise UserError(f"in-sample series {i} repeats with period m = {m} (constant?): its MASE scale is 0")
        scales.append(scale)
    return np.array(scales)  # (N,)


def _scale_like(insample, y: np.ndarray, m: int) -> np.ndarray:
    """MASE's scale shaped to divide a per-series mean over the horizon: () for y (h,), (N,) for y (N, h)."""
    if y.ndim == 1:
        return seasonal_scale([insample], m)[0]
    if len(insample) != len(y):
        raise UserError(f"expected {len(y)} in-sample series (one per forecast row), got {len(insample)}")
    return seasonal_scale(insample, m)


def _same_shape(**arrays: np.ndarray) -> list[np.ndarray]:
    """Check that the arrays share one shape (h,) or (N, h) with h >= 1; return them as float64."""
    values = [_values(a, name) for name, a in arrays.items()]
    shapes = {name: v.shape for name, v in zip(arrays, values)}
    if len(set(shapes.values())) > 1:
        got = " and ".join(map(str, shapes.values()))
        raise UserError(f"{' and '.join(shapes)} must have the same shape, got {got}")
    shape = values[0].shape
    if len(shape) not in (1, 2) or shape[-1] == 0:
        raise UserError(f"forecasts must be (h,) or (N, h) with h >= 1, got shape {shape}")
    return values


def _values(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise UserError(f"{name} must be finite, got {np.sum(~np.isfinite(a))} NaN or inf values")
    return a


def _per_series(v: np.ndarray) -> np.ndarray | float:
    """A float for one series, an array (N,) for many."""
    return float(v) if np.ndim(v) == 0 else v
