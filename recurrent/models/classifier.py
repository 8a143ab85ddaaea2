"""Sequence classification (many-to-one): embedding -> (bi)RNN -> pooling over time -> linear head.

Key: B batch, T time, V vocab, E embedding size, H hidden size, D directions, C classes.

Pooling turns the RNN outputs (B, T, D*H) into one vector per sequence, never looking at padding:
    last       the final state of each direction at the sequence's own last step: [h→_len-1 | h←_0]
    mean       the average of the valid outputs
    max        the element-wise max of the valid outputs (Conneau et al. 2017)
    attention  a learned weighted average: a_t = softmax_t(v·tanh(W o_t)) over valid t (Yang et al. 2016)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.backends import BACKENDS
from recurrent.cells import registry
from recurrent.validation import at_least, fraction

POOLINGS = ("last", "mean", "max", "attention")
STRUCTURES = ("sequence", "tree")


@dataclass
class ClassifierConfig:
    vocab_size: int = field(default=0, metadata=at_least(0))  # V: taken from the data
    num_classes: int = field(default=0, metadata=at_least(0))  # C: taken from the data
    structure: str = field(default="sequence", metadata={
        "help": "sequence: a (bi)RNN over the words; tree: a recursive network over SST parse trees "
                "(recurrent.models.tree; cell lstm = Tree-LSTM, rnn = recursive NN)", "choices": STRUCTURES})
    cell: str = field(default="lstm", metadata={"help": "recurrent cell (recurrent.cells.registry); for trees: "
                                                        "lstm or rnn (alias elman)", "choices": registry.ANY_NAMES})
    embedding_size: int = 100  # E
    hidden_size: int = 150  # H, per direction
    num_layers: int = 1  # sequence only, as the three below
    bidirectional: bool = True
    pooling: str = field(default="max", metadata={"help": f"one of {POOLINGS}", "choices": POOLINGS})
    backend: str = field(default="auto", metadata={"help": "layer backend", "choices": BACKENDS})
    dropout: float = field(default=0.5, metadata=fraction())  # on the embeddings and on the pooled vector (tree:
    #                                                           on every node's h)


class ClassifierOutput(NamedTuple):
    logits: Tensor  # (B, C)
    loss: Tensor | None  # mean cross-entropy, when labels are given


def valid_mask(lengths: Tensor, T: int) -> Tensor:
    """(B, T) bool: True on each sequence's first `length` steps."""
    return torch.arange(T, device=lengths.device) < lengths.unsqueeze(1)


def pool(out: Tensor, state, lengths: Tensor, pooling: str, attention: nn.Module | None = None) -> Tensor:
    """out (B, T, D*H), the layer's final state, lengths (B,) -> (B, D*H), ignoring padding."""
    B, T, _ = out.shape
    mask = valid_mask(lengths, T).unsqueeze(2)  # (B, T, 1)
    if pooling == "last":
        return torch.cat(list(state.h[-1]), dim=-1)  # (D, B, H) -> (B, D*H): each direction's final state
    if pooling == "mean":
        return (out * mask).sum(1) / lengths.unsqueeze(1).to(out.dtype)
    if pooling == "max":
        return out.masked_fill(~mask, float("-inf")).max(dim=1).values
    if pooling == "attention":
        scores = attention(out).masked_fill(~mask, float("-inf"))  # (B, T, 1)
        return (F.softmax(scores, dim=1) * out).sum(1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def check_sizes(config: ClassifierConfig) -> None:
    """ValueError unless the data gave the config a vocabulary and classes."""
    if config.vocab_size < 1 or config.num_classes < 1:
        raise ValueError(f"vocab_size and num_classes must be >= 1, got {config.vocab_size}, {config.num_classes}")


class SequenceClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        check_sizes(config)
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
        self.config = config
        D = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=0)
        self.rnn = registry.layer(config.cell, config.embedding_size, config.hidden_size, num_layers=config.num_layers,
                                  bidirectional=config.bidirectional, dropout=config.dropout, backend=config.backend)
        self.attention = None
        if config.pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(D * config.hidden_size, config.hidden_size), nn.Tanh(),
                                           nn.Linear(config.hidden_size, 1, bias=False))
        self.head = nn.Linear(D * config.hidden_size, config.num_classes)

    def forward(self, words: Tensor, lengths: Tensor, labels: Tensor | None = None) -> ClassifierOutput:
        """words (B, T) ids (0 = padding), lengths (B,), labels (B,) -> logits (B, C)."""
        p = self.config.dropout
        lengths = lengths.to(words.device)  # the masks are built where the outputs are
        x = F.dropout(self.embedding(words), p, self.training)  # (B, T, E)
        out, state = self.rnn(x, lengths=lengths)  # (B, T, D*H)
        pooled = F.dropout(pool(out, state, lengths, self.config.pooling, self.attention), p, self.training)
        logits = self.head(pooled)  # (B, C)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ClassifierOutput(logits, loss)
