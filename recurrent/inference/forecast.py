"""A trained forecaster (`recurrent train forecast`), and forecasting every series of a file from the end of its data.

    forecaster = load_forecaster("runs/hourly")
    series = forecaster.read("series.csv").series          # read as the run was trained; step and features checked
    out = forecaster.forecast(series, levels=(0.1, 0.5, 0.9), num_samples=200, seed=0)
    out.quantiles[i, :, 1]                                 # series i's median, (H,), data units
    out.times[i]                                           # its H future timestamps (or step indices)
    series = [series_from_lists("a", [3.0, None, 4.5])]    # in-memory series (a server's request), checked

Forecasting runs in fp32, as training does (a bf16 value keeps 3 digits). A series shorter than the model's past (`past_length`: context + largest lag, or window) is padded at its start
with missing values, which the model masks as it masks any missing value (`Batch.observed`); without timestamps
the padding is a whole number of seasons, so the season feature keeps its phase. A model with an embedding of the
series id forecasts only the ids it was trained on.

Key: N series, H horizon, Q quantile levels, P past steps the model reads.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from recurrent.errors import UserError
from recurrent.forecast.data import Batch, Read, Series, last_windows, read_series, time_features
from recurrent.inference.common import load_best, log
from recurrent.models.forecaster import ForecasterConfig, build


def forecaster_from_meta(meta: dict) -> nn.Module:
    """The model a forecast run's model.json describes (JSON has a list where the config has the lags' tuple)."""
    return build(ForecasterConfig(**{**meta["model"], "lags": tuple(meta["model"]["lags"])}))


def quantile_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """The levels, each in (0, 1), sorted and distinct, with the median added: what `forecast` computes."""
    levels = [float(q) for q in levels]
    bad = [q for q in levels if not 0 < q < 1]  # NaN fails this too
    if bad:
        raise UserError(f"quantile levels must lie in (0, 1), got {bad[0]}")
    return tuple(sorted({round(q, 6) for q in levels} | {0.5}))


class Forecasts(NamedTuple):
    ids: list[str]
    levels: tuple[float, ...]  # (Q,) increasing, 0.5 among them
    quantiles: np.ndarray  # (N, H, Q) float64, data units; increasing along Q
    times: list[np.ndarray]  # N arrays (H,): datetime64[s] timestamps, or int64 step indices without timestamps

    def median(self) -> np.ndarray:
        """(N, H)"""
        return self.quantiles[..., self.levels.index(0.5)]

    def at(self, level: float) -> np.ndarray:
        """(N, H): the quantile of one of `levels`."""
        return self.quantiles[..., self.levels.index(round(level, 6))]


@dataclass
class Forecaster:
    """A trained forecaster with what its run recorded: horizon, season, the series ids, the data's step."""

    model: nn.Module  # build()'s: past_length, quantiles(batch, levels, generator, num_samples) -> (B, H, Q)
    meta: dict  # model.json: recurrent.forecast.task.ForecastTask.meta

    @property
    def horizon(self) -> int:
        return self.meta["horizon"]

    @property
    def season(self) -> int:
        return self.meta["season"]

    @property
    def name(self) -> str:
        return f"recurrent {self.meta['model']['architecture']}"

    def read(self, path, what: str = "--data") -> Read:
        """A file's series, read in the run's format, with the step and the features the model was trained on."""
        read = read_series(path, self.meta["format"])
        self.check_step(read.step, read.series[0].timestamps is not None, f"{what} {path}")
        return read

    def check_step(self, step: np.timedelta64 | None, timed: bool, what: str) -> None:
        """UserError unless data with (timed) or without timestamps, stepping `step`, is what the run was trained
        on: its calendar features depend on the step."""
        trained = self.meta["step"]
        if trained is not None and not timed:
            raise UserError(f"{what} has no timestamps, but the run was trained on data with a step of "
                            f"{trained}: its calendar features need them")
        if trained is None and timed:
            raise UserError(f"{what} has timestamps, but the run was trained on data without them")
        if trained is not None and step is not None and str(step) != trained:
            raise UserError(f"{what} steps {step}, but the run was trained on data stepping {trained}")

    def check_features(self, series: Series) -> None:
        """UserError unless the series gives the model's number of time features (calendar, season, covariates)."""
        F = self.meta["model"]["num_features"]
        found = time_features(series.part(0, 1), self.season).shape[1]
        if found != F:
            raise UserError(f"{series.where}: series {series.id!r} gives {found} time features and covariates per "
                            f"step, but the model was trained with {F}: use data with the same columns")

    @torch.no_grad()
    def forecast(self, series: list[Series], levels: Sequence[float], num_samples: int = 200, seed: int = 0,
                 future: list[Series] | None = None, batch_size: int = 64) -> Forecasts:
        """The quantiles at `levels` (and the median) of the `horizon` steps after each series. `future` (the
        next horizon of each series, recurrent.forecast.data.split's test parts) supplies covariates and
        timestamps; without it, the timestamps continue by the step. The draws come from one generator seeded
        with `seed`, so the same call gives the same numbers."""
        if not series:
            raise UserError("no series to forecast")
        if num_samples < 1:
            raise UserError(f"the number of sample paths must be >= 1, got {num_samples}")
        levels = quantile_levels(levels)
        H, P = self.horizon, self.model.past_length
        if future is None and any(s.covariates is not None for s in series):
            raise UserError(f"{series[0].where}: the series have covariates; forecasting needs their values over the "
                            f"next {H} steps (score a file with its future: recurrent evaluate RUN --data history.csv "
                            f"--test future.csv)")
        self.check_features(series[0])
        rows = self._rows(series)
        padded = self._pad(series, P)
        device = next(self.model.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        out = []
        for start, batch in zip(range(0, len(series), batch_size),
                                last_windows(padded, P, H, batch_size, self.season, future)):
            if rows is not None:  # the rows of the id embedding, not positions in this file
                batch = batch._replace(series=torch.tensor(rows[start:start + batch_size]))
            batch = Batch(*(t.to(device) for t in batch))
            with torch.autocast(device.type, enabled=False):  # fp32 even inside a caller's bf16 autocast: bf16
                #   keeps 3 digits of a value, and torch's Student-t and gamma samplers have no bf16 kernels
                q = self.model.quantiles(batch, levels, generator, num_samples=num_samples)  # (B, H, Q)
            out.append(q.float().cpu().numpy().astype(np.float64))
        times = [future_times(s, H) if future is None else _times(f, len(s)) for s, f in
                 zip(series, future or series)]
        return Forecasts([s.id for s in series], levels, np.concatenate(out), times)

    def _rows(self, series: list[Series]) -> list[int] | None:
        """Each series' row in the id embedding (None without one); an id training never saw is a UserError."""
        if not self.meta["model"]["embedding_size"]:
            return None
        row = {name: i for i, name in enumerate(self.meta["ids"])}
        unknown = [s for s in series if s.id not in row]
        if unknown:
            s = unknown[0]
            raise UserError(f"{s.where}: series {s.id!r} is not one the model was trained on ({len(unknown)} such "
                            f"series): it embeds each training series' id, so it forecasts only those")
        return [row[s.id] for s in series]

    def _pad(self, series: list[Series], P: int) -> list[Series]:
        """Each series with missing values before its start, where it has fewer than P steps."""
        short = [s for s in series if len(s) < P]
        if short:
            log(f"{len(short)} series have fewer than the {P} steps the model reads (such as {short[0].id!r}, "
                f"{len(short[0])} steps): padded at their start with missing values")
        return [pad_start(s, P - len(s), self.season) if len(s) < P else s for s in series]


def load_forecaster(run_dir, device: str = "cpu") -> Forecaster:
    """The best model of a `recurrent train forecast` run, checked (recurrent.inference.common.load_best)."""
    model, meta = load_best(run_dir, "forecast", forecaster_from_meta, device)
    if model.past_length != meta["past_length"]:
        raise UserError(f"{run_dir}: model.json's past_length is {meta['past_length']}, but its model reads "
                        f"{model.past_length} past steps")
    return Forecaster(model, meta)


def series_from_lists(id: str, values: Sequence[float | None], timestamps: Sequence[str] | None = None,
                      where: str = "<memory>") -> Series:
    """A Series from Python lists, as a server receives them: None (or NaN) for a missing value, and optional
    ISO 8601 timestamps, increasing by one step (seconds, or whole calendar months when every timestamp falls on
    the first of a month, as read_series steps). A UserError naming `where` for anything else.

        s = series_from_lists("a", [1.0, None, 3.5], ["2024-01-01T00:00", "2024-01-01T01:00", "2024-01-01T02:00"])
        forecaster.check_step(s.step, True, "series a")
        forecaster.forecast([s], levels=(0.1, 0.9))
    """
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)  # (T,)
    with np.errstate(over="ignore"):
        bad = np.flatnonzero(np.isinf(array.astype(np.float32)))  # inf, or too large for float32
    if len(bad):
        raise UserError(f"{where}: value {values[bad[0]]!r} at index {bad[0]} is not finite in float32")
    if not len(array):
        raise UserError(f"{where}: series {id!r} has no values")
    if timestamps is None:
        return Series(id, array.astype(np.float32), where=where)
    if len(timestamps) != len(array):
        raise UserError(f"{where}: {len(timestamps)} timestamps for {len(array)} values: give one per value")
    times = []
    for i, text in enumerate(timestamps):
        try:
            times.append(np.datetime64(str(text).strip(), "s"))
        except ValueError:
            raise UserError(f"{where}: timestamp {text!r} at index {i} is not an ISO 8601 date or time, such as "
                            f"2024-01-31 or 2024-01-31T13:00") from None
    t = np.array(times, dtype="datetime64[s]")  # (T,)
    monthly = bool((t == t.astype("datetime64[M]")).all())
    gaps = np.diff(t.astype("datetime64[M]") if monthly else t)  # (T-1,)
    back = np.flatnonzero(t[1:] <= t[:-1])
    if len(back):
        raise UserError(f"{where}: timestamp {t[back[0] + 1]} at index {back[0] + 1} does not come after "
                        f"{t[back[0]]}: timestamps must increase")
    odd = np.flatnonzero(gaps != gaps[0]) if len(gaps) else []
    if len(odd):
        j = odd[0] + 1
        raise UserError(f"{where}: timestamps step {gaps[j - 1]} at index {j} but {gaps[0]} before: steps must "
                        f"be regular (give null for a missing value)")
    return Series(id, array.astype(np.float32), t, None, gaps[0] if len(gaps) else None, where)


