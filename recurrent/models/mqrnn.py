"""MQ-RNN (Wen et al. 2017) with ES-RNN's local normalisation (Smyl 2020): a direct multi-horizon quantile forecaster.

At every step t the RNN reads the last `window` values, each taken relative to the series' level at t (the mean over
the last season, so the level carries no seasonality), with the time features of t and the level itself (with the
scale transform, also log ν, as DeepAR). From its
output and the window a decoder reads all H future values' quantiles at once, also relative to the level at t. Training forks:
every one of the C unrolled steps forecasts its own next H values (MQ-RNN's forking sequences), so one window gives
C training examples and no step ever sees the values it forecasts. Forecasting reads the last step's output.

Values are taken in log space when the series are positive (transform="log", as ES-RNN: relative errors, so the
pinball loss there is close to the sMAPE the M4 competition scores, and a multiplicative season becomes additive),
else divided by the window's mean |value| (transform="scale"). Quantiles map back exactly: exp and multiplication
are increasing.

    model = MQForecaster(ForecasterConfig(architecture="mqrnn", context_length=96, horizon=48, window=48, season=24))
    loss = model(batch).loss                              # pinball loss over every fork, level and horizon
    q = model.quantiles(batch, [0.1, 0.5, 0.9], None)     # (B, H, 3), data units, from the end of the past

Key: B batch, P past steps given (past_length = C + window - 1), C context (forks), W window, H horizon,
Q quantile levels, F features, N hidden, I input.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from recurrent.cells import registry
from recurrent.forecast.data import Batch, check_batch, mean_scale
from recurrent.forecast.heads import check_levels, monotone_quantiles, pinball_loss

TRANSFORMS = ("auto", "log", "scale")  # auto: log if every observed training value is > 0 (the task decides)


class Forks(NamedTuple):
    """Each of the C forks' inputs and targets, in its own units (see MQForecaster._forks)."""

    window: Tensor  # (B, C, W) the last W values relative to the level, 0 where unobserved
    window_seen: Tensor  # (B, C, W) bool
    target: Tensor  # (B, C, H) the next H values relative to the level
    target_seen: Tensor  # (B, C, H) bool
    level: Tensor  # (B, C)
    scale: Tensor  # (B, C) the window's mean |value| (1 for the log transform)


class MQOutput(NamedTuple):
    loss: Tensor  # pinball loss, a mean over the observed targets of every fork, horizon and level
    quantiles: Tensor  # (B, C, H, Q) in the transformed space, relative to each fork's level
    target: Tensor  # (B, C, H) the same space
    observed: Tensor  # (B, C, H) bool


