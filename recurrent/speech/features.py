"""Log-mel filterbank features, their normalisation, and SpecAugment.

    config = FeatureConfig(n_mels=40)
    feats = log_mel(audio, config)                  # audio (N,) float32 at config.sample_rate -> (T, M)
    feats = normalize_utterance(feats)              # each mel bin to mean 0, std 1 over the utterance
    stream = LogMelStream(config); stream.push(chunk) ...   # the same frames, computed chunk by chunk
    feats = spec_augment(feats, generator)          # training only: a frequency warp, time and frequency masks

Key: N samples, T frames, M mel bins.

Frames are taken without centring: frame t covers samples [t·hop, t·hop + win), so a frame depends only on audio
already heard, and the frames of a stream fed chunk by chunk are exactly those of the whole file. The mel filters
are librosa's (Slaney), and the STFT is torch's, so the features can be computed on the model's device.

Vocal tract length perturbation (Jaitly & Hinton 2013), in the filterbank domain: each training utterance's
frequency axis is scaled by a factor a drawn from [1 - warp, 1 + warp], so the mel bin at centre frequency f takes
the value the utterance has at f / a (linear interpolation between bins): formants move as a shorter (a > 1) or
longer vocal tract would move them, which helps a recogniser with voices it never heard.

SpecAugment (Park et al. 2019): `freq_masks` bands of up to `freq_width` mel bins and `time_masks` spans of up to
`time_width` frames (at most `time_fraction` of the utterance each) are set to the mean: 0 for features already
normalised, the training set's mean per bin (`fill`) for raw ones that the model normalises.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from torch import Tensor

from recurrent.validation import at_least, between

EPS = 1e-6  # log floor, and the smallest std normalised by


@dataclass
class FeatureConfig:
    """How audio becomes features; saved in the run's meta, so transcription computes the same ones."""

    sample_rate: int = field(default=16000, metadata=between(1000, 192000))  # audio is resampled to this
    n_mels: int = field(default=40, metadata=between(1, 512))  # M: mel bins
    win_ms: float = field(default=25.0, metadata=between(1.0, 1000.0))  # analysis window
    hop_ms: float = field(default=10.0, metadata=between(1.0, 1000.0))  # frame shift: 100 frames a second
    normalize: str = field(default="utterance", metadata={"choices": ("utterance", "global", "running"), "help":
                           "utterance: each utterance's mel bins to mean 0, std 1 (offline); global: the training "
                           "set's mean and std; running: the utterance's so far (global and running are done by the "
                           "model, and are causal: what --stream needs)"})

    @property
    def win(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def hop(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def n_fft(self) -> int:
        return self.win  # a frame is exactly one window: the stream can cut frames from what it has heard


@cache
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)).float()  # (M, F)


def log_mel(audio: np.ndarray | Tensor, config: FeatureConfig) -> Tensor:
    """(N,) samples -> (T, M) log mel energies, T = 1 + (N - win) // hop (audio shorter than a window: one frame of
    it, zero-padded)."""
    x = torch.as_tensor(audio, dtype=torch.float32)
    if len(x) < config.win:
        x = torch.nn.functional.pad(x, (0, config.win - len(x)))
    window = torch.hann_window(config.win, device=x.device)
    spec = torch.stft(x, config.n_fft, hop_length=config.hop, win_length=config.win, window=window, center=False,
                      return_complex=True)  # (F, T)
    power = spec.abs() ** 2
    mel = _mel_filters(config.sample_rate, config.n_fft, config.n_mels).to(x.device) @ power  # (M, T)
    return torch.log(mel + EPS).T.contiguous()  # (T, M)


