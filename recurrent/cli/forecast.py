"""`recurrent forecast RUN --data series.csv --out forecasts.csv`: forecast every series of a file from the end of
its data with a run of `recurrent train forecast`, as quantiles of the next `horizon` steps.

    recurrent forecast runs/hourly --data series.csv --out forecasts.csv                 # q0.1, q0.5, q0.9
    recurrent forecast runs/hourly --data series.csv --quantiles 0.05,0.95 --samples 500 --seed 1 --out f.csv
    recurrent forecast runs/m4 --data Hourly-train.csv --out f.csv --plot f.png --plot-series H1,H2

The CSV is long, one row per series and future step: `id`, then `timestamp` (ISO 8601, continuing the data by its
step) or, for data without timestamps, `step` (the index continuing the series: a series of 700 values forecasts
steps 700, 701, ...), then one column per quantile level, `q0.1`, `q0.5`, ... (the median is always there). The
quantiles come from --samples sample paths drawn from a generator seeded by --seed: the same seed, the same file.
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from recurrent.cli.config import add_run_args, check_output
from recurrent.devices import resolve_device
from recurrent.errors import UserError
from recurrent.inference.common import log
from recurrent.inference.forecast import Forecasts, load_forecaster, quantile_levels
from recurrent.runs import read_task
from recurrent.validation import at_least, flag

PLOTTED = 4  # series --plot draws without --plot-series: the first few


def register(subparsers) -> None:
    p = subparsers.add_parser("forecast", help="forecast every series of a file (a `recurrent train forecast` run)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train forecast`")
    p.add_argument("--data", required=True, help="the series to forecast from their end: a long CSV (id, timestamp, "
                   "value) or an M4 wide file, as the run was trained on")
    p.add_argument("--quantiles", default="0.1,0.5,0.9", type=levels_flag,
                   help="comma-separated quantile levels in (0, 1); the median is always added")
    p.add_argument("--samples", type=flag(int, **at_least(1)), default=200, help="sample paths per series")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample paths: the same seed, the same forecasts")
    p.add_argument("--batch-size", type=flag(int, **at_least(1)), default=64, help="series per batch")
    p.add_argument("--out", required=True, help="the CSV file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out (and --plot) if they exist")
    p.add_argument("--plot", metavar="PNG", help="also draw the forecasts of some series, with their history")
    p.add_argument("--plot-series", metavar="ID,ID", help=f"the series --plot draws (default: the first {PLOTTED})")
    add_run_args(p)
    p.set_defaults(func=run)


def levels_flag(text: str) -> tuple[float, ...]:
    """--quantiles 0.1,0.9 -> (0.1, 0.5, 0.9); argparse reports a ValueError as one line."""
    try:
        return quantile_levels([float(part) for part in text.split(",")])
    except (ValueError, UserError):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1) such as 0.1,0.5,0.9, got "
                                         f"{text!r}") from None


def check_new_file(flag_name: str, path, suffix: str, overwrite: bool) -> None:
    """check_output, and no silent overwrite: an existing file needs --overwrite."""
    check_output(flag_name, path, suffix)
    if Path(path).exists() and not overwrite:
        raise UserError(f"{flag_name} {str(path)!r} exists: pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    check_new_file("--out", args.out, ".csv", args.overwrite)  # before the model is loaded
    if args.plot_series and not args.plot:
        raise UserError("--plot-series chooses the series --plot draws: give --plot PNG too")
    if args.plot:
        check_new_file("--plot", args.plot, ".png", args.overwrite)
    task = read_task(args.run)
    if task != "forecast":
        raise UserError(f"{args.run} is a {task!r} run: recurrent forecast needs one of `recurrent train forecast`")
    resolve_device(args.device)  # a bad --device fails before the model is loaded
    if args.precision == "bf16":
        log("forecasting runs in fp32, as training does: --precision bf16 is ignored")
    forecaster = load_forecaster(args.run, args.device)
    series = forecaster.read(args.data).series
    plotted = plot_choice(args.plot_series, [s.id for s in series], args.data) if args.plot else []
    out = forecaster.forecast(series, args.quantiles, args.samples, args.seed, batch_size=args.batch_size)
    write_csv(args.out, out)
    print(f"wrote {args.out}: {len(out.ids)} series x {forecaster.horizon} steps, quantiles "
          f"{', '.join(f'{q:g}' for q in out.levels)}")
    if args.plot:
        from recurrent.forecast.plot import plot_forecasts

        keep = [out.ids.index(name) for name in plotted]
        plot_forecasts(args.plot, [series[i] for i in keep], [out.times[i] for i in keep], out.quantiles[keep],
                       out.levels, season=forecaster.season)
        print(f"wrote {args.plot}: {', '.join(plotted)}")
    return 0


def plot_choice(text: str | None, ids: list[str], data: str) -> list[str]:
    """--plot-series as a list of ids present in the data (default: the first PLOTTED)."""
    if not text:
        return ids[:PLOTTED]
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    missing = [name for name in chosen if name not in set(ids)]
    if missing or not chosen:
        raise UserError(f"--plot-series: {data} has no series {missing[0] if missing else text!r}; it has "
                        f"{ids[:5]}{' ...' if len(ids) > 5 else ''}")
    return chosen


def write_csv(path, out: Forecasts) -> None:
    """id, timestamp (or step), q<level>... : one row per series and step; written whole, then renamed into place."""
    timed = out.times[0].dtype.kind == "M"
    tmp = Path(f"{path}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "timestamp" if timed else "step", *(f"q{q:g}" for q in out.levels)])
            for name, times, q in zip(out.ids, out.times, out.quantiles):  # q (H, Q)
                for t, row in zip(times, q):
                    w.writerow([name, str(t) if timed else int(t), *(f"{x:.7g}" for x in row)])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
