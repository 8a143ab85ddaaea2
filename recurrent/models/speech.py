"""A CTC speech recogniser: log-mel frames -> optional strided convolution -> recurrent stack -> characters + blank.

    model = SpeechRecognizer(SpeechConfig(input_size=40, num_chars=29, hidden_size=256, num_layers=3))
    out = model(feats, lengths)            # feats (B, T, M): out.log_probs (B, T', C), out.lengths (B,)
    loss = ctc_loss(out, targets, target_lengths)

    # a unidirectional model (bidirectional=False) runs as a stream, with the same output as the whole pass:
    state = model.initial_stream(batch_size=1)
    for chunk in chunks:                   # chunk (B, t, M): any number of frames, even 0
        log_probs, state = model.stream(chunk, state)
    log_probs = model.finish(state)        # the last `lookahead` frames, once the audio has ended

Key: B batch, T frames, T' frames after the stride, M mel bins, K kernel, S stride, H hidden, D directions,
C classes (the blank, id 0, and the characters).

The front end is one Conv1d over time with kernel K and stride S (Amodei et al. 2016, "Deep Speech 2", use strided
convolutions to shorten the sequence the recurrent layers run over), padded K - S frames on the left only: output
frame j sees input frames [jS - (K - S), jS + S), never later ones, so it is causal and a stream can compute it
from what it has heard. T' = T // S.

The input is normalised inside the model with the training set's mean and variance per mel bin (buffers), or, with
running_norm = N > 0, causally per utterance (online CMVN, as Kaldi's apply-cmvn-online): frame t is normalised by
the mean and variance of frames 0..t, with the training set's statistics counted as N frames before them. A voice's
loudness and timbre shift log-mel energies by an offset per bin; per-utterance statistics remove it, and the running
ones do so without waiting for the end of the utterance, so a stream can use them.

A unidirectional model hears nothing after the frame it labels. Deep Speech 2 (Amodei et al. 2016, section 3.7)
gives it a little future with a lookahead convolution: with lookahead τ > 0, the recurrent output at frame t becomes
r_t = sum_{i=0..τ} w_i * h_{t+i} (elementwise, per feature; h past the end is 0) before the linear layer, so each
frame's label sees τ frames ahead: a stream's latency grows by τ·S frames and stays bounded. w starts as the
identity (w_0 = 1, the rest 0), the model without lookahead.
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
    lookahead: int = field(default=0, metadata=between(0, 100))  # τ: output frames of future context (0: none)
    running_norm: int = field(default=0, metadata=between(0, 100_000))  # N: prior frames of causal per-utterance
    #                                                       normalisation (0: the training set's statistics alone)


class SpeechOutput(NamedTuple):
    log_probs: Tensor  # (B, T', C), log-softmaxed
    lengths: Tensor  # (B,) valid frames of each row


class StreamState(NamedTuple):
    pending: Tensor  # (B, p, M): normalised frames the convolution has not used up (the left context and a remainder)
    sums: Tensor  # (B, 2, M): the running normalisation's prior plus the sums of x and x^2 over the frames so far
    count: int  # the frames so far, plus the prior's
    rnn: NamedTuple  # the recurrent layer's state, each field (L, 1, B, H)
    recent: Tensor  # (B, r, D*H): recurrent outputs still waiting for their lookahead (r <= τ)


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
        width = c.hidden_size * (2 if c.bidirectional else 1)  # D*H
        self.look = nn.Conv1d(width, width, c.lookahead + 1, groups=width, bias=False) if c.lookahead else None
        if self.look is not None:
            with torch.no_grad():  # the identity: w_0 = 1, w_1.. = 0
                self.look.weight.zero_()
                self.look.weight[:, 0, 0] = 1.0
        self.out = nn.Linear(width, c.num_chars)

    @property
    def stride(self) -> int:
        return self.config.conv_stride if self.conv is not None else 1

    @property
    def left_context(self) -> int:
        return self.config.conv_kernel - self.config.conv_stride if self.conv is not None else 0

    def _initial_sums(self, batch_size: int) -> tuple[Tensor, int]:
        """The running normalisation's prior: N frames with the training set's mean and variance, (B, 2, M)."""
        N, mean, std = self.config.running_norm, self.feature_mean, self.feature_std
        return torch.stack([N * mean, N * (std ** 2 + mean ** 2)]).expand(batch_size, 2, -1), N

    def _normalize(self, x: Tensor, sums: Tensor, count: int) -> tuple[Tensor, Tensor, int]:
        """Frames (B, t, M) normalised, after `count` frames whose running sums are `sums` (B, 2, M); and the sums
        and count after them."""
        if not self.config.running_norm:
            return (x - self.feature_mean) / self.feature_std, sums, count + x.shape[1]
        s1 = sums[:, None, 0] + x.cumsum(1)  # (B, t, M): sum of x over the prior and frames 0..t
        s2 = sums[:, None, 1] + (x * x).cumsum(1)
        n = count + torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[:, None]  # (t, 1)
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(1e-6)
        sums = torch.stack([s1[:, -1], s2[:, -1]], 1) if x.shape[1] else sums
        return (x - mean) * var.rsqrt(), sums, count + x.shape[1]

    def _front(self, x: Tensor) -> Tensor:
        """Convolve normalised frames, left-padded by left_context: (B, K - S + T, M) -> (B, T', conv)."""
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
        x, _, _ = self._normalize(feats, *self._initial_sums(B))  # (B, T, M)
        x = F.pad(x, (0, 0, self.left_context, 0))  # (B, K - S + T, M): zeros (the mean) before the first frame
        h = self._front(x)[:, :T // self.stride]  # (B, T', conv)
        h, _ = self.rnn(h, lengths=lengths)  # (B, T', D*H)
        if self.look is not None:  # frames past each row's end are 0, as past a stream's end
            h = h * (torch.arange(h.shape[1])[None, :] < lengths[:, None]).to(h)[..., None]
            h = self._look(F.pad(h, (0, 0, 0, self.config.lookahead)))  # (B, T', D*H)
        return SpeechOutput(self._labels(h), lengths)

    def _look(self, h: Tensor) -> Tensor:
        """The lookahead convolution: (B, n + τ, D*H) -> (B, n, D*H)."""
        return self.look(h.transpose(1, 2)).transpose(1, 2)

    def initial_stream(self, batch_size: int = 1) -> StreamState:
        if self.config.bidirectional:
            raise ValueError("a bidirectional model needs the whole utterance; train with --no-bidirectional to "
                             "stream")
        p = next(self.parameters())
        pending = p.new_zeros(batch_size, self.left_context, self.config.input_size)  # (B, K - S, M)
        recent = p.new_zeros(batch_size, 0, self.out.in_features)  # (B, 0, D*H)
        return StreamState(pending, *self._initial_sums(batch_size), self.rnn.initial_state(batch_size, p), recent)

    def stream(self, feats: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """The log-probabilities of the output frames that `feats` (B, t, M) completes, (B, t', C), and the state
        to pass with the next chunk. Chunks concatenated give what forward() gives for the whole utterance."""
        feats, sums, count = self._normalize(feats, state.sums, state.count)
        pending = torch.cat([state.pending, feats], 1)  # (B, p + t, M)
        n = (pending.shape[1] - self.left_context) // self.stride  # output frames ready
        if n < 1:
            return self._labels(state.recent[:, :0]), StreamState(pending, sums, count, state.rnn, state.recent)
        h = self._front(pending[:, :(n - 1) * self.stride + self.left_context + self.stride])[:, :n]  # (B, n, conv)
        h, rnn = self.rnn(h, state.rnn)  # the recurrent state carried from the last chunk
        h = torch.cat([state.recent, h], 1)  # (B, r + n, D*H)
        ready = max(h.shape[1] - self.config.lookahead, 0)  # frames whose lookahead has been heard
        out = h if self.look is None else self._look(h) if ready else h[:, :0]  # (B, ready, D*H)
        return self._labels(out), StreamState(pending[:, n * self.stride:], sums, count, rnn, h[:, ready:])

    def finish(self, state: StreamState) -> Tensor:
        """The log-probabilities of the frames still waiting for their lookahead when the audio ends: (B, r, C)
        (none without lookahead). The stream's outputs and these are forward()'s."""
        if self.look is None or state.recent.shape[1] == 0:
            return self._labels(state.recent[:, :0])
        return self._labels(self._look(F.pad(state.recent, (0, 0, 0, self.config.lookahead))))

    def _labels(self, h: Tensor) -> Tensor:
        """(B, n, D*H) -> (B, n, C) log-probabilities."""
        return torch.log_softmax(self.out(h).float(), -1)


def ctc_loss(out: SpeechOutput, targets: Tensor, target_lengths: Tensor) -> Tensor:
    """The CTC loss (torch's) per target character, averaged over the batch. targets (B, U) padded, (B,) lengths.
    zero_infinity: an utterance too short for its transcript adds nothing instead of inf."""
    return F.ctc_loss(out.log_probs.transpose(0, 1), targets, out.lengths, target_lengths, blank=0,
                      reduction="mean", zero_infinity=True)
