"""Per-lag gradient norms: how much of the loss at step t reaches the hidden state k steps earlier.

Key: B batch, T time, I input, H hidden, L layers, K lags (0 .. T-1).

For a loss ℓ_t read from the top layer at step t, the chain rule through the recurrence gives

    ∂ℓ_t/∂h_k = ∂ℓ_t/∂h_t · ∏_{j=k+1..t} ∂h_j/∂h_{j-1}

so its norm shrinks (vanishing) or grows (exploding) roughly geometrically in the lag t - k
(Hochreiter 1991; Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013). We measure it
directly: `step_states` runs each layer's cells one time step at a time, like `Recurrent.forward`,
so that every h_k of every layer is its own node in the graph, and `torch.autograd.grad` of ℓ_t with
respect to the list of h_k returns ∂ℓ_t/∂h_k (the total derivative: through the recurrence and
through the layers above). The fitted slope of ln‖∂ℓ_t/∂h_{t-lag}‖ against lag is the per-step
rate; over the measured horizon it gives the verdict.

Only unidirectional layers are supported: a backward direction's lag runs the other way in time.
Dropout between layers is not applied (the diagnostic sees the network as in eval mode).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.layers import Recurrent

# ℓ_t per sequence from the top layer's output at step t: loss_fn(h_t (B, H), t) -> (B,)
StepLoss = Callable[[Tensor, int], Tensor]
VERDICTS = ("vanishing", "healthy", "exploding")


def step_states(layers: Recurrent | Sequence[Recurrent], x: Tensor, state=None) -> list[list[Tensor]]:
    """Run the layers one cell step at a time; hs[l][t] is layer l's h_t (B, H), each its own graph node.

    `layers` is one Recurrent (its stacked layers; `state` is its state) or a stack of them such as
    `LanguageModel.layers` (`state` is then one state per Recurrent, as the model carries it). Either way
    each layer reads the h_t of the layer below, and hs counts every layer of every Recurrent.
    """
    if isinstance(layers, Recurrent):
        layers, state = [layers], [state]
    elif state is None:
        state = [None] * len(layers)
    B, T = layers[0]._check_input(x)
    inp = x.unbind(1)  # T x (B, I)
    hs = []
    for layer, layer_state in zip(layers, state, strict=True):
        if layer.bidirectional:
            raise ValueError("per-lag gradients need a unidirectional layer; got bidirectional=True "
                             "(a backward direction's lag runs the other way in time)")
        if inp[0].shape[-1] != layer.input_size:
            raise ValueError(f"layer expects input_size={layer.input_size}, but the layer below gives "
                             f"{inp[0].shape[-1]} features")
        layer_state = layer.initial_state(B, x) if layer_state is None else layer._check_state(layer_state, B)
        for l, (cell,) in enumerate(layer.cells):
            s = layer.state_type(*(f[l, 0] for f in layer_state))  # this layer's initial state, (B, H) fields
            outs = []
            for t in range(T):
                s = cell(inp[t], s)
                outs.append(s.h)
            hs.append(outs)
            inp = outs  # the next layer reads this layer's h_t
    return hs


def target_steps(T: int, n_targets: int) -> list[int]:
    """The last step, then n_targets - 1 more spread evenly back to the middle of the sequence."""
    if n_targets < 1:
        raise ValueError(f"n_targets must be >= 1, got {n_targets}")
    if n_targets == 1:
        return [T - 1]
    return sorted({round(T - 1 - i * (T - 1 - (T - 1) // 2) / (n_targets - 1)) for i in range(n_targets)})


@dataclass
class LayerVerdict:
    """The fit of ln‖∂ℓ/∂h‖ = a + slope · lag for one layer, and what it means over the horizon."""

    layer: int
    slope: float  # per step, natural log; < 0 decays, > 0 grows
    horizon: int  # the largest lag fitted
    verdict: str  # "vanishing" | "healthy" | "exploding"

    @property
    def rate(self) -> float:
        """The fitted factor per step: ‖∂ℓ/∂h_{k-1}‖ ≈ rate · ‖∂ℓ/∂h_k‖."""
        return math.exp(self.slope) if math.isfinite(self.slope) else (0.0 if self.slope < 0 else math.inf)

    @property
    def ratio(self) -> float:
        """The fitted factor over the whole horizon, rate ** horizon."""
        return math.exp(min(self.slope * self.horizon, 700.0)) if math.isfinite(self.slope) else self.rate


@dataclass
class GradientProfile:
    """‖∂ℓ_t/∂h_{t-lag}‖ per layer and lag, averaged over the batch's sequences.

    `last` is for the loss at the last step only; `mean` averages the targets in `targets` at each
    lag they reach (lag <= t), so its far lags come from fewer targets.
    """

    last: Tensor  # (L, K) with K = T
    mean: Tensor  # (L, K)
    targets: list[int]

    def verdicts(self, vanish_below: float = 1e-3, explode_above: float = 1e3) -> list[LayerVerdict]:
        """Per layer: vanishing if the fitted ratio over the horizon is below `vanish_below`, exploding above
        `explode_above`, else healthy. The fit uses `last`, the loss at the last step."""
        return [judge(l, norms, vanish_below, explode_above) for l, norms in enumerate(self.last)]


def fit_slope(norms: Tensor) -> tuple[float, int]:
    """Least-squares slope of ln(norm) against lag over the finite, positive norms; (slope, largest lag)."""
    norms = norms.double()
    if not torch.isfinite(norms).all():  # inf or nan: overflowed on the way back
        return math.inf, len(norms) - 1
    lags = torch.arange(len(norms), dtype=torch.float64)
    ok = norms > 0
    if ok.sum() < 2:  # underflowed to exactly zero right away
        return -math.inf, len(norms) - 1
    lag, y = lags[ok], norms[ok].log()
    lag_c = lag - lag.mean()
    return float((lag_c * (y - y.mean())).sum() / (lag_c * lag_c).sum()), len(norms) - 1


def judge(layer: int, norms: Tensor, vanish_below: float = 1e-3, explode_above: float = 1e3) -> LayerVerdict:
    slope, horizon = fit_slope(norms)
    verdict = LayerVerdict(layer, slope, horizon, "healthy")
    if verdict.ratio < vanish_below or (norms == 0).any():
        verdict.verdict = "vanishing"
    elif verdict.ratio > explode_above:
        verdict.verdict = "exploding"
    return verdict


def gradient_profile(layers: Recurrent | Sequence[Recurrent], x: Tensor, loss_fn: StepLoss, n_targets: int = 4,
                     state=None) -> GradientProfile:
    """Per-lag gradient norms of `layers` on x (B, T, I) for the loss `loss_fn(h_t, t)` at several steps.

    `layers` and `state` are as in `step_states`: one Recurrent, or a stack such as a language model's layers.

    For each target step t in `target_steps(T, n_targets)`, one `autograd.grad` of Σ_b ℓ_t[b] with
    respect to every h_k (k <= t) of every layer; row b of the result is ∂ℓ_t[b]/∂h_k[b] because the
    sequences of a batch do not interact. Norms are over H, then averaged over the batch.
    """
    with torch.enable_grad():
        hs = step_states(layers, x, state)
        L, T = len(hs), len(hs[0])
        targets = target_steps(T, n_targets)
        total = torch.zeros(L, T, dtype=torch.float64)
        count = torch.zeros(T, dtype=torch.float64)
        last = None
        for i, t in enumerate(sorted(targets, reverse=True)):  # the last step first
            nodes = [h for layer_hs in hs for h in layer_hs[: t + 1]]
            grads = torch.autograd.grad(loss_fn(hs[-1][t], t).sum(), nodes, retain_graph=i < len(targets) - 1,
                                        allow_unused=True)
            norms = torch.zeros(L, T, dtype=torch.float64)
            for l in range(L):
                for k in range(t + 1):
                    g = grads[l * (t + 1) + k]
                    norms[l, t - k] = 0.0 if g is None else g.double().norm(dim=-1).mean()
            total[:, : t + 1] += norms[:, : t + 1]
            count[: t + 1] += 1
            last = norms if last is None else last
    return GradientProfile(last=last, mean=total / count, targets=targets)


def linear_probe(hidden_size: int, seed: int = 0) -> StepLoss:
    """ℓ_t = v · h_t with a fixed random unit vector v: a loss for untrained models on random data.

    ∂ℓ_t/∂h_t = v has norm 1, so the per-lag norms measure the recurrence alone.
    """
    v = torch.randn(hidden_size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v = v / v.norm()  # unit length in float64; cast to the states' dtype when used
    return lambda h, t: h @ v.to(h)


def next_token_loss(decoder: nn.Module, targets: Tensor) -> StepLoss:
    """ℓ_t = cross-entropy of a language model's next token: decoder(h_t) (B, V) against targets[:, t] (B, T).

    With `LanguageModel.layers` as the layers and its embedded tokens as x, the per-lag norms are those of
    the trained model's own loss.
    """
    return lambda h, t: F.cross_entropy(decoder(h), targets[:, t], reduction="none")


def summary_lines(profile: GradientProfile, verdicts: list[LayerVerdict]) -> list[str]:
    """One line per layer: `layer 0: vanishing  rate 0.912/step (slope -0.092) ...`."""
    lines = []
    for v, norms in zip(verdicts, profile.last):
        zeros = int((norms == 0).sum())
        lines.append(f"layer {v.layer}: {v.verdict:<9}  rate {v.rate:.4g}/step (slope {v.slope:+.4f} ln/step), "
                     f"fitted ratio {v.ratio:.2e} over {v.horizon} steps; "
                     f"measured |dL/dh| lag 0 {norms[0]:.2e}, lag {v.horizon} {norms[-1]:.2e}"
                     + (f"; {zeros} lags underflowed to 0 (fit over the rest)" if zeros else ""))
    return lines


def plot_profiles(profiles: dict[str, GradientProfile], path: str, title: str = "") -> None:
    """Per-lag gradient norms on a log scale: one solid line (last-step loss) and one dashed line (mean over
    target steps) per layer and per entry of `profiles` (e.g. one per cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, p) in enumerate(profiles.items()):
        color = f"C{i}"
        verdicts = p.verdicts()
        for l in range(p.last.shape[0]):
            layer = f" layer {l}" if p.last.shape[0] > 1 else ""
            label = f"{name}{layer}: {verdicts[l].verdict}, {verdicts[l].rate:.3g}/step"
            ax.semilogy(_positive(p.last[l]), color=color, alpha=1.0 - 0.3 * l, label=label)
            ax.semilogy(_positive(p.mean[l]), color=color, alpha=1.0 - 0.3 * l, linestyle="--", linewidth=0.8)
    ax.set_xlabel("lag t - k (steps back from the loss)")
    ax.set_ylabel("‖∂ℓ_t / ∂h_k‖ (mean over sequences)")
    ax.set_title(title or "per-lag gradient norms (solid: loss at last step; dashed: mean over targets)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _positive(norms: Tensor) -> Tensor:
    """Zeros become nan so that a log axis leaves a gap instead of failing."""
    return torch.where(norms > 0, norms, torch.nan)


@dataclass
class GradientMonitor:
    """The per-lag diagnostic during training: `monitor(step, model, batch)` every step, logging every `every`.

    `layer_of(model)` picks the Recurrent layer; `loss_of(model, batch)` returns (x, loss_fn) with
    loss_fn(h_t, t) -> (B,) per sequence, for a batch cut to its first `max_batch` sequences. Each record (step, per-layer slope, rate, verdict, and the
    last-step norms) is appended to `history` and, if `path` is set, to a JSONL file.
    """

    layer_of: Callable
    loss_of: Callable
    every: int = 100
    n_targets: int = 1
    max_batch: int = 16  # sequences used: the diagnostic costs a stepped forward and backward
    path: str | None = None
    history: list[dict] = field(default_factory=list)

    def __call__(self, step: int, model, batch) -> dict | None:
        if step % self.every:
            return None
        x, loss_fn = self.loss_of(model, tuple(b[: self.max_batch] for b in batch))
        profile = gradient_profile(self.layer_of(model), x, loss_fn, self.n_targets)
        record = {"step": step, "layers": [dict(asdict(v), rate=v.rate) for v in profile.verdicts()],
                  "norms": profile.last.tolist()}
        self.history.append(record)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record
