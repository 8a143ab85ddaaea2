"""Time series for forecasting: read many series, hold out a horizon, and cut training windows for one global
model (DeepAR, Salinas et al. 2020).

    read = read_series("series.csv")                  # long (id, timestamp, value, covariates...) or M4 wide
    train, test = split(read.series, horizon=48)      # the last 48 steps of every series are held out
    fit, valid = split(train, horizon=48)             # validation: the last 48 steps of the training part
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)   # one generator per epoch: resume is exact
    for batch in windows(fit, context=168, horizon=48, batch_size=32, generator=g, season=24): ...
    for batch in last_windows(train, context=168, horizon=48, batch_size=64, future=test): ...

Two file formats, with a header row; `read_series` tells them apart by the header:
    long  one observation per row: `id,timestamp,value` and optional covariate columns (every other column).
          Names default to the first present of ID_NAMES, TIME_NAMES, VALUE_NAMES; without an id column the
          file is one series, and without a timestamp column the rows are in time order.
    wide  M4: a header `"V1","V2",...`, then one series per row: its id, then its values, padded at the end with
          empty fields (trailing empty fields are padding, not missing values).
An empty value or "nan" is a missing value: kept as NaN, masked in windows (`observed`), counted in
`Read.missing`. Anything else that is not a finite number is a UserError naming `file:line`, as are a repeated
or out-of-order timestamp in a series and an irregular step.

Key: B batch, C context (past steps), H horizon (future steps), T time, F time features, K covariates.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from recurrent.data.text import read_text
from recurrent.errors import UserError

ID_NAMES = ("id", "unique_id", "item_id", "series")
TIME_NAMES = ("timestamp", "ds", "date", "time")
VALUE_NAMES = ("value", "y", "target")
FORMATS = ("auto", "long", "wide")
HOUR, DAY = np.timedelta64(3600, "s"), np.timedelta64(86400, "s")


@dataclass
class Series:
    id: str
    values: np.ndarray  # (T,) float32, NaN where missing
    timestamps: np.ndarray | None = None  # (T,) datetime64[s], evenly spaced by `step`
    covariates: np.ndarray | None = None  # (T, K) float32, known in the past and the future
    step: np.timedelta64 | None = None  # seconds ("s") or calendar months ("M"); None without timestamps
    where: str = "<memory>"  # "file:line" of the series' first row, for error messages

    def __len__(self) -> int:
        return len(self.values)

    def part(self, start: int, stop: int | None = None) -> Series:
        """The steps start..stop-1, as a series of its own (same id, step and origin)."""
        cut = slice(start, stop)
        return Series(self.id, self.values[cut], None if self.timestamps is None else self.timestamps[cut],
                      None if self.covariates is None else self.covariates[cut], self.step, self.where)


class Read(NamedTuple):
    series: list[Series]  # in file order
    missing: int  # NaN values over all series (empty or "nan" fields)
    step: np.timedelta64 | None  # the common step, None without timestamps
    covariates: list[str]  # covariate column names, in the order of Series.covariates' columns


# --- reading files ------------------------------------------------------------------------------------------


def read_series(path, format: str = "auto", id_col: str | None = None, time_col: str | None = None,
                value_col: str | None = None, covariate_cols: list[str] | None = None) -> Read:
    """The series of a long or M4-wide CSV file (see the module docstring). format="auto" reads a header of
    V1, V2, ... as wide, anything else as long. Column names apply to the long format; covariate_cols=None takes
    every column that is not the id, timestamp or value."""
    if format not in FORMATS:
        raise UserError(f"format must be one of {FORMATS}, got {format!r}")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory: expected a CSV file")
    rows = _rows(path)
    header = [name.strip() for name in rows[0][1]]
    if format == "auto":
        format = "wide" if all(re.fullmatch(r"V\d+", name) for name in header) else "long"
    if format == "wide":
        return _read_wide(path, rows[1:])
    return _read_long(path, header, rows[1:], id_col, time_col, value_col, covariate_cols)


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, fields) of each non-blank CSV row, the header first."""
    reader = csv.reader(read_text(path).splitlines())
    try:
        rows = [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: cannot read this row: {e}") from None
    if len(rows) < 2:
        raise UserError(f"{path} holds no series: expected a header row and at least one row of data")
    return rows


def _number(text: str, where: str, what: str = "value") -> float:
    """A field as a float: NaN for an empty field or "nan"; a UserError for anything else not finite."""
    text = text.strip()
    if not text:
        return float("nan")
    try:
        x = float(text)
    except ValueError:
        raise UserError(f"{where}: {what} {text!r} is not a number (leave it empty, or write nan, if it is "
                        f"missing)") from None
    if np.isinf(np.float32(x)):
        raise UserError(f"{where}: {what} {text!r} is not finite in float32")
    return x


def _read_wide(path: Path, rows) -> Read:
    series = []
    for line, row in rows:
        where = f"{path}:{line}"
        fields = row[1:]
        while fields and not fields[-1].strip():  # padding after a short series
            fields = fields[:-1]
        if not row[0].strip():
            raise UserError(f"{where}: empty series id in the first column")
        if not fields:
            raise UserError(f"{where}: series {row[0].strip()!r} has no values")
        values = np.array([_number(f, where) for f in fields], dtype=np.float32)
        series.append(Series(row[0].strip(), values, where=where))
    _check_unique_ids(series)
    return Read(series, _missing(series), None, [])


def _read_long(path: Path, header: list[str], rows, id_col, time_col, value_col, covariate_cols) -> Read:
    id_i = _pick(path, header, id_col, ID_NAMES, required=False)
    time_i = _pick(path, header, time_col, TIME_NAMES, required=False)
    value_i = _pick(path, header, value_col, VALUE_NAMES, required=True)
    if covariate_cols is None:
        cov_i = [i for i in range(len(header)) if i not in (id_i, time_i, value_i)]
    else:
        cov_i = [_pick(path, header, name, (), required=True) for name in covariate_cols]
    groups: dict[str, list] = {}  # id -> [(line, timestamp, value, covariates)], in file order
    for line, row in rows:
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise UserError(f"{where}: expected {len(header)} columns, got {len(row)}")
        key = path.stem if id_i is None else row[id_i].strip()
        if not key:
            raise UserError(f"{where}: empty series id in column {header[id_i]!r}")
        when = None if time_i is None else _timestamp(row[time_i], where)
        covs = [_number(row[i], where, f"covariate {header[i]!r}") for i in cov_i]
        if np.isnan(covs).any():
            raise UserError(f"{where}: a covariate is missing: covariates must be known at every step")
        groups.setdefault(key, []).append((line, when, _number(row[value_i], where), covs))
    series = [_long_series(path, key, group, time_i is not None, bool(cov_i)) for key, group in groups.items()]
    step = _common_step(path, series, groups) if time_i is not None else None
    for s in series:
        s.step = step
    return Read(series, _missing(series), step, [header[i] for i in cov_i])


def _pick(path: Path, header: list[str], name: str | None, defaults: tuple[str, ...], required: bool) -> int | None:
    """The index of column `name`, or of the first default name present in the header (None if absent)."""
    if name is not None:
        if name not in header:
            raise UserError(f"{path}: no column named {name!r}; the header has {header}")
        return header.index(name)
    present = [n for n in defaults if n in header]
    if present:
        return header.index(present[0])
    if required:
        raise UserError(f"{path}: no value column: name one, or use one of {list(defaults)}; the header has "
                        f"{header}")
    return None


def _timestamp(text: str, where: str) -> np.datetime64:
    try:
        return np.datetime64(text.strip(), "s")
    except ValueError:
        raise UserError(f"{where}: timestamp {text.strip()!r} is not an ISO 8601 date or time, such as "
                        f"2024-01-31 or 2024-01-31T13:00") from None


def _long_series(path: Path, key: str, group: list, timed: bool, has_covariates: bool) -> Series:
    """One series from its rows; with timestamps, they must increase (no repeats) row after row."""
    lines = [line for line, _, _, _ in group]
    values = np.array([v for _, _, v, _ in group], dtype=np.float32)  # (T,)
    covariates = np.array([c for _, _, _, c in group], dtype=np.float32) if has_covariates else None  # (T, K)
    timestamps = None
    if timed:
        timestamps = np.array([t for _, t, _, _ in group], dtype="datetime64[s]")  # (T,)
        back = np.flatnonzero(timestamps[1:] <= timestamps[:-1])
        if len(back):
            j = back[0] + 1
            problem = "repeats" if timestamps[j] == timestamps[j - 1] else "comes before"
            raise UserError(f"{path}:{lines[j]}: timestamp {timestamps[j]} of series {key!r} {problem} the one "
                            f"on line {lines[j - 1]} ({timestamps[j - 1]}): a series' rows must be in time order")
    return Series(key, values, timestamps, covariates, None, f"{path}:{lines[0]}")


def _common_step(path: Path, series: list[Series], groups: dict) -> np.timedelta64 | None:
    """The one step between consecutive timestamps of every series: seconds, or whole calendar months when
    every timestamp falls on the first of a month (monthly, quarterly, yearly data)."""
    monthly = all((s.timestamps == s.timestamps.astype("datetime64[M]")).all() for s in series)
    step, first = None, None
    for s in series:
        t = s.timestamps.astype("datetime64[M]") if monthly else s.timestamps
        gaps = np.diff(t)
        if not len(gaps):
            continue
        lines = [line for line, _, _, _ in groups[s.id]]
        odd = np.flatnonzero(gaps != gaps[0])
        if len(odd):
            j = odd[0] + 1
            raise UserError(f"{path}:{lines[j]}: series {s.id!r} steps {_duration(gaps[j - 1])} here but "
                            f"{_duration(gaps[0])} before: steps must be regular (write a row with an empty "
                            f"value for a missing time)")
        if step is None:
            step, first = gaps[0], s
        elif gaps[0] != step:
            raise UserError(f"{path}:{lines[1]}: series {s.id!r} steps {_duration(gaps[0])}, but series "
                            f"{first.id!r} steps {_duration(step)}: all series must share one frequency")
    return step


def _duration(step: np.timedelta64) -> str:
    """np.timedelta64 -> "1 hour", "30 minutes", "3 months"."""
    if np.datetime_data(step.dtype)[0] == "M":
        n, unit = int(step.astype(int)), "month"
    else:
        seconds = int(step.astype("timedelta64[s]").astype(int))
        unit, size = next((u, s) for u, s in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))
                          if seconds % s == 0)
        n = seconds // size
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _check_unique_ids(series: list[Series]) -> None:
    seen = {}
    for s in series:
        if s.id in seen:
            raise UserError(f"{s.where}: series id {s.id!r} repeats the one on {seen[s.id]}")
        seen[s.id] = s.where


