"""Series readers on small generated files (malformed ones included, each error naming file:line), the M4 Hourly
file when present, splits in time, calendar features against Python's datetime, scaling, and training windows
(shapes, never past the training part, the same epoch from the same seed)."""
from __future__ import annotations

import csv
import re
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrent.errors import UserError
from recurrent.forecast.data import (Series, calendar_features, calendar_names, default_lags, lagged,
                                     last_windows, mean_scale, read_series, split, time_features, windows)

M4 = Path("/work/shared/data/m4")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def fails(path: Path, line: int, message: str, **kwargs):
    """read_series(path) raises a UserError that starts with path:line and contains message."""
    with pytest.raises(UserError, match=re.escape(f"{path}:{line}: ") + ".*" + re.escape(message)):
        read_series(path, **kwargs)


# --- long format --------------------------------------------------------------------------------------------


def test_long_file_with_two_interleaved_series_a_covariate_and_missing_values(tmp_path):
    path = write(tmp_path / "s.csv", "id,timestamp,value,price\n"
                                     "a,2024-01-01 00:00,1.5,10\n"
                                     "b,2024-01-01T00:00,7,20\n"
                                     "a,2024-01-01 01:00,,11\n"
                                     "b,2024-01-01 01:00,nan,21\n"
                                     "a,2024-01-01 02:00,-2,12\n")
    read = read_series(path)
    a, b = read.series
    assert (a.id, b.id) == ("a", "b")
    np.testing.assert_array_equal(a.values, np.array([1.5, np.nan, -2], np.float32))
    np.testing.assert_array_equal(b.values, np.array([7, np.nan], np.float32))
    assert a.values.dtype == np.float32
    np.testing.assert_array_equal(a.timestamps, np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T02"],
                                                         dtype="datetime64[s]"))
    np.testing.assert_array_equal(a.covariates, [[10], [11], [12]])
    assert read.missing == 2
    assert read.step == np.timedelta64(3600, "s") and a.step == b.step == read.step
    assert read.covariates == ["price"]
    assert (a.where, b.where) == (f"{path}:2", f"{path}:3")


def test_long_file_default_names_ds_y_and_named_columns(tmp_path):
    path = write(tmp_path / "s.csv", "unique_id,ds,y\nx,2024-01-01,1\nx,2024-01-02,2\n")
    read = read_series(path)
    assert [s.id for s in read.series] == ["x"] and read.step == np.timedelta64(86400, "s")
    path = write(tmp_path / "t.csv", "store,when,sales,temp,promo\n1,2024-01,5,3.5,0\n1,2024-02,6,4.5,1\n")
    read = read_series(path, id_col="store", time_col="when", value_col="sales", covariate_cols=["promo"])
    assert read.covariates == ["promo"]
    np.testing.assert_array_equal(read.series[0].covariates, [[0], [1]])
    assert read.step == np.timedelta64(1, "M")  # first-of-month timestamps step in calendar months


def test_long_file_without_id_or_timestamp_is_one_series_in_row_order(tmp_path):
    read = read_series(write(tmp_path / "load.csv", "value\n3\n1\n2\n"))
    (s,) = read.series
    assert s.id == "load" and s.timestamps is None and read.step is None and s.covariates is None
    np.testing.assert_array_equal(s.values, [3, 1, 2])


@pytest.mark.parametrize("body, line, message", [
    ("a,2024-01-01 00:00,1\na,2024-01-01 01:00,abc\n", 3, "value 'abc' is not a number"),
    ("a,2024-01-01 00:00,1\na,2024-01-01 01:00,NA\n", 3, "value 'NA' is not a number (leave it empty"),
    ("a,2024-01-01 00:00,inf\n", 2, "value 'inf' is not finite"),
    ("a,2024-01-01 00:00,1\nb,2024-01-01 00:00,1\na,2024-01-01 00:00,2\n", 4,
     "timestamp 2024-01-01T00:00:00 of series 'a' repeats the one on line 2"),
    ("a,2024-01-01 01:00,1\na,2024-01-01 00:00,2\n", 3, "comes before the one on line 2"),
    ("a,2024-01-01 00:00,1\na,2024-01-01 01:00,2\na,2024-01-01 03:00,2\n", 4,
     "series 'a' steps 2 hours here but 1 hour before"),
    ("a,2024-01-01 00:00,1\na,2024-01-01 01:00,2\nb,2024-01-01 00:00,1\nb,2024-01-01 00:30,2\n", 5,
     "series 'b' steps 30 minutes, but series 'a' steps 1 hour"),
    ("a,yesterday,1\n", 2, "timestamp 'yesterday' is not an ISO 8601 date"),
    ("a,2024-01-01 00:00\n", 2, "expected 3 columns, got 2"),
    (",2024-01-01 00:00,1\n", 2, "empty series id"),
])
def test_malformed_long_files_name_the_line(tmp_path, body, line, message):
    path = write(tmp_path / "series.csv", "id,timestamp,value\n" + body)
    fails(path, line, message)


