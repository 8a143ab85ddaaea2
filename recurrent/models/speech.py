"""A CTC speech recogniser: log-mel frames -> optional strided convolution -> recurrent stack -> characters + blank.

    model = SpeechRecognizer(SpeechConfig(input_size=40, num_chars=29, hidden_size=256, num_layers=3))
    out = model(feats, lengths)            # feats (B, T, M): out.log_probs (B, T', C), out.lengths (B,)
    loss = ctc_loss(out, targets, target_lengths)

    # a unidirectional model (bidirectional=False) runs as a stream, with the same output as the whole pass:
    state = model.initial_stream(batch_size=1)
    for chunk in chunks:                   # chunk (B, t, M): any number of frames, even 0
        log_probs, state = model.stream(chunk, state)

Key: B batch, T frames, T' frames after the stride, M mel bins, K kernel, S stride, H hidden, D directions,
C classes (the blank, id 0, and the characters).

The front end is one Conv1d over time with kernel K and stride S (Amodei et al. 2016, "Deep Speech 2", use strided
convolutions to shorten the sequence the recurrent layers run over), padded K - S frames on the left only: output
frame j sees input frames [jS - (K - S), jS + S), never later ones, so it is causal and a stream can compute it
from what it has heard. T' = T // S.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recurrent.cells import registry
from recurrent.validation import at_least, between, fraction


@dataclass
class SpeechConfig:
    input_size: int = field(default=0, metadata=at_least(0))  # M: mel bins (derived from the features)
    num_chars: int = field(default=0, metadata=at_least(0))  # C: the blank and the characters (derived from the
    #                                                           training transcripts)
    cell: str = field(default="lstm", metadata={"choices": registry.NAMES, "help": "the recurrent cell"})
    hidden_size: int = 256  # H, per direction
    num_layers: int = 3
    bidirectional: bool = True  # False: a causal model that can transcribe a stream (--stream)
    dropout: float = field(default=0.1, metadata=fraction())  # between recurrent layers
    conv_channels: int = field(default=256, metadata=at_least(0))  # the convolution's outputs (0: no front end)
    conv_kernel: int = field(default=5, metadata=between(1, 64))  # K frames
    conv_stride: int = field(default=2, metadata=between(1, 16))  # S: 2 halves the frames the recurrence runs on


class SpeechOutput(NamedTuple):
    log_probs: Tensor  # (B, T', C), log-softmaxed
    lengths: Tensor  # (B,) valid frames of each row


class StreamState(NamedTuple):
    pending: Tensor  # (B, p, M): input frames the convolution has not used up (the left context and a remainder)
    rnn: NamedTuple  # the recurrent layer's state, each field (L, 1, B, H)


class SpeechRecognizer(nn.Module):
    def __init__(self, config: SpeechConfig):
        super().__init__()
        c = config
        if c.input_size < 1 or c.num_chars < 2:
            raise ValueError(f"input_size must be >= 1 and num_chars >= 2 (the blank and a character), got "
                             f"{c.input_size} and {c.num_chars}")
        if c.conv_channels and c.conv_kernel < c.conv_stride:
            raise ValueError(f"conv_kernel must be >= conv_stride, got {c.conv_kernel} < {c.conv_stride}")
        self.config = c
        # the training set's feature mean and std (features normalised globally); 0 and 1 otherwise
        self.register_buffer("feature_mean", torch.zeros(c.input_size))
        self.register_buffer("feature_std", torch.ones(c.input_size))
        self.conv = nn.Conv1d(c.input_size, c.conv_channels, c.conv_kernel, c.conv_stride) if c.conv_channels else None
        rnn_input = c.conv_channels or c.input_size
        self.rnn = registry.layer(c.cell, rnn_input, c.hidden_size, num_layers=c.num_layers,
                                  bidirectional=c.bidirectional, dropout=c.dropout)
        self.out = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), c.num_chars)

    @property
    def stride(self) -> int:
        return self.config.conv_stride if self.conv is not None else 1

    @property
    def left_context(self) -> int:
        return self.config.conv_kernel - self.config.conv_stride if self.conv is not None else 0

    def _front(self, x: Tensor) -> Tensor:
        """Normalise, and convolve frames already left-padded by left_context: (B, T, M) -> (B, T', conv)."""
        x = (x - self.feature_mean) / self.feature_std
        if self.conv is None:
            return x
        return F.gelu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, T', conv)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> SpeechOutput:
        B, T, _ = feats.shape  # (B, T, M)
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long)
        lengths = lengths.cpu() // self.stride
        if T // self.stride < 1 or int(lengths.min()) < 1:
            raise ValueError(f"every utterance needs at least {self.stride} frames, got {int(lengths.min())}")
        x = F.pad(feats, (0, 0, self.left_context, 0))  # (B, K - S + T, M): zeros before the first frame
        if self.left_context:  # the padding is zeros after normalisation, as a stream's first context
            x[:, :self.left_context] = self.feature_mean
        h = self._front(x)[:, :T // self.stride]  # (B, T', conv)
        h, _ = self.rnn(h, lengths=lengths)  # (B, T', D*H)
        return SpeechOutput(torch.log_softmax(self.out(h).float(), -1), lengths)

    def initial_stream(self, batch_size: int = 1) -> StreamState:
        if self.config.bidirectional:
            raise ValueError("a bidirectional model needs the whole utterance; train with --no-bidirectional to "
                             "stream")
        p = next(self.parameters())
        pending = self.feature_mean.expand(batch_size, self.left_context, -1).clone()  # (B, K - S, M)
        return StreamState(pending, self.rnn.initial_state(batch_size, p))

    def stream(self, feats: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """The log-probabilities of the output frames that `feats` (B, t, M) completes, (B, t', C), and the state
        to pass with the next chunk. Chunks concatenated give what forward() gives for the whole utterance."""
        pending = torch.cat([state.pending, feats], 1)  # (B, p + t, M)
        n = (pending.shape[1] - self.left_context) // self.stride  # output frames ready
        if n < 1:
            return feats.new_zeros(feats.shape[0], 0, self.config.num_chars), StreamState(pending, state.rnn)
        h = self._front(pending[:, :(n - 1) * self.stride + self.left_context + self.stride])[:, :n]  # (B, n, conv)
        h, rnn = self.rnn(h, state.rnn)  # the recurrent state carried from the last chunk
        return torch.log_softmax(self.out(h).float(), -1), StreamState(pending[:, n * self.stride:], rnn)


def ctc_loss(out: SpeechOutput, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """The CTC loss (torch's) per target character, averaged over the batch. targets (B, U) padded, (B,) lengths.
    zero_infinity: an utterance too short for its transcript adds nothing instead of inf."""
    return F.ctc_loss(out.log_probs.transpose(0, 1), targets, out.lengths, target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)
