"""Sequence tagging (synced many-to-many): one tag per token (Huang et al. 2015; Lample et al. 2016).

Key: B batch, T time (words), C characters per word, V vocab, E embedding size, H hidden, D directions, K tags.

    word embedding [+ character-level word vector]  ->  BiRNN  ->  linear: emissions (B, T, K)
    -> softmax per token (cross-entropy), or a linear-chain CRF over the whole sentence (Viterbi decoding)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.backends import BACKENDS
from recurrent.cells import registry
from recurrent.models.char_encoder import CHAR_ENCODERS, CharEncoder
from recurrent.models.classifier import valid_mask
from recurrent.models.crf import CRF, bio_constraints
from recurrent.validation import at_least, fraction


@dataclass
class TaggerConfig:
    vocab_size: int = field(default=0, metadata=at_least(0))  # V: taken from the data
    num_chars: int = field(default=0, metadata=at_least(0))  # character vocabulary: taken from the data
    num_tags: int = field(default=0, metadata=at_least(0))  # K: taken from the data
    cell: str = field(default="lstm", metadata={"help": "recurrent cell (recurrent.cells.registry)",
                                                "choices": registry.NAMES})
    embedding_size: int = 100  # E
    hidden_size: int = 200  # H, per direction
    num_layers: int = 1
    bidirectional: bool = True
    char_encoder: str = field(default="none", metadata={"help": f"one of {CHAR_ENCODERS}", "choices": CHAR_ENCODERS})
    char_embedding_size: int = 25
    char_hidden_size: int = 25  # per direction for lstm; filters for cnn
    crf: bool = False  # a CRF output layer instead of a per-token softmax
    constrain: bool = True  # with crf and BIO tags: forbid invalid transitions (I-X after O / another type)
    dropout: float = field(default=0.5, metadata=fraction())  # on the word representations and the RNN outputs
    backend: str = field(default="auto", metadata={"help": "layer backend", "choices": BACKENDS})


class TaggerOutput(NamedTuple):
    emissions: Tensor  # (B, T, K) per-token tag scores
    loss: Tensor | None  # CRF: mean negative log-likelihood per sentence; softmax: mean cross-entropy per token


class SequenceTagger(nn.Module):
    def __init__(self, config: TaggerConfig, tags: list[str] | None = None):
        """`tags` (the tag names, in id order) lets a CRF constrain BIO transitions."""
        super().__init__()
        if min(config.vocab_size, config.num_tags) < 1:
            raise ValueError(f"vocab_size and num_tags must be >= 1, got {config.vocab_size}, {config.num_tags}")
        if config.char_encoder not in CHAR_ENCODERS:
            raise ValueError(f"char_encoder must be one of {CHAR_ENCODERS}, got {config.char_encoder!r}")
        self.config = config
        D = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=0)
        self.chars = None
        size = config.embedding_size
        if config.char_encoder != "none":
            self.chars = CharEncoder(config.char_encoder, max(config.num_chars, 2), config.char_embedding_size,
                                     config.char_hidden_size)
            size += self.chars.output_size
        self.rnn = registry.layer(config.cell, size, config.hidden_size, num_layers=config.num_layers,
                                  bidirectional=config.bidirectional, dropout=config.dropout, backend=config.backend)
        self.head = nn.Linear(D * config.hidden_size, config.num_tags)
        self.crf = None
        if config.crf:
            from recurrent.data.labelled import is_iob
            constrain = config.constrain and tags is not None and is_iob(tags)
            self.crf = CRF(config.num_tags, bio_constraints(tags) if constrain else None)

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor | None = None,
                char_lengths: Tensor | None = None, tags: Tensor | None = None) -> TaggerOutput:
        """words (B, T) ids (0 = padding), lengths (B,), chars (B, T, C) and char_lengths (B, T) when the model
        has a char encoder, tags (B, T) -> emissions (B, T, K)."""
        B, T = words.shape
        p = self.config.dropout
        lengths = lengths.to(words.device)  # the masks below follow the input's device
        x = self.embedding(words)  # (B, T, E)
        if self.chars is not None:
            if chars is None:
                raise ValueError("this tagger has a char encoder: pass chars and char_lengths")
            valid = valid_mask(lengths, T)  # (B, T)
            per_word = self.chars(chars[valid], char_lengths[valid])  # (N, Hc) for the N valid words
            char_x = per_word.new_zeros(B, T, per_word.shape[1])
            char_x[valid] = per_word
            x = torch.cat([x, char_x], dim=-1)  # (B, T, E + Hc)
        x = F.dropout(x, p, self.training)
        out, _ = self.rnn(x, lengths=lengths)  # (B, T, D*H)
        emissions = self.head(F.dropout(out, p, self.training))  # (B, T, K)
        return TaggerOutput(emissions, None if tags is None else self.loss(emissions, lengths, tags))

    def loss(self, emissions: Tensor, lengths: Tensor, tags: Tensor) -> Tensor:
        mask = valid_mask(lengths.to(emissions.device), emissions.shape[1])  # (B, T)
        tags = tags.to(emissions.device)
        if self.crf is not None:
            return -self.crf.log_likelihood(emissions, tags, mask).mean()
        return F.cross_entropy(emissions[mask], tags[mask])

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor) -> list[list[int]]:
        """The best tag ids of each sentence: Viterbi with a CRF, else the per-token argmax."""
        mask = valid_mask(lengths.to(emissions.device), emissions.shape[1])  # (B, T)
        best = self.crf.decode(emissions, mask) if self.crf is not None else emissions.argmax(-1)  # (B, T)
        return [row[:n] for row, n in zip(best.tolist(), lengths.tolist())]
