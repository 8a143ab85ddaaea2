"""Dropout variants for recurrent models (Gal & Ghahramani 2016; Merity et al. 2017, AWD-LSTM).

Key: B batch, T time, F features, V vocab, E embedding size.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout: one mask per sequence, shared by all time steps. x (B, T, F)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p) / (1 - p)  # (B, 1, F)
    return x * mask


def embedding_dropout(weight: Tensor, tokens: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole words: zero random rows of the embedding matrix (V, E), then look tokens up."""
    if training and p > 0.0:
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
        weight = weight * mask
    return F.embedding(tokens, weight)
