"""Character-level word encoders: one vector per word from its characters, so that unseen words, capitals and
suffixes still inform a tagger (Lample et al. 2016: BiLSTM; Ma & Hovy 2016: CNN with max-pooling).

Key: N words, C characters per word, E char embedding size, H output size per word.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

import recurrent as rc

CHAR_ENCODERS = ("none", "lstm", "cnn")


class CharEncoder(nn.Module):
    """chars (N, C) ids, 0 = padding, lengths (N,) >= 1 -> (N, output_size).

    lstm: a BiLSTM over the characters; the word vector is [final forward state | final backward state].
    cnn:  a width-3 convolution, then the max over each word's valid positions.
    """

    def __init__(self, kind: str, num_chars: int, embedding_size: int = 25, hidden_size: int = 25):
        super().__init__()
        if kind not in ("lstm", "cnn"):
            raise ValueError(f"char encoder must be 'lstm' or 'cnn', got {kind!r}")
        self.kind = kind
        self.embedding = nn.Embedding(num_chars, embedding_size, padding_idx=0)
        if kind == "lstm":
            self.rnn = rc.LSTM(embedding_size, hidden_size, bidirectional=True)
            self.output_size = 2 * hidden_size
        else:
            self.conv = nn.Conv1d(embedding_size, hidden_size, kernel_size=3, padding=1)
            self.output_size = hidden_size

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(chars)  # (N, C, E)
        if self.kind == "lstm":
            _, state = self.rnn(x, lengths=lengths)
            return torch.cat([state.h[-1, 0], state.h[-1, 1]], dim=-1)  # (N, 2H)
        valid = torch.arange(chars.shape[1], device=chars.device) < lengths.to(chars.device).unsqueeze(1)  # (N, C)
        x = x * valid.unsqueeze(2)  # zeros past each word, as the convolution's own padding: width never matters
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (N, C, H)
        return y.masked_fill(~valid.unsqueeze(2), float("-inf")).max(dim=1).values  # (N, H)