def test_a_missing_covariate_and_unknown_columns_are_errors(tmp_path):
    path = write(tmp_path / "c.csv", "id,timestamp,value,temp\na,2024-01-01,1,3\na,2024-01-02,1,\n")
    fails(path, 3, "a covariate is missing")
    path = write(tmp_path / "d.csv", "id,timestamp,value,temp\na,2024-01-01,1,warm\n")
    fails(path, 2, "covariate 'temp' 'warm' is not a number")
    with pytest.raises(UserError, match="no column named 'sales'"):
        read_series(path, value_col="sales")
    with pytest.raises(UserError, match="no value column"):
        read_series(write(tmp_path / "e.csv", "id,timestamp,amount\na,2024-01-01,1\n"))
    with pytest.raises(UserError, match="holds no series"):
        read_series(write(tmp_path / "f.csv", "id,timestamp,value\n"))
    with pytest.raises(UserError, match="format must be one of"):
        read_series(path, format="parquet")


# --- wide format (M4) ---------------------------------------------------------------------------------------


def test_wide_file_strips_end_padding_and_counts_inner_missing_values(tmp_path):
    path = write(tmp_path / "w.csv", '"V1","V2","V3","V4","V5"\n'
                                     '"H1","1","2","3","4"\n'
                                     '"H2","5","","7",""\n'
                                     '"H3","8","nan","",""\n')
    read = read_series(path)
    assert [s.id for s in read.series] == ["H1", "H2", "H3"]
    np.testing.assert_array_equal(read.series[0].values, [1, 2, 3, 4])
    np.testing.assert_array_equal(read.series[1].values, [5, np.nan, 7])
    np.testing.assert_array_equal(read.series[2].values, [8, np.nan])
    assert read.missing == 2 and read.step is None and read.series[2].where == f"{path}:4"
    fails(write(tmp_path / "x.csv", '"V1","V2","V3"\n"H1","1","2"\n"H2","1","x"\n'), 3, "value 'x' is not a number")
    fails(write(tmp_path / "y.csv", '"V1","V2"\n"H1","1"\n"H1","2"\n'), 3, "series id 'H1' repeats the one on")
    # the header decides the format unless told: these V columns read as long when asked
    with pytest.raises(UserError, match="no value column"):
        read_series(path, format="long")


@pytest.mark.skipif(not (M4 / "Hourly-train.csv").exists(), reason="M4 not in /work/shared/data")
def test_m4_hourly_train_file():
    read = read_series(M4 / "Hourly-train.csv")
    assert len(read.series) == 414 and read.missing == 0
    assert [read.series[0].id, read.series[-1].id] == ["H1", "H414"]
    lengths = [len(s) for s in read.series]
    assert (min(lengths), max(lengths)) == (700, 960)
    np.testing.assert_array_equal(read.series[0].values[:10], [605, 586, 586, 559, 511, 443, 422, 395, 382, 370])
    with open(M4 / "Hourly-train.csv", newline="") as f:  # an independent count of each row's filled fields
        rows = list(csv.reader(f))[1:]
    assert lengths == [sum(1 for v in row[1:] if v) for row in rows]
    np.testing.assert_array_equal(read.series[-1].values, np.array(rows[-1][1:lengths[-1] + 1], dtype=np.float32))
    test = read_series(M4 / "Hourly-test.csv")
    assert len(test.series) == 414 and {len(s) for s in test.series} == {48}


# --- splits in time -----------------------------------------------------------------------------------------


def hourly(id: str, n: int, start: str = "2024-01-01T00", covariates: bool = False) -> Series:
    """A series whose values are 0..n-1 (so a value names its position), hourly from `start`."""
    times = np.datetime64(start, "s") + np.arange(n) * np.timedelta64(3600, "s")
    covs = np.arange(n, dtype=np.float32)[:, None] * 10 if covariates else None
    return Series(id, np.arange(n, dtype=np.float32), times, covs, np.timedelta64(3600, "s"), f"s.csv:{n}")


