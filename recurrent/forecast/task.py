"""`recurrent train forecast`: one global model for every series of a file, trained on the one loop
(recurrent/train/loop.py): DeepAR (recurrent/models/forecaster.py) or MQ-RNN (recurrent/models/mqrnn.py).

    config = flat_replace(TrainForecastConfig(), data="series.csv", horizon=48, season=24, out="runs/hourly")
    run_dir = train_forecast(config)          # metrics.jsonl: val_loss (NLL), smape and mase on the validation
    config = flat_replace(config, architecture="mqrnn", window=168)   # direct quantiles from a week of values

The file is the training data (M4's Hourly-train.csv, or a long CSV): its last `horizon` steps are held out in time
for validation, and windows for training are cut from the steps before them. Each epoch draws `epoch_windows`
windows from a generator seeded by (seed, epoch), so a resumed run sees the same windows as one run straight
through. Validation scores the model's loss on the held-out horizon (the metric: DeepAR's NLL, teacher forced, or
MQ-RNN's pinball loss) and the sMAPE and MASE of the median forecast (DeepAR: of `eval_samples` sample paths).

Key: B batch, P past steps (context + largest lag, or + window - 1), H horizon, S sample paths.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from recurrent.errors import UserError
from recurrent.forecast.data import FORMATS, Batch, default_lags, last_windows, read_series, split, time_features, windows
from recurrent.forecast.metrics import mase, smape
from recurrent.forecast.heads import check_levels
from recurrent.models.forecaster import ForecasterConfig, build
from recurrent.models.mqrnn import parse_levels
from recurrent.train import distributed
from recurrent.train.loop import TrainConfig, train
from recurrent.validation import at_least, check


def forecast_training(**changes) -> TrainConfig:
    """The forecaster's training defaults, with `changes`: Adam at lr 1e-3 (DeepAR's), the gradient norm clipped at
    10 (GluonTS's), 100 epochs, fp32 (a regression of reals: bf16 would round the inputs to 3 digits)."""
    return TrainConfig(**{**dict(out="runs/forecast", lr=1e-3, clip=10.0, epochs=100, precision="fp32"), **changes})


@dataclass
class TrainForecastConfig:
    """Ranges sit in each field's metadata (recurrent/validation.py checks them)."""

    data: str = ""  # a long CSV (id, timestamp, value, covariates...) or an M4 wide file (recurrent/forecast/data.py)
    format: str = field(default="auto", metadata={"help": f"one of {FORMATS}", "choices": FORMATS})
    horizon: int = field(default=48, metadata=at_least(1))  # H: steps to forecast, and to hold out for validation
    season: int = field(default=1, metadata=at_least(1))  # seasonal period (24 for hourly data): lags, MASE,
    #                                                       the season feature of a file without timestamps
    context_length: int = field(default=0, metadata=at_least(0))  # steps unrolled before forecasting (0: 2·horizon)
    lags: str = "auto"  # comma-separated lags (1 is always added), "auto" (DeepAR's: 1..7 and around 1-3 seasons)
    #                     or "none" (the previous value only)
    batch_size: int = 32  # windows per step
    epoch_windows: int = field(default=1024, metadata=at_least(1))  # windows an epoch draws, spread over the series
    eval_samples: int = field(default=100, metadata=at_least(1))  # sample paths for the validation's median forecast
    training: TrainConfig = field(default_factory=forecast_training)  # the loop's: optimizer, budgets, ...
    model: ForecasterConfig = field(default_factory=ForecasterConfig)

    def validate(self) -> None:
        """UserError naming the first bad value: types and ranges (recurrent.validation), the data file, the
        lags, and the device."""
        check(self)
        if not self.data:
            raise UserError("--data is required: a long CSV (id,timestamp,value) or an M4 wide file")
        parse_lags(self.lags, self.season)
        if self.model.architecture == "mqrnn":
            try:
                check_levels(parse_levels(self.model.quantile_levels))
            except ValueError as e:
                raise UserError(f"--quantile-levels: {e}") from None
        self.training.validate()


def parse_lags(text: str, season: int) -> tuple[int, ...]:
    """--lags -> sorted distinct lags starting at 1: "auto" (default_lags(season), or 1..7 without a season),
    "none" (1 only), or "1,2,24"."""
    if text == "auto":
        return tuple(default_lags(season) if season > 1 else range(1, 8))
    if text == "none":
        return (1,)
    try:
        lags = {int(part) for part in text.split(",")}
    except ValueError:
        raise UserError(f"--lags must be auto, none or comma-separated integers such as 1,2,24, got {text!r}") \
            from None
    if min(lags) < 1:
        raise UserError(f"--lags must be >= 1, got {text!r}")
    return tuple(sorted(lags | {1}))


def pick_transform(transform: str, series: list) -> str:
    """mqrnn's transform: "auto" is log when every observed value is > 0 (ES-RNN's), else scale."""
    if transform != "auto":
        return transform
    positive = all(bool((s.values[~np.isnan(s.values)] > 0).all()) for s in series)
    return "log" if positive else "scale"


class StepOutput(NamedTuple):
    loss: torch.Tensor


class ForecastTask:
    """Windows of many series for one global model; the metric is the NLL of the held-out horizon (lower is
    better)."""

    name, metric, higher_is_better, unit = "forecast", "val_loss", False, "ex"

    def __init__(self, config: TrainForecastConfig):
        self.config = config
        read = read_series(config.data, config.format)
        self.series, self.step_size = read.series, read.step
        if read.missing:
            gaps = sum(bool(np.isnan(s.values).any()) for s in read.series)
            print(f"{config.data}: {read.missing} missing value{'s' * (read.missing > 1)} in {gaps} series (empty "
                  f"or nan): masked, neither fed to the model nor scored", file=sys.stderr)
        self.fit, self.valid = split(read.series, config.horizon)  # validation: the last horizon, in time
        context = config.context_length or 2 * config.horizon
        features = time_features(self.fit[0], config.season).shape[1]
        self.model_config = replace(config.model, num_features=features, num_series=len(self.fit),
                                    context_length=context, horizon=config.horizon, season=config.season,
                                    lags=parse_lags(config.lags, config.season),
                                    window=config.model.window or max(config.season, config.horizon),
                                    transform=pick_transform(config.model.transform, self.fit))
        try:
            self.model = build(self.model_config)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.past = self.model.past_length  # P
        self.per_series = math.ceil(config.epoch_windows / len(self.fit))

    def meta(self) -> dict:
        """The model config and what forecasting from the end of a series needs."""
        c = self.config
        return {"model": asdict(self.model_config), "horizon": c.horizon, "season": c.season,
                "context_length": self.model_config.context_length, "past_length": self.past,
                "step": None if self.step_size is None else str(self.step_size), "format": c.format,
                "ids": [s.id for s in self.series]}

    def steps_per_epoch(self) -> int:
        return math.ceil(self.per_series * len(self.fit) / self.config.batch_size)

    def batches(self, epoch: int):
        """This epoch's windows, drawn from its own generator; with several processes, this one's rows."""
        generator = torch.Generator().manual_seed(self.config.training.seed * 1_000_003 + epoch)
        world = distributed.world()
        for batch in windows(self.fit, self.past, self.config.horizon, self.config.batch_size, generator,
                             self.config.season, self.per_series):
            yield world.share(len(batch.scale), lambda rows, b=batch: Batch(*(t[rows] for t in b)))

    def step(self, model: nn.Module, batch, carry):
        return StepOutput(model(batch).loss.float()), None

    def count(self, batch) -> int:
        return len(batch.scale)

    def weight(self, batch) -> int:
        return int(batch.observed[:, -self.model_config.context_length - self.config.horizon:].sum())

    def evaluate(self, model: nn.Module) -> dict:
        """val_loss: the model's loss on the held-out horizon (DeepAR: NLL, teacher forced; MQ-RNN: pinball);
        smape and mase: of the median forecast (DeepAR: of sample paths), averaged over the series whose history and horizon are fully observed (None if none is)."""
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(self.config.training.seed + 10_000)
        loss, points, medians = 0.0, 0, []
        for batch in last_windows(self.fit, self.past, self.config.horizon, 256, self.config.season, self.valid):
            batch = Batch(*(t.to(device) for t in batch))
            mean, n = model.horizon_loss(batch)
            loss, points = loss + mean * n, points + n
            median = model.quantiles(batch, [0.5], generator, self.config.eval_samples)[..., 0]  # (B, H)
            medians.append(median.float().cpu().numpy())
        median = np.concatenate(medians)  # (N, H)
        y = np.stack([s.values for s in self.valid])  # (N, H)
        whole = [i for i, s in enumerate(self.fit) if not np.isnan(s.values).any() and not np.isnan(y[i]).any()
                 and len(s) > self.config.season]
        scores = {"smape": None, "mase": None}
        if whole:
            insample = [self.fit[i].values for i in whole]
            scores = {"smape": float(np.mean(smape(y[whole], median[whole]))),
                      "mase": float(np.mean(mase(insample, y[whole], median[whole], self.config.season)))}
        return {"val_loss": loss / max(points, 1), **scores}


def train_forecast(config: TrainForecastConfig) -> Path:
    """Train as `config` says (recurrent.train.loop does the training); return the run folder."""
    config.validate()
    return train(lambda resumed: ForecastTask(config), config.training, asdict(config))
