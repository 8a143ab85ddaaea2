"""`recurrent evaluate RUN --data history.csv [--test future.csv]` for a forecaster: one table, as M4 scores it.

    recurrent evaluate runs/m4 --data Hourly-train.csv --test Hourly-test.csv      # M4: the next horizon, by id
    recurrent evaluate runs/hourly --data series.csv           # holds out the last horizon of each series
    recurrent evaluate runs/hourly --data series.csv --baselines naive2,snaive,naive,auto_ets,auto_theta

    | method | sMAPE | MASE | OWA | MSIS | coverage 95% | wQL | seconds |
    |---|---:|---:|---:|---:|---:|---:|---:|
    | naive2 | 18.383 | 2.395 | 1.000 | – | – | – | 0.21 |
    ...

Our model's row is last: the median of --samples sample paths is the point forecast, the 2.5% and 97.5% quantiles
the 95% interval (MSIS, coverage), and its quantiles at 0.1, ..., 0.9 give the mean weighted quantile loss (wQL,
GluonTS's mean_wQuantileLoss, a CRPS estimate). The reference methods (recurrent/forecast/compare.py) see the same
histories. OWA is relative to Naive2, always scored. Horizon and season are the run's. A series with a missing
value in its history or horizon, no longer than the season, or constant at the season's period cannot be scored
as M4 scores: it is left out, with a note on stderr.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from recurrent.cli.forecast import check_new_file, plot_choice
from recurrent.errors import UserError
from recurrent.forecast import compare
from recurrent.forecast.data import Series
from recurrent.inference.common import log
from recurrent.inference.forecast import future_times, load_forecaster

INTERVAL = (0.025, 0.975)  # the 95% interval M4 scores


def evaluate(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("evaluating a forecaster needs --data FILE (and --test FILE, or its last horizon is held out)")
    methods = parse_methods(args.baselines)
    if args.plot:
        check_new_file("--plot", args.plot, ".png", args.overwrite)
    elif args.plot_series:
        raise UserError("--plot-series chooses the series --plot draws: give --plot PNG too")
    if args.precision == "bf16":
        log("forecasting runs in fp32, as training does: --precision bf16 is ignored")
    forecaster = load_forecaster(args.run, args.device)
    H, m = forecaster.horizon, forecaster.season
    series = forecaster.read(args.data).series
    if args.test:
        history, future = match_test(series, forecaster.read(args.test, "--test").series, H, args.test)
    else:
        history, future = hold_out(series, H)
    history, future = scorable(history, future, m)
    insample = [s.values.astype(np.float64) for s in history]  # (n_i,) each
    y = np.stack([f.values for f in future]).astype(np.float64)  # (N, H)
    ids = [s.id for s in history]
    plotted = [ids.index(name) for name in plot_choice(args.plot_series, ids, args.data)] if args.plot else []

    references = {**compare.baselines(H, m), **(compare.statsforecast_methods(H, m)
                                                 if set(methods) & set(compare.STATSFORECAST) else {})}
    forecasts = {name: compare.run(references[name], insample, ids, name) for name in methods if name in references}
    start = time.perf_counter()
    ours = forecaster.forecast(history, (*INTERVAL, *compare.WQL_LEVELS), args.samples, args.seed, future)
    seconds = time.perf_counter() - start
    forecasts[forecaster.name] = compare.Forecast(
        ours.median(), tuple(ours.at(q) for q in INTERVAL),
        np.stack([ours.at(q) for q in compare.WQL_LEVELS]), seconds)
    source = f"{args.test} after {args.data}" if args.test else f"the last {H} steps of {args.data}"
    paths = f"; {args.samples} sample paths" if forecaster.meta["model"]["architecture"] == "deepar" else ""
    print(f"{len(y)} series, horizon {H}, season {m}, scored on {source}{paths}")
    print(compare.format_table(compare.score(insample, y, forecasts, m)))
    if args.plot:
        from recurrent.forecast.plot import plot_forecasts

        plot_forecasts(args.plot, [history[i] for i in plotted], [ours.times[i] for i in plotted],
                       ours.quantiles[plotted], ours.levels, truth=[y[i] for i in plotted], season=m)
        print(f"wrote {args.plot}")
    return 0


def parse_methods(text: str) -> list[str]:
    """--baselines naive2,snaive -> the methods to score, Naive2 first (OWA's reference) whether named or not."""
    known = compare.CHEAP + compare.STATSFORECAST
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise UserError(f"--baselines: unknown method {unknown[0]!r}; choose from {','.join(known)}")
    return ["naive2", *(name for name in dict.fromkeys(chosen) if name != "naive2")]


def match_test(history: list[Series], test: list[Series], horizon: int, path) -> tuple[list[Series], list[Series]]:
    """Each history series and the first `horizon` steps of the --test series of the same id; with timestamps,
    the test's must follow the history's by its step."""
    by_id = {t.id: t for t in test}
    missing = [s for s in history if s.id not in by_id]
    if missing:
        s = missing[0]
        raise UserError(f"{path} has no series {s.id!r} (of {s.where}; {len(missing)} series missing): --test must "
                        f"hold the next {horizon} steps of every series of --data")
    future = []
    for s in history:
        t = by_id[s.id]
        if len(t) < horizon:
            raise UserError(f"{t.where}: series {t.id!r} has {len(t)} steps, fewer than the horizon {horizon}")
        t = t.part(0, horizon)
        if s.timestamps is not None and s.step is not None:
            expected = future_times(s, 1)[0]
            if t.timestamps[0] != expected:
                raise UserError(f"{t.where}: series {t.id!r} starts at {t.timestamps[0]}, but its history ends at "
                                f"{s.timestamps[-1]}: the test must start at {expected}")
        if (s.covariates is None) != (t.covariates is None):
            raise UserError(f"{t.where}: series {t.id!r} has covariates in only one of --data and --test")
        future.append(t)
    return history, future


def hold_out(series: list[Series], horizon: int) -> tuple[list[Series], list[Series]]:
    """recurrent.forecast.data.split's (history, last horizon), leaving out (with a note) series too short to
    keep a history."""
    short = [s for s in series if len(s) <= horizon]
    if short:
        log(f"left out {len(short)} series with no more than the horizon ({horizon}) steps, such as "
            f"{short[0].id!r} ({short[0].where})")
    kept = [s for s in series if len(s) > horizon]
    if not kept:
        raise UserError(f"no series is longer than the horizon {horizon}: nothing to score")
    return [s.part(0, len(s) - horizon) for s in kept], [s.part(len(s) - horizon) for s in kept]


def scorable(history: list[Series], future: list[Series], season: int) -> tuple[list[Series], list[Series]]:
    """The pairs M4's metrics can score: finite history and horizon, a history longer than the season, and a
    non-zero MASE scale (not constant at the season's period). The others are left out with a note on stderr."""
    reasons = {}
    for s, f in zip(history, future):
        if np.isnan(s.values).any() or np.isnan(f.values).any():
            reasons[s.id] = "a missing value"
        elif len(s) <= season:
            reasons[s.id] = f"no more than the season ({season}) steps of history"
        elif not np.abs(s.values[season:] - s.values[:-season]).any():
            reasons[s.id] = f"a history constant at period {season}"
    if reasons:
        first = next(iter(reasons))
        log(f"left out {len(reasons)} series M4's metrics cannot score, such as {first!r} ({reasons[first]})")
    kept = [i for i, s in enumerate(history) if s.id not in reasons]
    if not kept:
        raise UserError("no series can be scored (see the notes above)")
    return [history[i] for i in kept], [future[i] for i in kept]

