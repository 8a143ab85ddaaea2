"""`recurrent train forecast` on the one loop: a short run from the command line, bit-identical --resume, and the
M4 Hourly file."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrent.checkpoint import load_checkpoint
from recurrent.cli.main import main
from recurrent.errors import UserError
from recurrent.forecast.task import TrainForecastConfig, parse_lags, train_forecast
from recurrent.train.loop import flat_replace

M4_HOURLY = Path("/work/shared/data/m4/Hourly-train.csv")


def hourly_csv(path: Path, length: int = 200) -> Path:
    """3 series in the long format, hourly from 2024-01-01: a daily cycle around levels 10, 11, 12, and noise."""
    rng = np.random.default_rng(0)
    start = np.datetime64("2024-01-01T00:00")
    rows = ["id,timestamp,value"]
    for k in range(3):
        for i in range(length):
            value = 10 + k + 3 * np.sin(2 * np.pi * i / 24) + rng.normal(0, 0.5)
            rows.append(f"s{k},{start + np.timedelta64(i, 'h')},{value:.3f}")
    path.write_text("\n".join(rows) + "\n")
    return path


SMALL = ["--horizon", "6", "--season", "24", "--context-length", "12", "--lags", "1,24", "--batch-size", "8",
         "--epoch-windows", "24", "--eval-samples", "10", "--hidden-size", "8", "--no-progress"]


def test_train_forecast_from_the_command_line(tmp_path, capsys):
    data, out = hourly_csv(tmp_path / "series.csv"), tmp_path / "run"
    assert main(["train", "forecast", "--data", str(data), "--out", str(out), "--max-steps", "20", *SMALL]) == 0
    assert "best valid NLL" in capsys.readouterr().out
    for name in ("model.safetensors", "model.json", "last.safetensors", "last.json", "config.json"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"]["lags"] == [1, 24] and meta["model"]["num_features"] == 4  # hour, weekday, day of month, year
    assert (meta["horizon"], meta["season"], meta["context_length"], meta["past_length"]) == (6, 24, 12, 36)
    assert meta["ids"] == ["s0", "s1", "s2"] and meta["step"] == "3600 seconds"
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 20 and np.isfinite(last["val_loss"]) and last["smape"] >= 0 and last["mase"] >= 0


def test_resume_is_bit_identical(tmp_path):
    """6 steps straight == 3 steps, stop, then --resume to 6 (across an epoch boundary: 3 batches an epoch)."""
    data = hourly_csv(tmp_path / "series.csv")
    base = flat_replace(TrainForecastConfig(), data=str(data), horizon=6, season=24, context_length=12, lags="1,24",
                        batch_size=8, epoch_windows=24, eval_samples=10, hidden_size=8, dropout=0.3, eval_every=2,
                        log_every=1, progress=False)
    runs = [tmp_path / "straight", tmp_path / "split", tmp_path / "split"]
    for out, steps, resume in zip(runs, (6, 3, 6), (False, False, True)):
        train_forecast(flat_replace(base, out=str(out), max_steps=steps, resume=resume))
    (a, meta_a), (b, meta_b) = (load_checkpoint(run, name="last") for run in runs[:2])
    kept = ("step", "epoch", "batch", "evals_since_best", "skipped")
    assert {k: meta_a["position"][k] for k in kept} == {k: meta_b["position"][k] for k in kept}
    assert meta_a["position"]["step"] == 6 and a.keys() == b.keys()
    assert [key for key in a if not torch.equal(a[key], b[key])] == []  # weights, Adam's moments, RNG states


def test_series_too_short_names_the_file_line(tmp_path):
    data = hourly_csv(tmp_path / "series.csv", length=30)
    config = flat_replace(TrainForecastConfig(), data=str(data), horizon=6, season=24, out=str(tmp_path / "run"))
    with pytest.raises(UserError, match=r"series\.csv:2: series 's0' has 24 values"):
        train_forecast(config)


def test_lags_parse_and_reject():
    assert parse_lags("24,2", 24) == (1, 2, 24)
    assert parse_lags("none", 24) == (1,)
    assert parse_lags("auto", 1) == (1, 2, 3, 4, 5, 6, 7)
    with pytest.raises(UserError, match="got '1,x'"):
        parse_lags("1,x", 24)


@pytest.mark.skipif(not M4_HOURLY.is_file(), reason="M4 Hourly-train.csv is not in /work/shared/data/m4")
def test_m4_hourly_trains_a_few_steps(tmp_path):
    out = tmp_path / "m4"
    assert main(["train", "forecast", "--data", str(M4_HOURLY), "--horizon", "48", "--season", "24", "--out",
                 str(out), "--max-steps", "3", "--batch-size", "16", "--eval-samples", "4", "--hidden-size", "8",
                 "--num-layers", "1", "--no-progress"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert len(meta["ids"]) == 414 and meta["model"]["num_features"] == 1  # the hour within the day
    assert meta["model"]["lags"] == [1, 2, 3, 4, 5, 6, 7, 23, 24, 25, 47, 48, 49, 71, 72, 73]
    assert np.isfinite(meta["metrics"]["val_loss"]) and meta["metrics"]["smape"] > 0


def test_missing_values_are_reported_and_masked(tmp_path, capsys):
    data = hourly_csv(tmp_path / "series.csv")
    lines = data.read_text().splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ","  # an empty value
    lines[9] = lines[9].rsplit(",", 1)[0] + ",nan"
    data.write_text("\n".join(lines) + "\n")
    assert main(["train", "forecast", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "2",
                 *SMALL]) == 0
    assert f"{data}: 2 missing values in 1 series (empty or nan): masked" in capsys.readouterr().err
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert np.isfinite(last["val_loss"]) and np.isfinite(last["train_loss"])
