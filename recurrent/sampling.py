"""Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus) sampling."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set logits outside the top-k / the smallest set with probability ≥ top_p to -inf. logits (B, V)."""
    if top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep tokens until the mass reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class Sampler:
    """Draws next tokens (B,) from logits (B, V): greedy, or from softmax(filtered logits / temperature).

    Sampling uses the Gumbel-max trick: argmax_v(logits_v / T + g_v) with g_v = -log(e_v), e_v ~ Exp(1), picks v
    with probability softmax(logits / T)_v. The noise is drawn from `generator` `block` tokens at a time, so a
    token costs one add and one argmax instead of a softmax and a multinomial (a saving that matters at batch
    1, where a step is tens of microseconds). Filtered-out logits are -inf and never win.
    """

    def __init__(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
                 generator: torch.Generator | None = None, block: int = 256):
        if not greedy and not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be > 0 and finite (use greedy for argmax), got {temperature}")
        if top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ValueError(f"need top_k >= 0 and 0 < top_p <= 1, got top_k={top_k}, top_p={top_p}")
        self.temperature, self.top_k, self.top_p, self.greedy = temperature, top_k, top_p, greedy
        self.generator, self.block = generator, block
        self.noise, self.row = None, 0  # (block, B, V) Gumbel noise; the next unused row

    def __call__(self, logits: Tensor) -> Tensor:
        if self.greedy:
            return logits.argmax(-1)
        scale = self.temperature  # argmax(logits / T + g) = argmax(logits + T g) for T > 0
        logits = logits.float()
        if self.filters:  # the nucleus is taken after temperature
            logits, scale = filter_logits(logits / self.temperature, self.top_k, self.top_p), 1.0
        return torch.add(logits, self.next_noise(logits.shape, logits.device), alpha=scale).argmax(-1)

    @property
    def filters(self) -> bool:
        """True if top-k or top-p takes part (else a draw is one add and one argmax, which a caller may batch)."""
        return bool(self.top_k or self.top_p < 1.0)

    def next_noise(self, shape: torch.Size, device: torch.device) -> Tensor:
        """The Gumbel noise (B, V) of the next draw, for logits of `shape`: a row of the current block, or the
        first of a new one."""
        if self.noise is None or self.row == len(self.noise) or self.noise.shape[1:] != shape:
            # drawn on the generator's device (a CPU generator gives the same draws whatever device the model is
            # on), then moved to the logits' device once per block
            where = device if self.generator is None else self.generator.device
            u = torch.rand(self.block, *shape, device=where, generator=self.generator)  # [0, 1)
            self.noise, self.row = gumbel(u).to(device), 0
        g, self.row = self.noise[self.row], self.row + 1
        return g


def gumbel(u: Tensor) -> Tensor:
    """Gumbel noise g = -log e from uniform draws u in [0, 1), e = -log u ~ Exp(1) (u < 1: e > 0, g finite). On the
    CPU numpy takes the logs, on this thread: torch's log of a block this size starts a parallel region whose
    OpenMP threads then spin on the cores the native generation step runs on, a third slower for the next few
    hundred tokens."""
    tiny = torch.finfo(u.dtype).tiny
    if u.device.type == "cpu":
        return torch.from_numpy(-np.log(-np.log(np.maximum(u.numpy(), tiny))))
    return u.clamp_(min=tiny).log_().neg_().log_().neg_()


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                greedy: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Next token ids (B,) from logits (B, V): one draw of a `Sampler`."""
    return Sampler(temperature, top_k, top_p, greedy, generator, block=1)(logits)
