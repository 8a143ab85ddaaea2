"""`recurrent train speech`: a CTC recogniser (recurrent/models/speech.py) on a manifest of audio and transcripts,
trained on the one loop (recurrent/train/loop.py).

    config = flat_replace(TrainSpeechConfig(), train="data/train.tsv", valid="data/valid.tsv", out="runs/digits")
    run_dir = train_speech(config)            # metrics.jsonl: val_loss (CTC per character), cer and wer (greedy)

Every file is read, resampled and turned into log-mel features once, when the task is built (recurrent/speech/).
Each epoch shuffles the utterances with a generator seeded by (seed, epoch), batches utterances of similar length
together, and masks the features with SpecAugment from the same generator: a resumed run sees the same batches.
The best checkpoint is the one with the lowest validation CER, greedy-decoded.

Key: B batch, T frames, M mel bins, U transcript characters.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from recurrent.errors import UserError
from recurrent.models.speech import SpeechConfig, SpeechRecognizer, ctc_loss
from recurrent.speech.ctc import greedy
from recurrent.speech.data import Conversions, Vocab, load_audio, read_manifest
from recurrent.speech.features import (
    FeatureConfig,
    SpecAugmentConfig,
    log_mel,
    normalize_utterance,
    spec_augment,
)
from recurrent.speech.metrics import error_rates
from recurrent.train import distributed
from recurrent.train.loop import TrainConfig, train
from recurrent.validation import at_least, between, check


RUNNING_PRIOR = 100  # --normalize running: the training set's statistics count as 1 s of frames (at 10 ms a frame)


def speech_training(**changes) -> TrainConfig:
    """The recogniser's defaults: AdamW at 1e-3, gradients clipped at 5 (CTC's early gradients are large),
    30 epochs, fp32."""
    defaults = {"out": "runs/speech", "lr": 1e-3, "clip": 5.0, "epochs": 30, "precision": "fp32"}
    return TrainConfig(**{**defaults, **changes})


@dataclass
class TrainSpeechConfig:
    train: str = ""  # a manifest: path<TAB>transcript lines, paths relative to it
    valid: str = ""  # the same, for validation (every character must be one the training transcripts have)
    batch_size: int = field(default=16, metadata=at_least(1))  # utterances per step
    sample_rate: int = field(default=16000, metadata=between(1000, 192000))  # audio is resampled to this
    n_mels: int = field(default=40, metadata=between(1, 512))  # M
    win_ms: float = field(default=25.0, metadata=between(1.0, 1000.0))
    hop_ms: float = field(default=10.0, metadata=between(1.0, 1000.0))
    normalize: str = field(default="utterance", metadata={"choices": ("utterance", "global", "running"), "help":
                           "utterance: each utterance's mel bins to mean 0, std 1; global: by the training set's "
                           "mean and std; running: by the utterance's mean and variance so far, the training set's "
                           "counting as --running-norm frames (100 if 0). global and running are causal: what "
                           "transcribe --stream needs"})
    freq_masks: int = field(default=2, metadata=at_least(0))  # SpecAugment, in training only
    freq_width: int = field(default=8, metadata=at_least(0))
    time_masks: int = field(default=2, metadata=at_least(0))
    time_width: int = field(default=20, metadata=at_least(0))
    freq_warp: float = field(default=0.0, metadata=between(0.0, 0.5, help="vocal tract length "
                             "perturbation in training: each utterance's frequency axis scaled by a factor from "
                             "[1 - w, 1 + w]"))
    training: TrainConfig = field(default_factory=speech_training)
    model: SpeechConfig = field(default_factory=SpeechConfig)

    def validate(self) -> None:
        check(self)
        if not self.train or not self.valid:
            raise UserError("--train and --valid are required: manifests of path<TAB>transcript lines")
        if self.normalize == "utterance" and not self.model.bidirectional:
            print("recurrent: speech: a unidirectional model with --normalize utterance cannot stream (the mean "
                  "needs the whole utterance); use --normalize running or global for transcribe --stream",
                  file=sys.stderr)
        if self.model.running_norm and self.normalize != "running":
            raise UserError(f"--running-norm {self.model.running_norm} needs --normalize running, got --normalize "
                            f"{self.normalize}")
        self.training.validate()

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(self.sample_rate, self.n_mels, self.win_ms, self.hop_ms, self.normalize)

    @property
    def spec_augment(self) -> SpecAugmentConfig:
        return SpecAugmentConfig(self.freq_masks, self.freq_width, self.time_masks, self.time_width,
                                 warp=self.freq_warp, sample_rate=self.sample_rate)


class SpeechBatch(NamedTuple):
    feats: Tensor  # (B, T, M), zero past each length
    lengths: Tensor  # (B,) frames
    targets: Tensor  # (B, U) character ids, 0 past each length
    target_lengths: Tensor  # (B,)


class StepOutput(NamedTuple):
    loss: Tensor


def featurize(manifest: str, features: FeatureConfig, vocab: Vocab | None = None):
    """(raw log-mel features (T, M) per utterance, transcripts, the vocabulary: built from these transcripts when
    not given). Says which audio was resampled or downmixed."""
    utterances = read_manifest(manifest)
    vocab = vocab or Vocab.from_texts(u.text for u in utterances)
    conversions, feats, targets = Conversions(), [], []
    for u in utterances:
        targets.append(torch.tensor(vocab.encode(u.text, u.where)))  # a bad character fails before the audio
        feats.append(log_mel(load_audio(u, features.sample_rate, conversions), features))
    said = conversions.describe(features.sample_rate)
    if said:
        print(f"recurrent: speech: {manifest}: {said}", file=sys.stderr)
    return feats, [u.text for u in utterances], targets, vocab


def pad_batch(feats: list[Tensor], targets: list[Tensor]) -> SpeechBatch:
    lengths = torch.tensor([len(f) for f in feats])
    target_lengths = torch.tensor([len(t) for t in targets])
    return SpeechBatch(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths,
                       torch.nn.utils.rnn.pad_sequence(targets, batch_first=True), target_lengths)


class SpeechTask:
    """CTC on characters; the metric is the validation CER of greedy decoding (lower is better)."""

    name, metric, higher_is_better, unit = "speech", "cer", False, "ex"

    def __init__(self, config: TrainSpeechConfig, resumed: dict | None = None):
        self.config = config
        features = config.features
        vocab = Vocab(tuple(resumed["chars"])) if resumed else None
        self.feats, _, self.targets, self.vocab = featurize(config.train, features, vocab)
        self.valid_feats, self.valid_texts, self.valid_targets, _ = featurize(config.valid, features, self.vocab)
        running = (config.model.running_norm or RUNNING_PRIOR) if config.normalize == "running" else 0
        self.model_config = replace(config.model, input_size=features.n_mels, num_chars=len(self.vocab),
                                    running_norm=running)
        try:
            self.model = SpeechRecognizer(self.model_config)
        except ValueError as e:
            raise UserError(str(e)) from None
        if config.normalize != "utterance":  # the training frames' mean and std, kept in the model's buffers
            frames = torch.cat(self.feats)  # (all frames, M)
            self.model.feature_mean.copy_(frames.mean(0))
            self.model.feature_std.copy_(frames.std(0).clamp_min(1e-3))
        else:
            self.feats = [normalize_utterance(f) for f in self.feats]
            self.valid_feats = [normalize_utterance(f) for f in self.valid_feats]
        short = min(range(len(self.feats)), key=lambda i: len(self.feats[i]))
        if len(self.feats[short]) < self.model.stride:
            raise UserError(f"{config.train}: utterance {short + 1} has {len(self.feats[short])} frames, fewer "
                            f"than the stride {self.model.stride}")

    def meta(self) -> dict:
        return {"model": asdict(self.model_config), "chars": list(self.vocab.itos),
                "features": asdict(self.config.features)}

    def steps_per_epoch(self) -> int:
        return -(-len(self.feats) // self.config.batch_size)

    def batches(self, epoch: int):
        """Shuffled, then sorted by length within pools of 50 batches (less padding), the batches in random order;
        SpecAugment drawn from the same generator."""
        g = torch.Generator().manual_seed(self.config.training.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.feats), generator=g).tolist()
        B = self.config.batch_size
        pool = 50 * B
        groups = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=lambda i: len(self.feats[i]))
            groups += [chunk[i:i + B] for i in range(0, len(chunk), B)]
        world = distributed.world()
        augment = self.config.spec_augment
        # masks take the mean's value: 0 for features normalised here, the training set's mean for the raw features
        # a model with global or running normalisation gets (0 would be a loud band: log-mel energies are ~ -6)
        fill = None if self.config.normalize == "utterance" else self.model.feature_mean.clone()
        for k in torch.randperm(len(groups), generator=g).tolist():
            rows = groups[k]
            feats = [spec_augment(self.feats[i], augment, g, fill) for i in rows]
            batch = pad_batch(feats, [self.targets[i] for i in rows])
            yield world.share(len(rows), lambda r, b=batch: SpeechBatch(*(t[r] for t in b)))

    def step(self, model, batch: SpeechBatch, carry):
        return StepOutput(ctc_loss(model(batch.feats, batch.lengths), batch.targets, batch.target_lengths)), None

    def count(self, batch: SpeechBatch) -> int:
        return len(batch.lengths)

    def weight(self, batch: SpeechBatch) -> int:
        return len(batch.lengths)

    def evaluate(self, model) -> dict:
        """val_loss: CTC per character; cer and wer: of greedy decoding (jiwer)."""
        device = next(model.parameters()).device
        order = sorted(range(len(self.valid_feats)), key=lambda i: len(self.valid_feats[i]))
        hyps, loss, n = [""] * len(order), 0.0, 0
        for start in range(0, len(order), 32):
            rows = order[start:start + 32]
            batch = pad_batch([self.valid_feats[i] for i in rows], [self.valid_targets[i] for i in rows])
            out = model(batch.feats.to(device), batch.lengths)
            loss += ctc_loss(out, batch.targets.to(device), batch.target_lengths.to(device)).item() * len(rows)
            n += len(rows)
            log_probs = out.log_probs.float().cpu()
            for b, i in enumerate(rows):
                hyps[i] = self.vocab.decode(greedy(log_probs[b, :out.lengths[b]]))
        return {"val_loss": loss / n, **error_rates(self.valid_texts, hyps)}


def train_speech(config: TrainSpeechConfig) -> Path:
    """Train as `config` says; return the run folder."""
    config.validate()
    return train(lambda resumed: SpeechTask(config, resumed), config.training, asdict(config))