class MQForecaster(nn.Module):
    """An RNN (any registered cell) over locally normalised windows, and an MLP to every horizon's quantiles."""

    def __init__(self, config):
        super().__init__()
        c = config
        if c.transform not in ("log", "scale"):
            raise ValueError(f"transform must be log or scale once the data are read, got {c.transform!r}")
        if c.window < 1:
            raise ValueError(f"window must be >= 1, got {c.window}")
        self.config = c
        self.levels = check_levels(parse_levels(c.quantile_levels)).tolist()  # (Q,)
        self.past_length = c.context_length + c.window - 1  # P
        self.level_span = max(1, min(c.season, c.window))  # steps the level averages over
        self.warmup = min(c.context_length // 4, c.season)  # forks before this one are not scored
        self.embedding = nn.Embedding(c.num_series, c.embedding_size) if c.embedding_size else None
        magnitude = 1 if c.transform == "log" else 2  # the level (and, scaled, log ν)
        input_size = c.window + magnitude + c.num_features + c.embedding_size  # window, magnitude, features, id
        self.rnn = registry.layer(c.cell, input_size, c.hidden_size, num_layers=c.num_layers, dropout=c.dropout)
        Q, H = len(self.levels), c.horizon
        self.decoder = nn.Sequential(nn.Linear(c.hidden_size + c.window, c.hidden_size), nn.Tanh(),
                                     nn.Linear(c.hidden_size, H * Q))
        self.skip = nn.Linear(c.window, H * Q)  # the window straight to the quantiles: seasonal naive is linear

    def forward(self, batch: Batch) -> MQOutput:
        """Every fork's quantiles against its next H values (those beyond the window are masked)."""
        self._check(batch)
        forks = self._forks(batch)
        quantiles = self._decode(self._encode(batch, forks), forks.window)  # (B, C, H, Q)
        B, C, H = forks.target.shape
        seen = forks.target_seen.clone()
        seen[:, :self.warmup] = False  # the first forks only warm the state up
        target = forks.target.masked_fill(~seen, 0.0)
        loss = pinball_loss(quantiles.reshape(B, C * H, -1), target.reshape(B, C * H), self.levels,
                            seen.reshape(B, C * H))
        return MQOutput(loss, quantiles, target, seen)

    @torch.no_grad()
    def horizon_loss(self, batch: Batch) -> tuple[float, int]:
        """(mean pinball loss, count) of the last fork, the forecast from the end of the past: the validation
        loss (transformed units: relative to the level, so series of every size weigh alike)."""
        out = self(batch)
        seen = out.observed[:, -1]  # (B, H)
        return pinball_loss(out.quantiles[:, -1], out.target[:, -1], self.levels, seen).item(), int(seen.sum())

    @torch.no_grad()
    def quantiles(self, batch: Batch, levels, generator=None, num_samples: int = 0) -> Tensor:
        """(B, H, Q) quantiles of the horizon after the past at `levels`, data units: the last fork's, linearly
        interpolated between the trained levels (and held at the outermost ones beyond them). No sampling:
        generator and num_samples are accepted for the forecasters' common interface."""
        self._check(batch)
        forks = self._forks(batch)
        trained = self._decode(self._encode(batch, forks)[:, -1:], forks.window[:, -1:])[:, 0]  # (B, H, Qt)
        want = check_levels(levels).to(trained)  # (Q,)
        have = torch.tensor(self.levels).to(trained)  # (Qt,)
        i = torch.searchsorted(have, want).clamp(1, len(have) - 1)  # (Q,) upper neighbours
        w = ((want - have[i - 1]) / (have[i] - have[i - 1])).clamp(0, 1)  # (Q,)
        q = trained[..., i - 1] * (1 - w) + trained[..., i] * w + forks.level[:, -1, None, None]  # (B, H, Q)
        if self.config.transform == "log":
            return q.clamp(max=80.0).exp()
        return q * forks.scale[:, -1, None, None]

    def _forks(self, batch: Batch) -> Forks:
        """Each fork's window and targets in its own units (log, or divided by the mean |value| of its window:
        nothing a fork forecasts enters its scale), and its level, the mean over the window's last season."""
        P, C, W, H = self.past_length, self.config.context_length, self.config.window, self.config.horizon
        values = torch.cat([batch.past, batch.future], dim=1)  # (B, P + H)
        observed = batch.observed.clone()
        if self.config.transform == "log":
            observed &= values > 0  # a value <= 0 has no log: unobserved
            values = torch.where(observed, values.clamp(min=1e-30).log(), torch.zeros_like(values))
        values = values.masked_fill(~observed, 0.0)
        window, seen = values[:, :P].unfold(1, W, 1), observed[:, :P].unfold(1, W, 1)  # (B, C, W): z[t-W+1 .. t]
        target, target_seen = values[:, P - C + 1:].unfold(1, H, 1), observed[:, P - C + 1:].unfold(1, H, 1)
        if self.config.transform == "log":
            scale = torch.ones_like(window[..., 0])  # (B, C)
        else:
            scale = mean_scale(window.flatten(0, 1), seen.flatten(0, 1)).view_as(window[..., 0])  # (B, C)
            window, target = window / scale[..., None], target / scale[..., None]
        recent, recent_seen = window[..., -self.level_span:], seen[..., -self.level_span:].to(window.dtype)
        level = (recent * recent_seen).sum(-1) / recent_seen.sum(-1).clamp(min=1)  # (B, C)
        window = (window - level[..., None]).masked_fill(~seen, 0.0)
        return Forks(window, seen, target - level[..., None], target_seen, level, scale)

    def _encode(self, batch: Batch, forks: Forks) -> Tensor:
        """The RNN's output at every fork (B, C, N): it reads the window relative to the level, the level's
        magnitude, the time features and the series' embedding."""
        P, C = self.past_length, self.config.context_length
        if self.config.transform == "log":  # the level is the log of the magnitude: of order 1 once / 10
            magnitude = [forks.level[..., None] / 10]
        else:  # the level relative to the window's scale, and the scale itself (as DeepAR's log ν)
            magnitude = [forks.level[..., None], forks.scale[..., None].log() / 10]
        parts = [forks.window, *magnitude, batch.past_features[:, P - C:]]
        if self.embedding is not None:
            parts.append(self.embedding(batch.series)[:, None].expand(-1, C, -1))  # (B, C, E)
        out, _ = self.rnn(torch.cat(parts, dim=-1))  # (B, C, I) -> (B, C, N)
        return out

    def _decode(self, out: Tensor, window: Tensor) -> Tensor:
        """RNN outputs (B, T, N) and the forks' windows (B, T, W) -> quantiles (B, T, H, Q), increasing along Q."""
        B, T, _ = out.shape
        raw = self.decoder(torch.cat([out, window], dim=-1)) + self.skip(window)  # (B, T, H * Q)
        return monotone_quantiles(raw.view(B, T, self.config.horizon, len(self.levels)))

    def _check(self, batch: Batch) -> None:
        c = self.config
        check_batch(batch, self.past_length, c.num_features, f"context {c.context_length} + window {c.window} - 1")


def parse_levels(text: str) -> list[float]:
    """"0.1,0.5,0.9" -> [0.1, 0.5, 0.9]; a ValueError naming the text if it is not a list of numbers."""
    try:
        return [float(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"quantile levels must be comma-separated numbers in (0, 1), got {text!r}") from None
