"""M4 Hourly (414 series, horizon 48, season 24): the competition's baselines and statsforecast's AutoETS and
AutoTheta, fitted on the same split and scored in one table as M4 scores them (sMAPE, MASE, OWA against Naive2;
MSIS and coverage of the 95% intervals where a method gives them), with each method's fit seconds.

    python benchmarks/m4_hourly.py                       # the baselines, and AutoETS/AutoTheta (minutes)
    python benchmarks/m4_hourly.py --methods naive2,snaive --series 50    # a smoke run
    pip install 'recurrent[forecast-bench]'              # statsforecast, for AutoETS and AutoTheta

Published on this subset (../shared/data/m4/SOURCE.md): Naive2 sMAPE 18.383 MASE 2.395; seasonal naive 13.912 /
1.193 (OWA 0.627); ES-RNN, the M4 winner, 9.328 / 0.893 (OWA 0.440); MSIS: Naive 71.245, ETS 17.487, ES-RNN 7.928.
With --train-seconds N, our DeepAR forecaster (`recurrent train forecast`, recurrent/forecast/task.py) trains on
Hourly-train.csv for N seconds (its last 48 hours held out for validation), then forecasts the test horizon from
the end of each training series: the median of --samples sample paths, and their 2.5% and 97.5% quantiles.

    python benchmarks/m4_hourly.py --train-seconds 1800       # the issue's budget: 30 minutes of CPU
"""
from __future__ import annotations

import time

import numpy as np
from common import SHARED_DATA, parser

import torch

from recurrent.checkpoint import load_checkpoint
from recurrent.forecast.compare import baselines, statsforecast_methods
from recurrent.forecast.data import last_windows, read_series
from recurrent.forecast.metrics import coverage, msis, score_table
from recurrent.forecast.task import TrainForecastConfig, train_forecast
from recurrent.models.forecaster import Forecaster, ForecasterConfig
from recurrent.train.loop import flat_replace

H, M = 48, 24  # M4 Hourly's horizon and seasonal period


def ours(args, train: list, test: list) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], float]:
    """Train the forecaster for --train-seconds (the budget, not epochs, ends it), then forecast each test horizon from the end of its training
    series with the best checkpoint: (median (N, H), (2.5%, 97.5%) quantiles, training seconds)."""
    config = flat_replace(TrainForecastConfig(), data=f"{args.data}/Hourly-train.csv", horizon=H, season=M,
                          out=args.out, overwrite=True, max_time=args.train_seconds, epochs=1_000_000,
                          eval_every=args.eval_every,
                          eval_samples=50, progress=False, seed=args.seed)
    start = time.perf_counter()
    run = train_forecast(config)
    seconds = time.perf_counter() - start
    tensors, meta = load_checkpoint(run, finite=True)
    model = Forecaster(ForecasterConfig(**{**meta["model"], "lags": tuple(meta["model"]["lags"])}))
    model.load_state_dict(tensors)
    model.eval()
    generator, paths = torch.Generator().manual_seed(args.seed), []
    for batch in last_windows(train, model.past_length, H, 64, M, test):
        paths.append(model.sample(batch, args.samples, generator).numpy())  # (S, B, H)
    paths = np.concatenate(paths, axis=1).astype(np.float64)  # (S, N, H)
    return np.median(paths, 0), tuple(np.quantile(paths, q, axis=0) for q in (0.025, 0.975)), seconds


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED_DATA / "m4"), help="folder with Hourly-train.csv, Hourly-test.csv")
    p.add_argument("--methods", default="naive2,snaive,naive,auto_ets,auto_theta")
    p.add_argument("--series", type=int, default=0, help="score only the first N series (0: all 414)")
    p.add_argument("--train-seconds", type=float, default=0, help="train our forecaster this long (0: leave it out)")
    p.add_argument("--eval-every", type=int, default=500, help="steps between our forecaster's validations")
    p.add_argument("--samples", type=int, default=200, help="sample paths per series for our forecasts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-m4-hourly")
    args = p.parse_args()
    train = read_series(f"{args.data}/Hourly-train.csv").series
    test = read_series(f"{args.data}/Hourly-test.csv").series
    if args.series:
        train, test = train[:args.series], test[:args.series]
    insample = [s.values.astype(np.float64) for s in train]  # (n_i,) each
    y = np.stack([s.values for s in test]).astype(np.float64)  # (N, H)

    methods = {**baselines(H, M), **statsforecast_methods(H, M)}
    chosen = [m for m in args.methods.split(",") if m in methods]
    if "naive2" not in chosen:
        chosen.insert(0, "naive2")  # OWA's reference
    forecasts, intervals, seconds = {}, {}, {}
    for name in chosen:
        start = time.perf_counter()
        outs = [methods[name](x) for x in insample]
        seconds[name] = time.perf_counter() - start
        forecasts[name] = np.stack([point for point, _ in outs])  # (N, H)
        if outs[0][1] is not None:
            intervals[name] = tuple(np.stack([interval[i] for _, interval in outs]) for i in (0, 1))
    if args.train_seconds:
        name = "recurrent deepar"
        forecasts[name], intervals[name], seconds[name] = ours(args, train, test)
        chosen.append(name)
    scores = score_table(insample, y, forecasts, M)

    print(f"M4 Hourly: {len(y)} series, horizon {H}, season {M}")
    print("| method | sMAPE | MASE | OWA | MSIS | coverage 95% | fit s |\n|---|---:|---:|---:|---:|---:|---:|")
    for name in chosen:
        s = scores[name]
        if name in intervals:
            lower, upper = intervals[name]
            band = f"{np.mean(msis(insample, y, lower, upper, M)):.3f} | {np.mean(coverage(y, lower, upper)):.3f}"
        else:
            band = "– | –"
        print(f"| {name} | {s.smape:.3f} | {s.mase:.3f} | {s.owa:.3f} | {band} | {seconds[name]:.1f} |")


if __name__ == "__main__":
    main()
