"""Attention over an encoder's outputs: one query per step, one weight per source position.

Key: B batch, S source length, Q query size (the decoder's hidden size), M memory size (encoder outputs),
A attention size (Bahdanau's hidden layer).

    attention = make_attention("bahdanau", query_size=256, memory_size=256)
    keys = attention.keys(memory)                        # once per sentence: (B, S, *)
    context, weights = attention(query, keys, memory, mask)   # every step: (B, M), (B, S)

Scores, then a softmax over the valid source positions (padding gets weight exactly 0):
    bahdanau  e_j = vᵀ tanh(W q + U m_j)      additive (Bahdanau et al. 2015)
    dot       e_j = qᵀ m_j                    Luong et al. 2015; needs Q == M
    general   e_j = qᵀ W m_j                  Luong et al. 2015
The source-side half of each score (U m_j, W m_j) does not depend on the step, so `keys` computes it once.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

ATTENTIONS = ("none", "bahdanau", "dot", "general")


class Attention(nn.Module):
    """Base: subclasses define `keys(memory)` and `scores(query, keys) -> (B, S)`."""

    def keys(self, memory: Tensor) -> Tensor:  # memory (B, S, M)
        return memory

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, Q), keys from `keys(memory)`, memory (B, S, M), mask (B, S) True at valid positions
        -> context (B, M), weights (B, S) summing to 1 over the valid positions."""
        scores = self.scores(query, keys).masked_fill(~mask, float("-inf"))  # (B, S)
        weights = scores.softmax(dim=-1)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, 1, S) @ (B, S, M) -> (B, M)
        return context, weights


class BahdanauAttention(Attention):
    def __init__(self, query_size: int, memory_size: int, attention_size: int | None = None):
        super().__init__()
        A = attention_size or query_size
        self.query_proj = nn.Linear(query_size, A, bias=False)  # W
        self.memory_proj = nn.Linear(memory_size, A)  # U (its bias is the score's bias)
        self.v = nn.Linear(A, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.memory_proj(memory)  # (B, S, A)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return self.v(torch.tanh(self.query_proj(query).unsqueeze(1) + keys)).squeeze(-1)  # (B, S)


class DotAttention(Attention):
    def __init__(self, query_size: int, memory_size: int):
        super().__init__()
        if query_size != memory_size:
            raise ValueError(f"dot attention needs query_size == memory_size, got {query_size} and {memory_size}")

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        return torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)  # (B, S, M) @ (B, M, 1) -> (B, S)


class GeneralAttention(DotAttention):
    def __init__(self, query_size: int, memory_size: int):
        nn.Module.__init__(self)
        self.proj = nn.Linear(memory_size, query_size, bias=False)  # W

    def keys(self, memory: Tensor) -> Tensor:
        return self.proj(memory)  # (B, S, Q)


def make_attention(kind: str, query_size: int, memory_size: int) -> Attention:
    if kind == "bahdanau":
        return BahdanauAttention(query_size, memory_size)
    if kind == "dot":
        return DotAttention(query_size, memory_size)
    if kind == "general":
        return GeneralAttention(query_size, memory_size)
    raise ValueError(f"attention must be one of {ATTENTIONS[1:]} here, got {kind!r}")