def _missing(series: list[Series]) -> int:
    return int(sum(np.isnan(s.values).sum() for s in series))


# --- held-out parts, in time --------------------------------------------------------------------------------


def split(series: list[Series], horizon: int) -> tuple[list[Series], list[Series]]:
    """(train, test): each series without its last `horizon` steps, and those steps. Split in time, never at
    random; split the train part again for validation. A series must keep at least one step for training."""
    if horizon < 1:
        raise UserError(f"horizon must be at least 1, got {horizon}")
    for s in series:
        if len(s) <= horizon:
            raise UserError(f"{s.where}: series {s.id!r} has {len(s)} values, too few to hold out a horizon of "
                            f"{horizon}")
    return [s.part(0, len(s) - horizon) for s in series], [s.part(len(s) - horizon) for s in series]


# --- features: scale, calendar, season, lags ----------------------------------------------------------------


def mean_scale(values: Tensor, observed: Tensor, min_scale: float = 1e-8) -> Tensor:
    """(B, C) values and observed mask -> (B,) scale: the mean |value| over the observed context, as GluonTS's
    MeanScaler (DeepAR's paper uses 1 + mean, which leaves series of small magnitude unscaled). A context that
    is all zeros or all missing (mean below min_scale) has nothing to scale by and keeps scale 1. Divide the
    values the network sees by the scale, and multiply its outputs back."""
    weights = observed.to(values.dtype)
    mean = (values.abs() * weights).sum(1) / weights.sum(1).clamp(min=1)
    return torch.where(mean > min_scale, mean, torch.ones_like(mean))


