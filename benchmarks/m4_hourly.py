"""M4 Hourly (414 series, horizon 48, season 24): the competition's baselines, statsforecast's AutoETS and AutoTheta,
and our forecasters, fitted on the same split and scored in one table as M4 scores them (sMAPE, MASE, OWA against
Naive2; MSIS and coverage of the 95% intervals where a method gives them; the weighted quantile loss of ours), with
each method's fit seconds (ours: training).

    python benchmarks/m4_hourly.py                       # the baselines, and AutoETS/AutoTheta (minutes)
    python benchmarks/m4_hourly.py --methods naive2,snaive --series 50    # a smoke run
    pip install 'recurrent[forecast-bench]'              # statsforecast, for AutoETS and AutoTheta

Published on this subset (../shared/data/m4/SOURCE.md): Naive2 sMAPE 18.383 MASE 2.395; seasonal naive 13.912 /
1.193 (OWA 0.627); ES-RNN, the M4 winner, 9.328 / 0.893 (OWA 0.440); MSIS: Naive 71.245, ETS 17.487, ES-RNN 7.928.

--models trains our forecasters (`recurrent train forecast`, recurrent/forecast/task.py) on Hourly-train.csv, each
for its seconds, with the last 48 hours held out for validation; the best checkpoint then forecasts the test horizon
from the end of each training series (recurrent/inference/forecast.py): the median, and the 2.5% and 97.5%
quantiles (DeepAR: of --samples sample paths; MQ-RNN: its own quantiles).

    python benchmarks/m4_hourly.py --models mqrnn:1800          # the issue's budget: 30 minutes of CPU
    python benchmarks/m4_hourly.py --models deepar:600,mqrnn:1800 --methods naive2,snaive,naive
"""
from __future__ import annotations

import time

import numpy as np
from common import SHARED_DATA, parser

from recurrent.forecast.compare import WQL_LEVELS, Forecast, baselines, format_table, run, score, statsforecast_methods
from recurrent.forecast.data import read_series
from recurrent.forecast.task import TrainForecastConfig, train_forecast
from recurrent.inference.forecast import load_forecaster
from recurrent.train.loop import flat_replace

H, M = 48, 24  # M4 Hourly's horizon and seasonal period


# Each architecture's settings for M4 Hourly (flags of `recurrent train forecast`): MQ-RNN reads a week (168 hours)
# at each of its 96 forks, 64 units; DeepAR keeps its defaults (40 units, DeepAR's lags).
SETTINGS = {
    "mqrnn": dict(architecture="mqrnn", window=168, hidden_size=64, batch_size=64, lr=3e-3, schedule="cosine"),
    "deepar": dict(architecture="deepar"),
}


def ours(args, architecture: str, seconds: float, train: list, test: list) -> Forecast:
    """Train one forecaster for `seconds` (the budget, not epochs, ends it), then forecast each test horizon from the
    end of its training series with the best checkpoint."""
    config = flat_replace(TrainForecastConfig(), data=f"{args.data}/Hourly-train.csv", horizon=H, season=M,
                          out=f"{args.out}-{architecture}", overwrite=True, max_time=seconds, epochs=1_000_000,
                          eval_every=args.eval_every, eval_samples=50, progress=False, seed=args.seed,
                          **SETTINGS[architecture])
    start = time.perf_counter()
    run_dir = train_forecast(config)
    trained = time.perf_counter() - start
    forecaster = load_forecaster(run_dir)
    levels = (0.025, *WQL_LEVELS, 0.975)
    q = forecaster.forecast(train, levels, num_samples=args.samples, seed=args.seed, future=test).quantiles
    q = q.transpose(2, 0, 1)  # (Q, N, H)
    return Forecast(q[levels.index(0.5)], (q[0], q[-1]), q[1:-1], trained)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default=str(SHARED_DATA / "m4"), help="folder with Hourly-train.csv, Hourly-test.csv")
    p.add_argument("--methods", default="naive2,snaive,naive,auto_ets,auto_theta")
    p.add_argument("--series", type=int, default=0, help="score only the first N series (0: all 414)")
    p.add_argument("--models", default="", help="our forecasters and their training seconds, e.g. mqrnn:1800,"
                   f"deepar:600 (architectures: {', '.join(SETTINGS)}; none: leave them out)")
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
    forecasts = {name: run(methods[name], insample, [s.id for s in train], name) for name in chosen}
    for spec in filter(None, args.models.split(",")):
        architecture, _, seconds = spec.partition(":")
        forecasts[f"recurrent {architecture}"] = ours(args, architecture, float(seconds or 600), train, test)
    print(f"M4 Hourly: {len(y)} series, horizon {H}, season {M}")
    print(format_table(score(insample, y, forecasts, M)))


if __name__ == "__main__":
    main()