class LogMelStream:
    """log_mel fed chunk by chunk: push(chunk) returns the frames the audio so far completes, (t, M). The frames
    of every push, concatenated, are log_mel of the whole audio (for audio of at least one window)."""

    def __init__(self, config: FeatureConfig):
        self.config, self.pending = config, np.zeros(0, np.float32)  # samples not yet consumed by a frame

    def push(self, chunk: np.ndarray) -> Tensor:
        c = self.config
        self.pending = np.concatenate([self.pending, np.asarray(chunk, np.float32)])
        if len(self.pending) < c.win:
            return torch.zeros(0, c.n_mels)
        frames = 1 + (len(self.pending) - c.win) // c.hop
        out = log_mel(self.pending[:(frames - 1) * c.hop + c.win], c)
        self.pending = self.pending[frames * c.hop:]  # the next frame starts here
        return out


def normalize_utterance(feats: Tensor) -> Tensor:
    """Each mel bin to mean 0 and std 1 over the utterance's frames. (T, M) -> (T, M)."""
    mean = feats.mean(0, keepdim=True)
    std = feats.std(0, unbiased=False, keepdim=True)
    return (feats - mean) / std.clamp_min(EPS)


@dataclass
class SpecAugmentConfig:
    freq_masks: int = field(default=2, metadata=at_least(0))  # bands of mel bins masked per utterance
    freq_width: int = field(default=8, metadata=at_least(0))  # the widest band
    time_masks: int = field(default=2, metadata=at_least(0))  # spans of frames masked per utterance
    time_width: int = field(default=20, metadata=at_least(0))  # the longest span (frames)
    time_fraction: float = field(default=0.2, metadata=between(0.0, 1.0))  # and at most this part of the utterance
    warp: float = field(default=0.0, metadata=between(0.0, 0.5))  # frequency scale drawn from [1 - warp, 1 + warp]
    sample_rate: int = field(default=16000, metadata=between(1000, 192000))  # the mel bins' frequencies follow it


@cache
def _mel_centers(sample_rate: int, n_mels: int) -> np.ndarray:
    """The centre frequency of each of the M mel filters of `_mel_filters`, in Hz: (M,)."""
    import librosa

    return librosa.mel_frequencies(n_mels=n_mels + 2, fmax=sample_rate / 2)[1:-1]


def warp_frequencies(feats: Tensor, factor: float, sample_rate: int) -> Tensor:
    """(T, M) log-mel features with the frequency axis scaled by `factor`: bin i takes the value at frequency
    f_i / factor, interpolated linearly between the bins around it (the lowest and highest bins past the ends)."""
    T, M = feats.shape
    centers = _mel_centers(sample_rate, M)
    source = torch.from_numpy(np.interp(centers / factor, centers, np.arange(M))).to(feats.dtype)  # (M,) bins
    lo = source.floor().long().clamp(max=M - 1)
    hi = (lo + 1).clamp(max=M - 1)
    w = source - lo
    return feats[:, lo] * (1 - w) + feats[:, hi] * w


def spec_augment(feats: Tensor, config: SpecAugmentConfig, generator: torch.Generator,
                 fill: Tensor | None = None) -> Tensor:
    """A copy of (T, M) features, frequency-warped (when config.warp > 0), with random mel bands and time spans set
    to their mean: `fill` (M,) for raw features, 0 (the default) for normalised ones."""
    T, M = feats.shape
    out = feats.clone()
    if config.warp > 0:
        u = float(torch.rand((), generator=generator))
        out = warp_frequencies(out, 1 - config.warp + 2 * config.warp * u, config.sample_rate)

    def draw(high: int) -> int:
        return int(torch.randint(0, high + 1, (), generator=generator)) if high > 0 else 0

    for _ in range(config.freq_masks):
        width = draw(min(config.freq_width, M))
        start = draw(M - width)
        out[:, start:start + width] = 0.0 if fill is None else fill[start:start + width]
    for _ in range(config.time_masks):
        width = draw(min(config.time_width, int(config.time_fraction * T)))
        start = draw(T - width)
        out[start:start + width] = 0.0 if fill is None else fill
    return out
