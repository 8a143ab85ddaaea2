"""`recurrent forecast` and `recurrent evaluate` on forecast runs: tiny runs trained once per module on a long CSV with
timestamps, an M4-wide file without them and daily data; the output CSV checked against the model called directly,
the baseline rows of the table against baselines.py and metrics.py, and the one-line errors."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrent.checkpoint import load_checkpoint
from recurrent.cli.main import main
from recurrent.forecast.baselines import naive, naive2, naive_interval, seasonal_naive
from recurrent.forecast.data import last_windows, read_series, split
from recurrent.forecast.metrics import coverage, mase, msis, smape
from recurrent.forecast.task import TrainForecastConfig, train_forecast
from recurrent.models.forecaster import ForecasterConfig, build
from recurrent.train.loop import flat_replace

H = 6  # every run's horizon
TINY = {"context_length": 12, "batch_size": 8, "epoch_windows": 16, "eval_samples": 5, "hidden_size": 8,
        "num_layers": 1, "max_steps": 3, "progress": False}


def long_csv(path: Path, step: str = "h", season: int = 24, lengths=(120, 120, 120), start="2024-01-01T00:00") -> Path:
    """Series s0, s1, ... in the long format: a cycle of `season` steps around levels 10, 11, ..., and noise."""
    rng = np.random.default_rng(0)
    rows = ["id,timestamp,value"]
    for k, n in enumerate(lengths):
        for i in range(n):
            value = 10 + k + 3 * np.sin(2 * np.pi * i / season) + rng.normal(0, 0.5)
            rows.append(f"s{k},{np.datetime64(start) + np.timedelta64(i, step)},{value:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


def wide_csv(path: Path, values: dict[str, list]) -> Path:
    """M4's wide format: "V1","V2",... then one series a row, padded at the end with empty fields."""
    width = max(len(v) for v in values.values()) + 1
    rows = [",".join(f'"V{i + 1}"' for i in range(width))]
    for name, v in values.items():
        fields = [f'"{name}"', *("" if x is None else f"{x:.3f}" for x in v)]
        rows.append(",".join(fields + [""] * (width - len(fields))))
    path.write_text("\n".join(rows) + "\n")
    return path