def test_split_holds_out_the_last_horizon_then_validation_before_it():
    train, test = split([hourly("a", 10), hourly("b", 7)], horizon=3)
    np.testing.assert_array_equal(train[0].values, np.arange(7))
    np.testing.assert_array_equal(test[0].values, [7, 8, 9])
    np.testing.assert_array_equal(test[1].values, [4, 5, 6])
    assert test[1].timestamps[0] == np.datetime64("2024-01-01T04")
    fit, valid = split(train, horizon=3)
    np.testing.assert_array_equal(fit[0].values, np.arange(4))
    np.testing.assert_array_equal(valid[0].values, [4, 5, 6])
    np.testing.assert_array_equal(valid[1].values, [1, 2, 3])


def test_a_series_too_short_names_its_first_line(tmp_path):
    path = write(tmp_path / "series.csv", "id,value\na,1\nb,1\na,2\nb,2\nb,3\n")
    with pytest.raises(UserError, match=re.escape(f"{path}:2: series 'a' has 2 values, too few to hold out a "
                                                  f"horizon of 2")):
        split(read_series(path).series, horizon=2)
    train, _ = split(read_series(path).series, horizon=1)
    with pytest.raises(UserError, match=re.escape(f"{path}:2: series 'a' has 1 values in its training part, too "
                                                  f"few for a context of 1 and a horizon of 1")):
        next(windows(train, 1, 1, 4, torch.Generator().manual_seed(0)))


# --- features -----------------------------------------------------------------------------------------------


def test_calendar_features_for_known_timestamps_by_hand():
    t = np.array(["2024-03-05T13:45", "1969-12-31T23:00"], dtype="datetime64[s]")
    names = ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year", "month_of_year")
    expected = [[45 / 59, 13 / 23, 1 / 6, 4 / 30, 64 / 365, 2 / 11],  # Tuesday; 31 + 29 + 5 = day 65 of 2024
                [0 / 59, 23 / 23, 2 / 6, 30 / 30, 364 / 365, 11 / 11]]  # a Wednesday, before the epoch
    np.testing.assert_allclose(calendar_features(t, names), np.array(expected) - 0.5, atol=1e-6)


def test_calendar_features_match_python_datetime_over_two_years():
    start = datetime(2023, 1, 1)
    stamps = [start + timedelta(hours=7 * k + k // 5) for k in range(2600)]
    t = np.array(stamps, dtype="datetime64[s]")
    names = calendar_names(np.timedelta64(1800, "s"))
    assert names == ("minute_of_hour", "hour_of_day", "day_of_week", "day_of_month", "day_of_year")
    expected = [[d.minute / 59, d.hour / 23, d.weekday() / 6, (d.day - 1) / 30, (d.timetuple().tm_yday - 1) / 365]
                for d in stamps]
    np.testing.assert_allclose(calendar_features(t, names), np.array(expected) - 0.5, atol=1e-6)


def test_calendar_names_follow_the_step():
    assert calendar_names(np.timedelta64(3600, "s")) == ("hour_of_day", "day_of_week", "day_of_month",
                                                         "day_of_year")
    assert calendar_names(np.timedelta64(86400, "s")) == ("day_of_week", "day_of_month", "day_of_year")
    assert calendar_names(np.timedelta64(7 * 86400, "s")) == ("day_of_month", "day_of_year")
    assert calendar_names(np.timedelta64(3, "M")) == ("month_of_year",)
    assert calendar_names(np.timedelta64(12, "M")) == ()


def test_time_features_season_position_without_timestamps_then_covariates():
    s = Series("a", np.zeros(6, np.float32), covariates=np.arange(12, dtype=np.float32).reshape(6, 2))
    f = time_features(s, season=3)
    np.testing.assert_allclose(f[:, 0], [-0.5, 0, 0.5, -0.5, 0, 0.5])
    np.testing.assert_array_equal(f[:, 1:], s.covariates)
    assert time_features(Series("b", np.zeros(4, np.float32))).shape == (4, 0)
    assert time_features(hourly("c", 5)).shape == (5, 4)


def test_mean_scale_over_observed_values_and_one_for_an_empty_context():
    values = torch.tensor([[1.0, -3.0, 100.0, 2.0], [0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    observed = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(mean_scale(values, observed), torch.tensor([2.0, 1.0, 1.0]))


def test_lags_by_hand():
    assert default_lags(24, seasons=2) == [1, 2, 3, 4, 5, 6, 7, 23, 24, 25, 47, 48, 49]
    assert default_lags(4, seasons=2) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out, mask = lagged(x, torch.tensor([[True, False, True, True]]), [1, 3, 9])
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 1, 0]]))
    assert mask[0].tolist() == [[False] * 3, [True, False, False], [False, False, False], [True, True, False]]


# --- windows ------------------------------------------------------------------------------------------------


def test_windows_shapes_contents_and_never_past_the_training_part():
    full = [hourly("a", 40, covariates=True), hourly("b", 25, "2024-06-01T05", covariates=True)]
    train, _ = split(full, horizon=6)
    batches = list(windows(train, context=8, horizon=6, batch_size=16, generator=torch.Generator().manual_seed(1),
                           per_series=40))
    assert [len(b.scale) for b in batches] == [16] * 5
    b = batches[0]
    assert b.past.shape == (16, 8) and b.future.shape == (16, 6) and b.observed.shape == (16, 14)
    assert b.past_features.shape == (16, 8, 5) and b.future_features.shape == (16, 6, 5)  # 4 calendar + 1 cov
    series = torch.cat([b.series for b in batches])
    starts = torch.cat([b.start for b in batches])
    assert sorted(series.tolist()) == [0] * 40 + [1] * 40
    for b in batches:
        for k, (i, s) in enumerate(zip(b.series.tolist(), b.start.tolist())):
            window = torch.arange(s, s + 14, dtype=torch.float32)  # values are positions
            torch.testing.assert_close(torch.cat([b.past[k], b.future[k]]), window)
            assert s + 14 <= len(train[i])  # the held-out horizon is never seen
            expected = time_features(train[i])[s:s + 14]
            torch.testing.assert_close(torch.cat([b.past_features[k], b.future_features[k]]),
                                       torch.from_numpy(expected))
    # every start that fits is reachable: series b's training part (19 steps) fits starts 0..5
    assert set(starts[series == 1].tolist()) == set(range(6))
    assert b.observed.all()
    torch.testing.assert_close(b.scale, b.past.abs().mean(1))


def test_missing_values_are_zero_unobserved_and_left_out_of_the_scale():
    values = np.array([np.nan, 2, 4, np.nan, 8], np.float32)
    (b,) = windows([Series("a", values)], context=3, horizon=2, batch_size=4, generator=torch.Generator())
    assert b.observed.tolist() == [[False, True, True, False, True]]
    torch.testing.assert_close(b.past, torch.tensor([[0.0, 2.0, 4.0]]))
    torch.testing.assert_close(b.future, torch.tensor([[0.0, 8.0]]))
    torch.testing.assert_close(b.scale, torch.tensor([3.0]))


def test_the_same_seed_gives_the_same_epoch_and_another_seed_another():
    train = [hourly(str(k), 30 + k) for k in range(10)]

    def epoch(seed: int) -> list:
        return list(windows(train, 8, 4, 3, torch.Generator().manual_seed(seed), season=24, per_series=2))

    first, again, other = epoch(7), epoch(7), epoch(8)
    assert len(first) == 7
    for b1, b2 in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(b1, b2))
    assert any(not torch.equal(b1.start, b2.start) or not torch.equal(b1.series, b2.series)
               for b1, b2 in zip(first, other))


