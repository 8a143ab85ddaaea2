"""Reference forecasters to compare a model with, and the one table M4 scores them in.

The references forecast one in-sample series at a time: M4's statistical benchmarks (baselines.py) and, when
statsforecast is installed (`pip install 'recurrent[forecast-bench]'`), its AutoETS and AutoTheta.

    methods = {**baselines(48, 24), **statsforecast_methods(48, 24)}   # horizon, season
    point, interval = methods["naive"](x)           # x (n,) -> (h,), and (lower, upper) of the 95% interval or None
    forecasts = {name: run(methods[name], insample) for name in ("naive2", "snaive")}
    print(format_table(score(insample, y, forecasts, season=24)))

The table: sMAPE, MASE and OWA (relative to Naive2, M4's reference) of the point forecast; MSIS and coverage of the
95% interval where a method gives one; GluonTS's mean weighted quantile loss over the levels 0.1, ..., 0.9 (a
CRPS estimate) where a method gives quantiles; and each method's seconds (fit and forecast, all series).

Key: N series, n in-sample length (per series), h horizon, m seasonal period.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from recurrent.errors import UserError
from recurrent.forecast.baselines import naive, naive2, naive_interval, seasonal_naive
from recurrent.forecast.metrics import (
    coverage,
    mean_weighted_quantile_loss,
    msis,
    score_table,
)

CHEAP = ("naive2", "snaive", "naive")  # baselines.py: milliseconds
STATSFORECAST = ("auto_ets", "auto_theta")  # statsforecast's: seconds to minutes on M4 Hourly
WQL_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # GluonTS's mean_wQuantileLoss levels

Interval = tuple[np.ndarray, np.ndarray]  # (lower, upper)
Method = Callable[[np.ndarray], tuple[np.ndarray, Interval | None]]  # x (n,) -> point (h,), interval of (h,) or None


def baselines(horizon: int, season: int, level: float = 0.95) -> dict[str, Method]:
    """name -> forecast(x (n,)) -> (point (h,), (lower, upper) of the central `level` interval or None)."""
    return {
        "naive2": lambda x: (naive2(x, horizon, season), None),
        "snaive": lambda x: (seasonal_naive(x, horizon, season), None),
        "naive": lambda x: (naive(x, horizon), naive_interval(x, horizon, level)),
    }


def statsforecast_methods(horizon: int, season: int, level: float = 0.95) -> dict[str, Method]:
    """AutoETS and AutoTheta (season_length=season) with their central `level` intervals; empty, with a note on
    stderr, without statsforecast."""
    try:
        from statsforecast.models import AutoETS, AutoTheta
    except ImportError:
        print("statsforecast is not installed (pip install 'recurrent[forecast-bench]'): AutoETS and AutoTheta "
              "skipped", file=sys.stderr)
        return {}
    percent = round(100 * level, 6)
    percent = int(percent) if percent == int(percent) else percent  # statsforecast's keys: "lo-95", "lo-80.5"

    def fit(make):
        def forecast(x):
            out = make().forecast(y=x, h=horizon, level=[percent])
            return out["mean"], (out[f"lo-{percent}"], out[f"hi-{percent}"])
        return forecast

    return {"auto_ets": fit(lambda: AutoETS(season_length=season)),
            "auto_theta": fit(lambda: AutoTheta(season_length=season))}


class Forecast(NamedTuple):
    """One method's forecasts of N series."""

    point: np.ndarray  # (N, h)
    interval: Interval | None  # (lower, upper), each (N, h): the central 95% interval
    quantiles: np.ndarray | None  # (len(WQL_LEVELS), N, h): for the weighted quantile loss
    seconds: float


def run(method: Method, insample: Sequence[np.ndarray], ids: Sequence[str] | None = None, name: str = "") -> Forecast:
    """`method` on every in-sample series (n_i,), timed. A method failing on a series is a UserError naming it."""
    start = time.perf_counter()
    outs = []
    for i, x in enumerate(insample):
        try:
            outs.append(method(np.asarray(x, dtype=np.float64)))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001  statsforecast's own errors on a series it cannot fit
            raise UserError(f"{name or 'a method'} failed on series {ids[i] if ids else i}: {e}") from None
    seconds = time.perf_counter() - start
    point = np.stack([np.asarray(p, dtype=np.float64) for p, _ in outs])  # (N, h)
    interval = None
    if outs[0][1] is not None:
        interval = tuple(np.stack([np.asarray(band[k], dtype=np.float64) for _, band in outs]) for k in (0, 1))
    return Forecast(point, interval, None, seconds)


class Row(NamedTuple):
    method: str
    smape: float
    mase: float
    owa: float
    msis: float | None  # of the 95% interval
    coverage: float | None  # of the 95% interval
    wql: float | None  # mean weighted quantile loss over WQL_LEVELS
    seconds: float


def score(insample: Sequence[np.ndarray], y: np.ndarray, forecasts: dict[str, Forecast], season: int,
          reference: str = "naive2") -> list[Row]:
    """One row per method, in the order given, scored against y (N, h) as M4 does (metrics.score_table): every
    series must be finite, longer than the season, and not constant at its period (the caller picks them)."""
    scores = score_table(insample, y, {name: f.point for name, f in forecasts.items()}, season, reference)
    rows = []
    for name, f in forecasts.items():
        band, cover, wql = None, None, None
        if f.interval is not None:
            lower, upper = f.interval
            band = float(np.mean(msis(insample, y, lower, upper, season)))
            cover = float(np.mean(coverage(y, lower, upper)))
        if f.quantiles is not None:
            wql = mean_weighted_quantile_loss(y, f.quantiles, WQL_LEVELS)
        s = scores[name]
        rows.append(Row(name, s.smape, s.mase, s.owa, band, cover, wql, f.seconds))
    return rows


def format_table(rows: list[Row]) -> str:
    """A markdown table of the rows; "–" where a method gives no interval or quantiles."""

    def cell(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    lines = ["| method | sMAPE | MASE | OWA | MSIS | coverage 95% | wQL | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.method} | {r.smape:.3f} | {r.mase:.3f} | {r.owa:.3f} | {cell(r.msis)} | "
                     f"{cell(r.coverage)} | {cell(r.wql)} | {r.seconds:.2f} |")
    return "\n".join(lines)
