"""DeepAR (Salinas et al. 2020): one autoregressive RNN for many series, read through a likelihood head.

At each step t the network sees the previous values (the lags, 1 always among them) divided by the window's scale ν,
the time features of step t, log ν and, optionally, an embedding of the series' id; the head reads its output as a
distribution over z_t (recurrent/forecast/heads.py), in data units. Training is teacher forced over the context and
the horizon; forecasting unrolls the horizon, feeding each sampled value back as the next input.

    model = Forecaster(ForecasterConfig(context_length=96, horizon=48, lags=(1, 2, 24), num_features=4))
    out = model(batch)                                    # batch: a recurrent.forecast.data.Batch
    out.loss.backward()                                   # masked NLL over the observed context and horizon
    paths = model.sample(batch, 100, torch.Generator().manual_seed(0))   # (S, B, H), data units

A batch's past holds `context_length + max(lags)` steps (`model.past_length`): the RNN unrolls over the last
`context_length` of them, and the steps before only feed the lags.

Key: B batch, P past steps given (past_length), C context (unrolled past), H horizon, F features, L lags,
S sample paths, I input, N hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from recurrent.cells import registry
from recurrent.forecast.data import Batch, check_batch, lagged
from recurrent.forecast.heads import LIKELIHOODS, make_head, masked_nll, sample_quantiles
from recurrent.validation import at_least, fraction


@dataclass
class ForecasterConfig:
    architecture: str = field(default="deepar", metadata={"help": "deepar (autoregressive, a likelihood head, "
                              "sample paths) or mqrnn (direct multi-horizon quantiles)",
                              "choices": ("deepar", "mqrnn")})
    cell: str = field(default="lstm", metadata={"help": "recurrent cell (recurrent.cells.registry)",
                                                "choices": registry.NAMES})
    hidden_size: int = 40  # N: DeepAR's paper uses 40 units
    num_layers: int = 2
    dropout: float = field(default=0.1, metadata=fraction())  # between the RNN's layers
    likelihood: str = field(default="student_t", metadata={"help": f"one of {tuple(LIKELIHOODS)}",
                                                           "choices": tuple(LIKELIHOODS)})
    embedding_size: int = field(default=0, metadata=at_least(0))  # of the series id (0: no embedding)
    # mqrnn only (recurrent/models/mqrnn.py):
    window: int = field(default=0, metadata={**at_least(0), "help": "mqrnn: past values each step reads (0: "
                        "max(season, horizon); a week of hourly data: 168)"})
    transform: str = field(default="auto", metadata={"help": "log (positive series), scale (divide by the mean "
                           "|value|) or auto: log if every training value is > 0", "choices": ("auto", "log", "scale")})
    quantile_levels: str = field(default="0.025,0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95,0.975",
                                 metadata={"help": "mqrnn: the quantile levels trained (others interpolate)"})
    # taken from the data and the task (no flags):
    num_features: int = field(default=0, metadata=at_least(0))  # F: time features and covariates per step
    num_series: int = field(default=1, metadata=at_least(1))  # ids the embedding knows
    context_length: int = field(default=96, metadata=at_least(1))  # C: steps the RNN unrolls before forecasting
    horizon: int = field(default=48, metadata=at_least(1))  # H
    lags: tuple = (1,)  # of ints: the L lags z_{t-lag} in each step's input, sorted, 1 first
    season: int = field(default=1, metadata=at_least(1))  # the seasonal period: mqrnn's level spans one


class ForecastOutput(NamedTuple):
    loss: Tensor  # masked NLL, a mean over the observed steps of context and horizon
    distribution: Distribution  # over the target (B, C + H), data units
    target: Tensor  # (B, C + H) the values scored, data units (0 where unobserved)
    observed: Tensor  # (B, C + H) bool


class Forecaster(nn.Module):
    """An RNN (any registered cell, batch first) and a likelihood head: DeepAR's global model."""

    def __init__(self, config: ForecasterConfig):
        super().__init__()
        lags = list(config.lags)
        if not lags or lags[0] != 1 or lags != sorted(set(lags)):
            raise ValueError(f"lags must be sorted, distinct and start at 1, got {config.lags}")
        self.config = config
        self.lags = lags
        self.past_length = config.context_length + lags[-1]  # P
        self.embedding = nn.Embedding(config.num_series, config.embedding_size) if config.embedding_size else None
        input_size = len(lags) + config.num_features + 1 + config.embedding_size  # lags, features, log ν, id
        self.rnn = registry.layer(config.cell, input_size, config.hidden_size, num_layers=config.num_layers,
                                  dropout=config.dropout)
        self.head = make_head(config.likelihood, config.hidden_size)

    def forward(self, batch: Batch) -> ForecastOutput:
        """Teacher forcing over the last C past steps and the H future ones; the loss is the NLL of every
        observed value among them (DeepAR trains on the context too: more targets per window)."""
        P, C = self.past_length, self.config.context_length
        self._check(batch)
        values = torch.cat([batch.past, batch.future], dim=1)  # (B, P + H)
        features = torch.cat([batch.past_features, batch.future_features], dim=1)  # (B, P + H, F)
        lags, mask = lagged(values / batch.scale[:, None], batch.observed, self.lags)  # (B, P + H, L)
        x = self._inputs(lags, mask, features, batch.scale, batch.series)[:, P - C:]  # (B, C + H, I)
        out, _ = self.rnn(x)  # (B, C + H, N)
        distribution = self.head(out, batch.scale)
        target, observed = values[:, P - C:], batch.observed[:, P - C:]  # (B, C + H)
        return ForecastOutput(masked_nll(distribution, target, observed), distribution, target, observed)

    @torch.no_grad()
    def sample(self, batch: Batch, num_samples: int, generator: torch.Generator) -> Tensor:
        """(S, B, H) sample paths in data units: unroll the context, then draw each future step from the head and
        feed it back. The draws come from `generator` alone (torch's global RNG is left as it was)."""
        P, C, H = self.past_length, self.config.context_length, batch.future.shape[1]
        self._check(batch)
        S, B = num_samples, batch.past.shape[0]
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        device = batch.past.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            lags, mask = lagged(batch.past / batch.scale[:, None], batch.observed[:, :P], self.lags)  # (B, P, L)
            x = self._inputs(lags, mask, batch.past_features, batch.scale, batch.series)[:, P - C:]  # (B, C, I)
            _, state = self.rnn(x)  # the context, encoded once per series; fields (L, D, B, N)
            repeat = lambda t, dim=0: t.repeat_interleave(S, dim=dim)  # noqa: E731  B -> B*S, a series' paths together
            state = type(state)(*(repeat(f, -2) for f in state))  # (L, D, S*B, N)
            values = repeat(torch.cat([batch.past, torch.zeros_like(batch.future)], dim=1))  # (S*B, P + H)
            observed = repeat(batch.observed.clone())
            observed[:, P:] = True  # each sampled value is known once drawn
            features = repeat(torch.cat([batch.past_features, batch.future_features], dim=1))  # (S*B, P+H, F)
            scale, series = repeat(batch.scale), repeat(batch.series)
            for h in range(H):
                t = P + h
                back = t - torch.tensor(self.lags, device=device)  # (L,): the steps the lags of step t read
                lags = (values[:, back] / scale[:, None])[:, None]  # (S*B, 1, L)
                x = self._inputs(lags, observed[:, back][:, None], features[:, t:t + 1], scale, series)
                out, state = self.rnn(x, state)  # (S*B, 1, N)
                values[:, t] = self.head(out, scale).sample()[:, 0]
        return values[:, P:].view(B, S, H).transpose(0, 1)  # (S, B, H)

    @torch.no_grad()
    def horizon_loss(self, batch: Batch) -> tuple[float, int]:
        """(mean NLL, count) over the observed values of the horizon, teacher forced: the validation loss."""
        out = self(batch)
        in_horizon = torch.zeros_like(out.observed)
        in_horizon[:, -batch.future.shape[1]:] = out.observed[:, -batch.future.shape[1]:]  # (B, C + H)
        return masked_nll(out.distribution, out.target, in_horizon).item(), int(in_horizon.sum())

    @torch.no_grad()
    def quantiles(self, batch: Batch, levels, generator: torch.Generator, num_samples: int = 200) -> Tensor:
        """(B, H, Q) quantiles of the horizon at `levels` (increasing, in (0, 1)), data units: those of
        `num_samples` sample paths. Every forecaster answers this (recurrent.models.forecaster.build)."""
        return sample_quantiles(self.sample(batch, num_samples, generator), levels)

    def _inputs(self, lags: Tensor, mask: Tensor, features: Tensor, scale: Tensor, series: Tensor) -> Tensor:
        """Each step's input (B, T, I): the lagged values / ν (0 where unobserved), the features, log ν, the id's
        embedding. lags and mask (B, T, L), features (B, T, F), scale (B,), series (B,)."""
        B, T, _ = lags.shape
        parts = [lags * mask, features, scale.log()[:, None, None].expand(B, T, 1)]
        if self.embedding is not None:
            parts.append(self.embedding(series)[:, None].expand(B, T, -1))  # (B, T, E)
        return torch.cat(parts, dim=-1)  # (B, T, I)

    def _check(self, batch: Batch) -> None:
        check_batch(batch, self.past_length, self.config.num_features,
                    f"context {self.config.context_length} + the largest lag {self.lags[-1]}")


def build(config: ForecasterConfig) -> nn.Module:
    """The forecaster `config.architecture` names: each has `past_length`, `forward(batch).loss` for training and
    `quantiles(batch, levels, generator)` -> (B, H, Q) for forecasting."""
    if config.architecture == "deepar":
        return Forecaster(config)
    if config.architecture == "mqrnn":
        from recurrent.models.mqrnn import MQForecaster
        return MQForecaster(config)
    raise ValueError(f"architecture must be one of ('deepar', 'mqrnn'), got {config.architecture!r}")