def calendar_names(step: np.timedelta64) -> tuple[str, ...]:
    """The calendar features that vary at this step, as GluonTS's time_features_from_frequency_str picks them."""
    if np.datetime_data(step.dtype)[0] == "M":
        return ("month_of_year",) if int(step.astype(int)) % 12 else ()
    if step < HOUR:
        return ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year")
    if step < DAY:
        return ("hour_of_day", "day_of_week", "day_of_month", "day_of_year")
    if step < 7 * DAY:
        return ("day_of_week", "day_of_month", "day_of_year")
    return ("day_of_month", "day_of_year")


def calendar_features(timestamps: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """(T,) datetime64 -> (T, F) float32, each feature scaled to [-0.5, 0.5] as GluonTS does (hour / 23 - 0.5;
    Monday is day 0 of the week)."""
    t = timestamps.astype("datetime64[s]")
    days = t.astype("datetime64[D]")
    parts = {
        "minute_of_hour": lambda: (t.astype("datetime64[m]") - t.astype("datetime64[h]")).astype(int) / 59,
        "hour_of_day": lambda: (t.astype("datetime64[h]") - days).astype(int) / 23,
        "day_of_week": lambda: (days.astype(np.int64) + 3) % 7 / 6,  # 1970-01-01 was a Thursday (3)
        "day_of_month": lambda: (days - t.astype("datetime64[M]")).astype(int) / 30,
        "day_of_year": lambda: (days - t.astype("datetime64[Y]")).astype(int) / 365,
        "month_of_year": lambda: t.astype("datetime64[M]").astype(int) % 12 / 11,
    }
    columns = [parts[name]() - 0.5 for name in names]
    return np.stack(columns, axis=1).astype(np.float32) if columns else np.zeros((len(t), 0), np.float32)


def time_features(series: Series, season: int | None = None) -> np.ndarray:
    """(T, F) float32: the calendar features (with timestamps) or, without them and with a season, the position
    in the season counted from the series' first step, (t mod season) / (season - 1) - 0.5; then the covariates."""
    if series.timestamps is not None:
        if series.step is None:
            raise UserError(f"{series.where}: series {series.id!r} has timestamps but no step (one value per series?)")
        columns = [calendar_features(series.timestamps, calendar_names(series.step))]
    elif season and season > 1:
        columns = [(np.arange(len(series)) % season / (season - 1) - 0.5)[:, None]]
    else:
        columns = [np.zeros((len(series), 0))]
    if series.covariates is not None:
        columns.append(series.covariates)
    return np.concatenate(columns, axis=1).astype(np.float32)


def default_lags(season: int, seasons: int = 3) -> list[int]:
    """DeepAR-style lags: 1..7, and one season either side of each of the first `seasons` multiples of it."""
    lags = set(range(1, 8))
    for k in range(1, seasons + 1):
        lags |= {k * season - 1, k * season, k * season + 1}
    return sorted(lag for lag in lags if lag > 0)


def lagged(values: Tensor, observed: Tensor, lags: list[int]) -> tuple[Tensor, Tensor]:
    """(B, T) values and mask -> (B, T, L) lagged values x[t - lag] and their mask. A lag that reaches before
    the window is 0 and unobserved: sample windows `max(lags)` steps longer to see every lag everywhere."""
    B, T = values.shape
    out = values.new_zeros(B, T, len(lags))
    mask = torch.zeros(B, T, len(lags), dtype=torch.bool, device=values.device)
    for j, lag in enumerate(lags):
        if lag < T:
            out[:, lag:, j] = values[:, : T - lag]
            mask[:, lag:, j] = observed[:, : T - lag]
    return out, mask


# --- windows ------------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    past: Tensor  # (B, C) values as read, 0 where missing
    future: Tensor  # (B, H) values as read, 0 where missing or beyond the data
    past_features: Tensor  # (B, C, F) time_features: calendar or season position, then covariates
    future_features: Tensor  # (B, H, F)
    observed: Tensor  # (B, C + H) bool: the value is there (False for NaN and for the unknown future)
    scale: Tensor  # (B,) mean_scale of the observed past
    series: Tensor  # (B,) long: each window's series, as an index into the list given
    start: Tensor  # (B,) long: each window's first past step, as an index into its series


def check_batch(batch: Batch, past: int, features: int, why: str) -> None:
    """A ValueError unless the batch holds `past` past steps (`why` says what makes them up) and `features`
    features a step."""
    if batch.past.shape[1] != past or batch.past_features.shape[-1] != features:
        raise ValueError(f"a batch must hold {past} past steps ({why}) and {features} features, got "
                         f"{batch.past.shape[1]} and {batch.past_features.shape[-1]}")


def windows(series: list[Series], context: int, horizon: int, batch_size: int, generator: torch.Generator,
            season: int | None = None, per_series: int = 1) -> Iterator[Batch]:
    """One epoch of training windows (context + horizon steps) from the given series, which should be training
    parts (`split`): no window reaches past their end. Each series gives `per_series` windows, each at a start
    drawn uniformly from all that fit; the windows come in a shuffled order, batch_size at a time (the last
    batch may be smaller). Every draw is made from `generator` before the first batch, so a fresh generator
    with the same seed gives the same epoch, bit for bit: seed one per epoch to resume exactly."""
    _check_windows(series, context, horizon, context + horizon, "training part")
    n_starts = torch.tensor([len(s) - context - horizon + 1 for s in series], dtype=torch.float64)  # (N,)
    which = torch.arange(len(series)).repeat(per_series)
    which = which[torch.randperm(len(which), generator=generator)]
    u = torch.rand(len(which), generator=generator, dtype=torch.float64)
    starts = (u * n_starts[which]).long()  # uniform in 0..n_starts-1
    features = [time_features(s, season) for s in series]
    for i in range(0, len(which), batch_size):
        picked = list(zip(which[i:i + batch_size].tolist(), starts[i:i + batch_size].tolist()))
        yield _batch(series, features, picked, context, horizon)


def last_windows(series: list[Series], context: int, horizon: int, batch_size: int, season: int | None = None,
                 future: list[Series] | None = None) -> Iterator[Batch]:
    """The last `context` steps of each series and the `horizon` after them, in order, to forecast from the end
    of the data. `future`, the test parts from `split`, supplies the values to score against and the
    covariates; without it the future is unobserved, and its calendar continues the timestamps by the step."""
    _check_windows(series, context, horizon, context, "history")
    if future is None:
        if any(s.covariates is not None for s in series):
            raise UserError("the series have covariates: forecasting needs their future values (pass future=)")
        future = [_unknown_future(s, horizon) for s in series]
    if len(future) != len(series) or any(len(f) != horizon or f.id != s.id for s, f in zip(series, future)):
        raise UserError(f"future must hold the next {horizon} steps of each series, in the same order")
    joined = [_join(s, f) for s, f in zip(series, future)]
    features = [time_features(s, season) for s in joined]
    picked = [(i, len(s) - context) for i, s in enumerate(series)]
    for i in range(0, len(picked), batch_size):
        yield _batch(joined, features, picked[i:i + batch_size], context, horizon)


def _check_windows(series: list[Series], context: int, horizon: int, needed: int, part: str) -> None:
    if context < 1 or horizon < 1:
        raise UserError(f"context and horizon must be at least 1, got {context} and {horizon}")
    if not series:
        raise UserError("no series to cut windows from")
    for s in series:
        if len(s) < needed:
            raise UserError(f"{s.where}: series {s.id!r} has {len(s)} values in its {part}, too few for a context "
                            f"of {context} and a horizon of {horizon}")


def _unknown_future(s: Series, horizon: int) -> Series:
    """`horizon` missing values after the series, with the timestamps it would have."""
    timestamps = None
    if s.timestamps is not None:
        if s.step is None:
            raise UserError(f"{s.where}: series {s.id!r} has timestamps but no step to continue them by")
        ahead = np.arange(1, horizon + 1)
        if np.datetime_data(s.step.dtype)[0] == "M":
            timestamps = (s.timestamps[-1].astype("datetime64[M]") + ahead * s.step).astype("datetime64[s]")
        else:
            timestamps = s.timestamps[-1] + ahead * s.step
    return Series(s.id, np.full(horizon, np.nan, np.float32), timestamps, None, s.step, s.where)


def _join(a: Series, b: Series) -> Series:
    """A series' history, then the steps after it."""

    def cat(x, y):
        return None if x is None else np.concatenate([x, y])

    return Series(a.id, cat(a.values, b.values), cat(a.timestamps, b.timestamps), cat(a.covariates, b.covariates),
                  a.step, a.where)


def _batch(series: list[Series], features: list[np.ndarray], picked: list[tuple[int, int]], context: int,
           horizon: int) -> Batch:
    """Stack the windows (series index, start) into tensors."""
    T = context + horizon
    values = torch.from_numpy(np.stack([series[i].values[s:s + T] for i, s in picked]))  # (B, T)
    feats = torch.from_numpy(np.stack([features[i][s:s + T] for i, s in picked]))  # (B, T, F)
    observed = ~values.isnan()  # (B, T)
    values = values.nan_to_num(0.0)
    return Batch(values[:, :context], values[:, context:], feats[:, :context], feats[:, context:], observed,
                 mean_scale(values[:, :context], observed[:, :context]),
                 torch.tensor([i for i, _ in picked]), torch.tensor([s for _, s in picked]))