def cycles(n: int, level: float, season: int = 6, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(level + 2 * np.sin(2 * np.pi * np.arange(n) / season) + rng.normal(0, 0.3, n))


def train(data: Path, out: Path, season: int, lags: str, **changes) -> Path:
    return train_forecast(flat_replace(TrainForecastConfig(), data=str(data), horizon=H, season=season, lags=lags,
                                       out=str(out), **{**TINY, **changes}))


@pytest.fixture(scope="module")
def hourly(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hourly")
    data = long_csv(folder / "series.csv")
    return data, train(data, folder / "run", 24, "1,24")


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Train on 4 series of different lengths, season 6 (no timestamps), and their next H values as M4's test."""
    folder = tmp_path_factory.mktemp("wide")
    full = {f"H{k}": cycles(n + H, 20 + 5 * k, seed=k) for k, n in enumerate((60, 48, 40, 70))}
    train_file = wide_csv(folder / "train.csv", {k: v[:-H] for k, v in full.items()})
    test_file = wide_csv(folder / "test.csv", {k: v[-H:] for k, v in full.items()})
    return train_file, test_file, train(train_file, folder / "run", 6, "1,6")


def read_out(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def table(text: str) -> dict[str, list[str]]:
    """The markdown table printed by evaluate: method -> its cells."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def direct_quantiles(run: Path, data: Path, levels, samples: int, seed: int) -> np.ndarray:
    """The reference: the checkpoint loaded by hand, the model's quantiles on last_windows, one generator."""
    tensors, meta = load_checkpoint(run, finite=True)
    model = build(ForecasterConfig(**{**meta["model"], "lags": tuple(meta["model"]["lags"])}))
    model.load_state_dict(tensors)
    model.eval()
    series = read_series(data).series
    generator = torch.Generator().manual_seed(seed)
    out = [model.quantiles(b, levels, generator, num_samples=samples)
           for b in last_windows(series, model.past_length, meta["horizon"], 64, meta["season"])]
    return torch.cat(out).numpy()  # (N, H, Q)


# --- recurrent forecast -------------------------------------------------------------------------------------


def test_forecast_long_csv_continues_the_timestamps(hourly, tmp_path, capsys):
    data, run = hourly
    out = tmp_path / "f.csv"
    assert main(["forecast", str(run), "--data", str(data), "--samples", "40", "--seed", "3", "--out", str(out)]) == 0
    assert "3 series x 6 steps" in capsys.readouterr().out
    header, rows = read_out(out)
    assert header == ["id", "timestamp", "q0.1", "q0.5", "q0.9"]
    assert len(rows) == 3 * H and [r[0] for r in rows] == [f"s{k}" for k in range(3) for _ in range(H)]
    last = np.datetime64("2024-01-01T00:00:00") + np.timedelta64(119, "h")  # seconds: ISO with :00 seconds
    assert [r[1] for r in rows[:H]] == [str((last + np.timedelta64(h, "h")).astype("datetime64[s]")) for h in range(1, H + 1)]
    q = np.array([[float(x) for x in r[2:]] for r in rows]).reshape(3, H, 3)
    assert (np.diff(q, axis=-1) >= 0).all()  # monotone in the level
    expected = direct_quantiles(run, data, [0.1, 0.5, 0.9], 40, 3)
    np.testing.assert_allclose(q, expected, rtol=1e-6, atol=1e-5)  # written with 7 digits


def test_same_seed_same_file_and_median_always_there(hourly, tmp_path):
    data, run = hourly
    files = [tmp_path / f"{name}.csv" for name in ("a", "b", "c")]
    for path, seed in zip(files, (1, 1, 2)):
        assert main(["forecast", str(run), "--data", str(data), "--quantiles", "0.95,0.05", "--samples", "20",
                     "--seed", str(seed), "--out", str(path)]) == 0
    assert read_out(files[0])[0][2:] == ["q0.05", "q0.5", "q0.95"]
    assert files[0].read_text() == files[1].read_text() != files[2].read_text()


def test_forecast_wide_file_counts_steps(wide, tmp_path):
    train_file, _, run = wide
    out = tmp_path / "f.csv"
    assert main(["forecast", str(run), "--data", str(train_file), "--samples", "20", "--out", str(out)]) == 0
    header, rows = read_out(out)
    assert header[:2] == ["id", "step"]
    lengths = {"H0": 60, "H1": 48, "H2": 40, "H3": 70}
    for name, n in lengths.items():
        assert [int(r[1]) for r in rows if r[0] == name] == list(range(n, n + H))
    np.testing.assert_allclose(np.array([[float(x) for x in r[2:]] for r in rows]).reshape(4, H, 3),
                               direct_quantiles(run, train_file, [0.1, 0.5, 0.9], 20, 0), rtol=1e-6, atol=1e-5)


def test_a_short_series_is_padded_as_missing_values(wide, tmp_path, capsys):
    """A series shorter than the model's past forecasts as if its file had empty values before it: the padding
    is the model's own masking of missing values, a whole number of seasons long (the season feature's phase)."""
    _, _, run = wide
    past = json.loads((run / "model.json").read_text())["past_length"]  # 12 + 6
    short = cycles(8, 30)
    pad = -(-(past - 8) // 6) * 6
    assert main(["forecast", str(run), "--data", str(wide_csv(tmp_path / "short.csv", {"H9": short})),
                 "--samples", "20", "--out", str(tmp_path / "a.csv")]) == 0
    assert "padded at their start with missing values" in capsys.readouterr().err
    written = wide_csv(tmp_path / "written.csv", {"H9": [None] * pad + short})
    assert main(["forecast", str(run), "--data", str(written), "--samples", "20", "--out", str(tmp_path / "b.csv")]) == 0
    a, b = read_out(tmp_path / "a.csv")[1], read_out(tmp_path / "b.csv")[1]
    assert [r[2:] for r in a] == [r[2:] for r in b]
    assert [int(r[1]) for r in a] == list(range(8, 8 + H))  # the step index is the series' own


def test_an_id_embedding_forecasts_only_known_ids(tmp_path, capsys):
    data = long_csv(tmp_path / "series.csv", lengths=(60, 60))
    run = train(data, tmp_path / "run", 24, "1,24", embedding_size=2, max_steps=1)
    other = long_csv(tmp_path / "other.csv", lengths=(60,))
    other.write_text(other.read_text().replace("s0,", "zz,"))
    out = tmp_path / "f.csv"
    assert main(["forecast", str(run), "--data", str(data), "--samples", "10", "--out", str(out)]) == 0
    one_line_error(capsys, ["forecast", str(run), "--data", str(other), "--out", str(out), "--overwrite"],
                   "other.csv:2: series 'zz' is not one the model was trained on")


def one_line_error(capsys, argv, *expected) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_one_line_errors(hourly, wide, tmp_path, capsys):
    data, run = hourly
    out = tmp_path / "f.csv"
    base = ["forecast", str(run), "--data", str(data), "--out", str(out)]
    one_line_error(capsys, ["forecast", str(run), "--data", str(tmp_path / "nope.csv"), "--out", str(out)], "nope.csv")
    for bad in ("0,0.5", "1.5", "0.1;0.9", "nan", ""):
        one_line_error(capsys, [*base, "--quantiles", bad], "--quantiles must be comma-separated numbers in (0, 1)")
    one_line_error(capsys, [*base[:-1], str(tmp_path / "f.txt")], "--out must be a .csv file name")
    one_line_error(capsys, ["forecast", str(run), "--data", str(wide[0]), "--out", str(out)], "has no timestamps")
    other = tmp_path / "other"
    other.mkdir()
    one_line_error(capsys, ["forecast", str(other), "--data", str(data), "--out", str(out)], "not a run folder")

    out.write_text("keep me")
    one_line_error(capsys, base, "exists: pass --overwrite")
    assert out.read_text() == "keep me"
    assert main([*base, "--samples", "5", "--overwrite"]) == 0 and out.read_text().startswith("id,")


# --- recurrent evaluate ---------------------------------------------------------------------------------------


def reference_rows(insample, y, m) -> dict[str, list[str]]:
    """The baselines' rows computed here: baselines.py's forecasts, metrics.py per series, averaged, OWA by hand."""
    points = {"naive2": [naive2(x, H, m) for x in insample], "snaive": [seasonal_naive(x, H, m) for x in insample],
              "naive": [naive(x, H) for x in insample]}
    means = {name: (np.mean([smape(t, f) for t, f in zip(y, fs)]), np.mean([mase(x, t, f, m)
             for x, t, f in zip(insample, y, fs)])) for name, fs in points.items()}
    s0, m0 = means["naive2"]
    rows = {name: [f"{s:.3f}", f"{a:.3f}", f"{(s / s0 + a / m0) / 2:.3f}"] for name, (s, a) in means.items()}
    bands = [naive_interval(x, H, 0.95) for x in insample]
    rows["naive"] += [f"{np.mean([msis(x, t, lo, hi, m) for x, t, (lo, hi) in zip(insample, y, bands)]):.3f}",
                      f"{np.mean([coverage(t, lo, hi) for t, (lo, hi) in zip(y, bands)]):.3f}"]
    return rows


def check_table(text: str, insample, y, m, name="recurrent deepar") -> None:
    rows = table(text)
    assert list(rows) == ["naive2", "snaive", "naive", name]
    for method, cells in reference_rows(insample, y, m).items():
        assert rows[method][:len(cells)] == cells, method
    assert rows["naive2"][3:6] == ["–", "–", "–"]
    ours = [float(c) for c in rows[name]]
    assert all(np.isfinite(ours)) and 0 <= ours[4] <= 1 and ours[5] > 0  # coverage, wQL


def test_evaluate_holds_out_the_last_horizon(hourly, capsys):
    data, run = hourly
    assert main(["evaluate", str(run), "--data", str(data), "--samples", "20"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("3 series, horizon 6, season 24")
    history, test = split(read_series(data).series, H)
    check_table(text, [s.values.astype(float) for s in history], np.stack([s.values for s in test]).astype(float), 24)


def test_evaluate_with_an_m4_test_file(wide, capsys):
    train_file, test_file, run = wide
    assert main(["evaluate", str(run), "--data", str(train_file), "--test", str(test_file), "--samples", "20"]) == 0
    text = capsys.readouterr().out
    insample = [s.values.astype(float) for s in read_series(train_file).series]
    check_table(text, insample, np.stack([s.values for s in read_series(test_file).series]).astype(float), 6)


def test_evaluate_leaves_out_what_m4_cannot_score(wide, tmp_path, capsys):
    train_file, test_file, run = wide
    test = read_series(test_file).series
    values = {s.id: list(s.values) for s in test}
    values["H1"][2] = None  # a missing value in the horizon
    holed = wide_csv(tmp_path / "test.csv", values)
    assert main(["evaluate", str(run), "--data", str(train_file), "--test", str(holed), "--samples", "10"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("3 series") and "left out 1 series" in err and "'H1' (a missing value)" in err
    keep = [0, 2, 3]
    insample = [s.values.astype(float) for s in read_series(train_file).series]
    check_table(out, [insample[i] for i in keep], np.stack([test[i].values for i in keep]).astype(float), 6)


def test_evaluate_errors(wide, hourly, tmp_path, capsys):
    train_file, _, run = wide
    one_line_error(capsys, ["evaluate", str(run)], "needs --data")
    one_line_error(capsys, ["evaluate", str(run), "--data", str(train_file), "--baselines", "naive2,arima"],
                   "unknown method 'arima'")
    partial = wide_csv(tmp_path / "test.csv", {"H0": [1.0] * H})
    one_line_error(capsys, ["evaluate", str(run), "--data", str(train_file), "--test", str(partial)], "no series 'H1'")
    data, hourly_run = hourly
    late = long_csv(tmp_path / "late.csv", lengths=(H, H, H), start="2024-02-01T00:00")
    one_line_error(capsys, ["evaluate", str(hourly_run), "--data", str(data), "--test", str(late)],
                   "the test must start at 2024-01-06T00:00:00")


def test_daily_data_with_a_weekly_season(tmp_path, capsys):
    data = long_csv(tmp_path / "daily.csv", step="D", season=7, lengths=(70, 50), start="2023-03-01")
    run = train(data, tmp_path / "run", 7, "1,7")
    out = tmp_path / "f.csv"
    assert main(["forecast", str(run), "--data", str(data), "--samples", "10", "--out", str(out)]) == 0
    rows = read_out(out)[1]
    assert [r[1] for r in rows[:2]] == ["2023-05-10T00:00:00", "2023-05-11T00:00:00"]  # 70 days after March 1st
    assert [r[1] for r in rows[H:H + 1]] == ["2023-04-20T00:00:00"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(data), "--samples", "10"]) == 0
    text = capsys.readouterr().out
    history, test = split(read_series(data).series, H)
    check_table(text, [s.values.astype(float) for s in history], np.stack([s.values for s in test]).astype(float), 7)


def test_a_bad_model_json_is_one_line(hourly, tmp_path, capsys):
    """model.json is checked (recurrent.schema.ForecasterMeta) before a model is built from it."""
    import shutil

    data, run = hourly
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta = json.loads((run / "model.json").read_text())
    out = tmp_path / "f.csv"
    for change, message in [({"horizon": 0}, "horizon must be >= 1"),
                            ({"ids": ["s0"]}, "ids holds 1 entries, but model.num_series is 3"),
                            ({"model": {**meta["model"], "lags": [1, "24"]}}, "model.lags.1"),
                            ({"model": {**meta["model"], "hidden_size": 10**9}}, "model.hidden_size must be <= 65536")]:
        (copy / "model.json").write_text(json.dumps({**meta, **change}))
        one_line_error(capsys, ["forecast", str(copy), "--data", str(data), "--out", str(out)], "model.json", message)


def test_plots_from_both_commands(hourly, tmp_path, capsys):
    image = pytest.importorskip("matplotlib.image", reason="matplotlib is not installed")
    data, run = hourly
    forecast_png, evaluate_png = tmp_path / "f.png", tmp_path / "e.png"
    assert main(["forecast", str(run), "--data", str(data), "--samples", "10", "--out", str(tmp_path / "f.csv"),
                 "--plot", str(forecast_png), "--plot-series", "s2,s0"]) == 0
    assert main(["evaluate", str(run), "--data", str(data), "--samples", "10", "--plot", str(evaluate_png)]) == 0
    for path, panels in ((forecast_png, 2), (evaluate_png, 3)):
        pixels = image.imread(path)
        assert pixels.shape[0] == round(panels * 2.6 * 100) and len(np.unique(pixels.reshape(-1, 4), axis=0)) > 20
    capsys.readouterr()
    one_line_error(capsys, ["forecast", str(run), "--data", str(data), "--out", str(tmp_path / "g.csv"), "--plot",
                            str(tmp_path / "g.png"), "--plot-series", "s9"], "has no series 's9'")
    one_line_error(capsys, ["forecast", str(run), "--data", str(data), "--out", str(tmp_path / "g.csv"),
                            "--plot-series", "s0"], "give --plot PNG too")
    assert not (tmp_path / "g.csv").exists()