def test_last_windows_with_the_test_part_and_with_an_unknown_future():
    full = [hourly("a", 30, covariates=True), hourly("b", 20, covariates=True)]
    train, test = split(full, horizon=4)
    (b,) = last_windows(train, context=5, horizon=4, batch_size=8, future=test)
    torch.testing.assert_close(b.past, torch.tensor([[21.0, 22, 23, 24, 25], [11, 12, 13, 14, 15]]))
    torch.testing.assert_close(b.future, torch.tensor([[26.0, 27, 28, 29], [16, 17, 18, 19]]))
    torch.testing.assert_close(b.future_features[:, :, -1], b.future * 10)  # the covariate comes from test
    assert b.start.tolist() == [21, 11] and b.observed.all()
    with pytest.raises(UserError, match="forecasting needs their future values"):
        next(last_windows(train, 5, 4, 8))

    plain = [hourly("a", 26)]
    (b,) = last_windows(plain, context=5, horizon=4, batch_size=8)
    assert b.observed.tolist() == [[True] * 5 + [False] * 4] and b.future.eq(0).all()
    expected = calendar_features(np.datetime64("2024-01-02T02", "s") + np.arange(4) * np.timedelta64(3600, "s"),
                                 calendar_names(np.timedelta64(3600, "s")))
    torch.testing.assert_close(b.future_features[0], torch.from_numpy(expected))


def test_monthly_timestamps_continue_by_calendar_month(tmp_path):
    path = write(tmp_path / "m.csv", "ds,y\n2023-11-01,1\n2023-12-01,2\n2024-01-01,3\n")
    (s,) = read_series(path).series
    (b,) = last_windows([s], context=3, horizon=2, batch_size=1)
    torch.testing.assert_close(b.future_features[0, :, 0], torch.tensor([1 / 11 - 0.5, 2 / 11 - 0.5]))  # Feb, Mar
    torch.testing.assert_close(b.past_features[0, :, 0], torch.tensor([10 / 11 - 0.5, 0.5, -0.5]))