def pad_start(s: Series, n: int, season: int = 1) -> Series:
    """The series after at least n missing values (a whole number of seasons without timestamps, so the season
    position t mod season keeps its phase), their timestamps stepping back from the first, and covariates as at
    the first step."""
    if s.timestamps is None and season > 1:
        n = -(-n // season) * season
    timestamps = None if s.timestamps is None else _shift(s.timestamps[0], s.step, np.arange(-n, 0))
    covariates = None if s.covariates is None else np.concatenate([np.repeat(s.covariates[:1], n, 0), s.covariates])
    return Series(s.id, np.concatenate([np.full(n, np.nan, np.float32), s.values]),
                  None if timestamps is None else np.concatenate([timestamps, s.timestamps]), covariates, s.step,
                  s.where)


def future_times(s: Series, horizon: int) -> np.ndarray:
    """(horizon,) the timestamps after the series' last (by its step), or the step indices len(s), len(s) + 1..."""
    if s.timestamps is None:
        return np.arange(len(s), len(s) + horizon)
    if s.step is None:
        raise UserError(f"{s.where}: series {s.id!r} has one timestamp: no step to continue it by")
    return _shift(s.timestamps[-1], s.step, np.arange(1, horizon + 1))


def _times(future: Series, length: int) -> np.ndarray:
    return future.timestamps if future.timestamps is not None else np.arange(length, length + len(future))


def _shift(t: np.datetime64, step: np.timedelta64, k: np.ndarray) -> np.ndarray:
    """t + k * step (k (n,) ints), whole calendar months for a step in months."""
    if np.datetime_data(step.dtype)[0] == "M":
        return (t.astype("datetime64[M]") + k * step).astype("datetime64[s]")
    return t + k * step
