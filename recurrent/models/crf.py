"""A linear-chain conditional random field over tag sequences (Lafferty et al. 2001; Lample et al. 2016).

Key: B batch, T time, K tags.

The score of a tag path y for emissions e (B, T, K) is

    s(y) = start[y_0] + Σ_t e[t, y_t] + Σ_{t>0} A[y_{t-1}, y_t] + end[y_{len-1}]

and p(y | x) = exp s(y) / Z with Z = Σ_y' exp s(y'). The forward algorithm computes log Z in log space:
α_0 = start + e_0, α_t[j] = logsumexp_i(α_{t-1}[i] + A[i, j]) + e_t[j], log Z = logsumexp(α_{len-1} + end).
Viterbi replaces logsumexp by max and keeps back-pointers. Batches are padded: `mask` (B, T) is True on each
sequence's valid prefix (at least one step); padded steps carry α through unchanged.

A constraint (e.g. `bio_constraints`) forbids transitions by adding FORBIDDEN (a large negative number, not
-inf, so that a forbidden gold path still has a finite loss and no gradient is NaN).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

FORBIDDEN = -1e4


def bio_constraints(tags: list[str]) -> tuple[Tensor, Tensor]:
    """(allowed (K, K) with [i, j] = may tag j follow tag i, allowed_start (K,)) for BIO tags: I-X may only
    follow B-X or I-X, so never O, another type, or the sentence start. Other tags are unconstrained."""
    K = len(tags)
    allowed = torch.ones(K, K, dtype=torch.bool)
    start = torch.ones(K, dtype=torch.bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            start[j] = False
            for i, prev in enumerate(tags):
                allowed[i, j] = prev[:2] in ("B-", "I-") and prev[2:] == tag[2:]
    return allowed, start


class CRF(nn.Module):
    """Linear-chain CRF with learned transitions, start and end scores; optional hard constraints.

        crf = CRF(num_tags=9, constraints=bio_constraints(tags))
        nll = -crf.log_likelihood(emissions, tags, mask).mean()
        best = crf.decode(emissions, mask)        # (B, T) tag ids, 0 past each length
    """

    def __init__(self, num_tags: int, constraints: tuple[Tensor, Tensor] | None = None):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]
        self.start = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        allowed, allowed_start = constraints if constraints is not None else (
            torch.ones(num_tags, num_tags, dtype=torch.bool), torch.ones(num_tags, dtype=torch.bool))
        if allowed.shape != (num_tags, num_tags) or allowed_start.shape != (num_tags,):
            raise ValueError(f"constraints must be ({num_tags}, {num_tags}) and ({num_tags},), "
                             f"got {tuple(allowed.shape)} and {tuple(allowed_start.shape)}")
        self.register_buffer("allowed", allowed.clone(), persistent=False)
        self.register_buffer("allowed_start", allowed_start.clone(), persistent=False)

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """(transitions (K, K), start (K,), end (K,)) with forbidden entries set to FORBIDDEN."""
        trans = self.transitions.masked_fill(~self.allowed, FORBIDDEN)
        start = self.start.masked_fill(~self.allowed_start, FORBIDDEN)
        return trans, start, self.end

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """log p(tags | x) per sequence, (B,): the same as `log_likelihood`."""
        return self.log_likelihood(emissions, tags, mask)

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """log p(tags | x) per sequence, (B,). emissions (B, T, K), tags (B, T) long, mask (B, T) bool."""
        self._check(emissions, mask)
        return self.path_score(emissions, tags, mask) - self.log_partition(emissions, mask)

    def path_score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """s(tags), (B,)."""
        trans, start, end = self.scores()
        mask, tags = mask.to(emissions.device, emissions.dtype), tags.to(emissions.device)
        emit = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T): e[t, y_t]
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1): A[y_{t-1}, y_t]
        lengths = mask.sum(1).long()
        last = tags.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)  # (B,)
        return start[tags[:, 0]] + (emit * mask).sum(1) + (step * mask[:, 1:]).sum(1) + end[last]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z per sequence, (B,), by the forward algorithm."""
        trans, start, end = self.scores()
        mask = mask.to(emissions.device)
        alpha = start + emissions[:, 0]  # (B, K)
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + emissions[:, t]  # (B, K): sum over from
            alpha = torch.where(mask[:, t].unsqueeze(1), nxt, alpha)  # padding: carry α unchanged
        return torch.logsumexp(alpha + end, dim=1)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """The Viterbi path, (B, T) long, 0 past each sequence's length."""
        self._check(emissions, mask)
        trans, start, end = self.scores()
        mask = mask.to(emissions.device)
        B, T, K = emissions.shape
        alpha = start + emissions[:, 0]  # (B, K)
        keep = torch.arange(K, device=emissions.device).expand(B, K)  # padding's back-pointer: stay put
        pointers = []
        for t in range(1, T):
            best, prev = (alpha.unsqueeze(2) + trans).max(dim=1)  # (B, K): best predecessor of each tag
            valid = mask[:, t].unsqueeze(1)
            alpha = torch.where(valid, best + emissions[:, t], alpha)
            pointers.append(torch.where(valid, prev, keep))
        tag = (alpha + end).argmax(dim=1)  # (B,): the last valid step's tag, carried to T-1 through padding
        path = [tag]
        for prev in reversed(pointers):
            tag = prev.gather(1, tag.unsqueeze(1)).squeeze(1)
            path.append(tag)
        path = torch.stack(path[::-1], dim=1)  # (B, T)
        return path.masked_fill(~mask, 0)

    def _check(self, emissions: Tensor, mask: Tensor) -> None:
        if emissions.dim() != 3 or emissions.shape[2] != self.num_tags:
            raise ValueError(f"emissions must be (batch, time, {self.num_tags}), got {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool {tuple(emissions.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        if not bool(mask[:, 0].all()):
            raise ValueError("every sequence needs at least one step: mask[:, 0] must be True")

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}, constrained={not bool(self.allowed.all() and self.allowed_start.all())}"
