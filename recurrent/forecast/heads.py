"""Output heads of RNN forecasters: likelihood heads for DeepAR, a quantile head for MQ-RNN, and quantiles of paths.

DeepAR (Salinas et al. 2020) reads each step's RNN output as the parameters of a distribution over the target,
trains by negative log-likelihood, and forecasts by sampling paths: each sample is fed back as the next input. The
network sees inputs divided by a per-series scale ν, so a head takes ν and returns the distribution in data units.
MQ-RNN (Wen et al. 2017) instead reads one output as every horizon's quantiles at once and trains by pinball loss.

    head = make_head("student_t", hidden_size=40)
    distribution = head(out, scale)                       # out (B, T, H), scale (B,) -> StudentT over (B, T)
    loss = masked_nll(distribution, target, mask)         # NaN targets count as unobserved
    quantiles = sample_quantiles(paths, [0.1, 0.5, 0.9])  # paths (S, B, T) -> (B, T, 3)

Key: B batch, T time, H hidden, S sample paths, K horizons, Q quantile levels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, NegativeBinomial, Normal, StudentT


def _series_scale(scale: Tensor | None, like: Tensor) -> Tensor:
    """The per-series scale, (B,) or (B, 1), shaped to broadcast over `like` (B, ...). None means 1."""
    if scale is None:
        return like.new_ones(())
    if scale.numel() != like.shape[0] or scale.shape[0] != like.shape[0]:
        raise ValueError(f"scale must hold one value per series, shape ({like.shape[0]},), got {tuple(scale.shape)}")
    return scale.reshape(-1, *[1] * (like.dim() - 1))  # (B, 1, ..., 1)


class LikelihoodHead(nn.Module):
    """Maps RNN outputs (B, T, H) to a distribution over the target (B, T): one linear layer gives the raw
    parameters, and `distribution` maps them to valid ones in data units. A subclass sets `num_params` and
    `distribution(*raw, scale)`.

    `scale` is the per-series ν > 0 (B,) that divided the inputs; None means the data were not scaled.
    """

    num_params: int

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        self.proj = nn.Linear(hidden_size, self.num_params)
        self.eps = eps  # keeps scales and rates away from 0 when softplus underflows

    def forward(self, out: Tensor, scale: Tensor | None = None) -> Distribution:  # out (B, T, H)
        raw = self.proj(out).unbind(-1)  # num_params tensors (B, T)
        return self.distribution(*raw, scale=_series_scale(scale, raw[0]))

    def distribution(self, *raw: Tensor, scale: Tensor) -> Distribution:
        raise NotImplementedError


class GaussianHead(LikelihoodHead):
    """y ~ N(ν μ, (ν σ)²) with μ = w_μ·h + b_μ, σ = softplus(w_σ·h + b_σ) + eps."""

    num_params = 2

    def distribution(self, raw_loc: Tensor, raw_scale: Tensor, *, scale: Tensor) -> Normal:
        sigma = F.softplus(raw_scale) + self.eps
        return Normal(raw_loc * scale, sigma * scale)


class StudentTHead(LikelihoodHead):
    """y ~ ν·StudentT(df, μ, σ): μ, σ as GaussianHead, df = 2 + softplus(w_df·h + b_df) + eps, so the variance
    σ² df / (df - 2) stays finite."""

    num_params = 3

    def distribution(self, raw_loc: Tensor, raw_scale: Tensor, raw_df: Tensor, *, scale: Tensor) -> StudentT:
        sigma = F.softplus(raw_scale) + self.eps
        df = 2.0 + F.softplus(raw_df) + self.eps
        return StudentT(df, raw_loc * scale, sigma * scale)


class NegativeBinomialHead(LikelihoodHead):
    """Counts y ~ NB with mean μ and variance μ + α μ² (GluonTS's parametrisation), μ = softplus(·) + eps and
    α = softplus(·) + eps. Scaled as in DeepAR's paper: μ -> ν μ, α -> α / sqrt(ν).

    torch's NegativeBinomial(total_count r, logits l) has mean r e^l and variance r e^l (1 + e^l), so r = 1/α and
    l = log(α μ) give mean μ and variance μ + α μ².
    """

    num_params = 2

    def distribution(self, raw_mu: Tensor, raw_alpha: Tensor, *, scale: Tensor) -> NegativeBinomial:
        mu = (F.softplus(raw_mu) + self.eps) * scale
        alpha = (F.softplus(raw_alpha) + self.eps) / scale.sqrt()
        return NegativeBinomial(total_count=1.0 / alpha, logits=alpha.log() + mu.log())


LIKELIHOODS: dict[str, type[LikelihoodHead]] = {
    "gaussian": GaussianHead,
    "student_t": StudentTHead,
    "negative_binomial": NegativeBinomialHead,
}


def make_head(likelihood: str, hidden_size: int, **kwargs) -> LikelihoodHead:
    """The head registered as `likelihood` (`--likelihood student_t`)."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose from {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[likelihood](hidden_size, **kwargs)


def _observed(target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(observed (B, ...) bool, target with unobserved points set to 0). 0 lies in every head's support, so
    log_prob and its gradient stay finite there; the mask then drops those points."""
    observed = ~target.isnan()
    if mask is not None:
        observed = observed & mask.bool()
    return observed, torch.where(observed, target, torch.zeros_like(target))


def masked_nll(distribution: Distribution, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """The mean negative log-likelihood over observed points: mask (B, T) true and target (B, T) not NaN.
    A batch with no observed point gives 0."""
    observed, target = _observed(target, mask)
    log_prob = distribution.log_prob(target)  # (B, T)
    return -(log_prob * observed).sum() / observed.sum().clamp(min=1)


def check_levels(levels: Sequence[float] | Tensor) -> Tensor:
    """Quantile levels as a float64 tensor (Q,); a ValueError unless they are strictly increasing in (0, 1)."""
    levels = torch.as_tensor(levels, dtype=torch.float64, device="cpu").flatten()  # checked on the CPU, even
    #                                                  while a model is built on the meta device
    if levels.numel() == 0 or not bool(((levels > 0) & (levels < 1)).all()):
        raise ValueError(f"quantile levels must lie in (0, 1), got {levels.tolist()}")
    if not bool((levels.diff() > 0).all()):
        raise ValueError(f"quantile levels must be strictly increasing, got {levels.tolist()}")
    return levels


def monotone_quantiles(raw: Tensor) -> Tensor:
    """raw (..., Q) -> quantiles (..., Q) that never decrease along the last axis: the first raw value is the lowest
    quantile, and each next one adds softplus of its raw value (so quantiles cannot cross)."""
    steps = F.softplus(raw[..., 1:])  # (..., Q-1), each >= 0
    return torch.cat([raw[..., :1], raw[..., :1] + steps.cumsum(-1)], dim=-1)


class QuantileHead(nn.Module):
    """The direct multi-horizon decoder of MQ-RNN: one context (B, H) -> quantiles (B, K, Q) for K horizons and the
    given levels, by a linear layer and `monotone_quantiles`. Train with `pinball_loss`."""

    def __init__(self, input_size: int, horizon: int, levels: Sequence[float]):
        super().__init__()
        if input_size < 1 or horizon < 1:
            raise ValueError(f"input_size and horizon must be >= 1, got {input_size} and {horizon}")
        self.register_buffer("levels", check_levels(levels).float())  # (Q,)
        self.horizon = horizon
        self.proj = nn.Linear(input_size, horizon * len(self.levels))

    def forward(self, context: Tensor, scale: Tensor | None = None) -> Tensor:  # context (B, H)
        B, K, Q = context.shape[0], self.horizon, len(self.levels)
        raw = self.proj(context).view(B, K, Q)  # (B, K, Q)
        return monotone_quantiles(raw) * _series_scale(scale, raw)  # (B, K, Q), data units


def pinball_loss(quantiles: Tensor, target: Tensor, levels: Sequence[float] | Tensor,
                 mask: Tensor | None = None) -> Tensor:
    """The quantile (pinball) loss ρ_τ(y - q) = max(τ (y - q), (τ - 1)(y - q)), averaged over the levels and the
    observed points. quantiles (B, K, Q), target (B, K), levels (Q,); NaN targets count as unobserved."""
    levels = torch.as_tensor(levels, dtype=quantiles.dtype, device=quantiles.device)  # (Q,)
    observed, target = _observed(target, mask)
    error = target.unsqueeze(-1) - quantiles  # (B, K, Q)
    loss = torch.maximum(levels * error, (levels - 1) * error).mean(-1)  # (B, K)
    return (loss * observed).sum() / observed.sum().clamp(min=1)


def sample_quantiles(samples: Tensor, levels: Sequence[float] | Tensor) -> Tensor:
    """Quantiles of sample paths: samples (S, B, T) -> (B, T, Q) at the given levels (linear interpolation)."""
    levels = check_levels(levels).to(samples.device, samples.dtype)  # (Q,)
    return torch.quantile(samples, levels, dim=0).movedim(0, -1)  # (Q, B, T) -> (B, T, Q)


class Interval(NamedTuple):
    lower: Tensor  # (B, T)
    upper: Tensor  # (B, T)


def prediction_interval(samples: Tensor, coverage: float = 0.8) -> Interval:
    """The central interval holding `coverage` of the sample paths (S, B, T) at each point: the (1 - c)/2 and
    (1 + c)/2 quantiles."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
    bounds = sample_quantiles(samples, [(1 - coverage) / 2, (1 + coverage) / 2])  # (B, T, 2)
    return Interval(*bounds.unbind(-1))
