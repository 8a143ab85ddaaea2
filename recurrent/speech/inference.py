"""A trained recogniser from its run folder: transcribe files (whole, or streamed chunk by chunk) and score a manifest.

    rec = load_recognizer("runs/digits")
    rec.transcribe(Path("a.wav"), beam=8)                # "one two three"
    rec.transcribe(Path("a.wav"), stream=True)           # fed 200 ms at a time, state carried: the same text
    rec.evaluate("test.tsv", beam=8)                     # {"greedy_wer", "greedy_cer", "beam_wer", "beam_cer"}
    rec.transcribe_audio(audio_from_bytes(wav_bytes, rec.features.sample_rate))   # an upload (recurrent serve)
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recurrent.errors import UserError
from recurrent.inference.common import load_best
from recurrent.models.speech import SpeechConfig, SpeechRecognizer
from recurrent.speech.ctc import Scorer, greedy, prefix_beam_search
from recurrent.speech.data import (
    Conversions,
    Utterance,
    Vocab,
    load_audio,
    read_audio,
    read_manifest,
)
from recurrent.speech.features import (
    FeatureConfig,
    LogMelStream,
    log_mel,
    normalize_utterance,
)
from recurrent.speech.metrics import error_rates


def build(meta: dict) -> SpeechRecognizer:
    if meta["features"]["n_mels"] != meta["model"]["input_size"]:
        raise ValueError(f"features.n_mels is {meta['features']['n_mels']}, model.input_size is "
                         f"{meta['model']['input_size']}")
    return SpeechRecognizer(SpeechConfig(**meta["model"]))


@dataclass
class Recognizer:
    model: SpeechRecognizer
    vocab: Vocab
    features: FeatureConfig
    prune: float = 1e-3  # beam search skips characters below this probability at a frame
    scorer: Scorer | None = None  # beam search's language model: a Lexicon, or None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def decode(self, log_probs: Tensor, beam: int) -> str:
        """(T', C) -> text: greedy for beam 1, else prefix beam search."""
        log_probs = log_probs.float().cpu()
        ids = greedy(log_probs) if beam == 1 else prefix_beam_search(log_probs, beam, scorer=self.scorer,
                                                                        prune=self.prune)
        return self.vocab.decode(ids)

    def feats(self, audio) -> Tensor:
        """(N,) samples -> (T, M) features, normalised as in training."""
        feats = log_mel(audio, self.features)
        return normalize_utterance(feats) if self.features.normalize == "utterance" else feats

    @torch.no_grad()
    def log_probs(self, audio) -> Tensor:
        """The whole-utterance pass: (N,) samples -> (T', C)."""
        return self.batch_log_probs([self.feats(audio)])[0]

    @torch.no_grad()
    def batch_log_probs(self, feats: list[Tensor], batch_size: int = 16) -> list[Tensor]:
        """Each utterance's (T', C), run in padded batches of similar lengths."""
        out: list[Tensor] = [torch.zeros(0, len(self.vocab))] * len(feats)
        order = sorted((i for i in range(len(feats)) if len(feats[i]) >= self.model.stride),
                       key=lambda i: len(feats[i]))  # shorter than the stride: no output frame
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            x = torch.nn.utils.rnn.pad_sequence([feats[i] for i in rows], batch_first=True)  # (B, T, M)
            result = self.model(x.to(self.device), torch.tensor([len(feats[i]) for i in rows]))
            for b, i in enumerate(rows):
                out[i] = result.log_probs[b, :result.lengths[b]].float().cpu()
        return out

    @torch.no_grad()
    def stream_log_probs(self, audio, chunk_ms: float = 200.0) -> Tensor:
        """The same, fed `chunk_ms` of audio at a time with the state carried (a unidirectional model trained
        with --normalize running or global)."""
        if self.model.config.bidirectional:
            raise UserError("--stream needs a unidirectional model (train with --no-bidirectional --normalize "
                            "running); this one is bidirectional")
        if self.features.normalize == "utterance":
            raise UserError("--stream needs a model trained with --normalize running or global: per-utterance "
                            "normalisation needs the whole utterance")
        frames, state, parts = LogMelStream(self.features), self.model.initial_stream(1), []
        step = max(1, int(self.features.sample_rate * chunk_ms / 1000))
        for start in range(0, len(audio), step):
            feats = frames.push(audio[start:start + step])  # (t, M)
            out, state = self.model.stream(feats[None].to(self.device), state)
            parts.append(out[0])
        parts.append(self.model.finish(state)[0])  # the frames still waiting for their lookahead at the end
        return torch.cat(parts)

    def transcribe(self, path: Path, beam: int = 1, stream: bool = False, conversions: Conversions | None = None
                   ) -> str:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such audio file")
        audio = load_audio(Utterance(Path(path), "", str(path)), self.features.sample_rate, conversions)
        return self.transcribe_audio(audio, beam, stream)

    def transcribe_audio(self, audio: np.ndarray, beam: int = 1, stream: bool = False) -> str:
        """(N,) float32 mono samples at features.sample_rate -> text."""
        return self.decode(self.stream_log_probs(audio) if stream else self.log_probs(audio), beam)

    def evaluate(self, manifest, beam: int = 8) -> dict:
        """WER and CER of greedy decoding and of beam search over a manifest. A reference character the model
        never saw is scored as it stands (the model cannot write it: an error), with a note on stderr."""
        utterances = read_manifest(manifest)
        unseen = sorted({ch for u in utterances for ch in u.text if ch not in self.vocab.stoi})
        if unseen:
            lines = sum(any(ch in unseen for ch in u.text) for u in utterances)
            print(f"recurrent: speech: {manifest}: {lines} transcript{'s' * (lines > 1)} {'hold' if lines > 1 else 'holds'} characters the model "
                  f"never saw ({', '.join(map(repr, unseen))}): scored as they stand", file=sys.stderr)
        conversions = Conversions()
        feats = [self.feats(load_audio(u, self.features.sample_rate, conversions)) for u in utterances]
        log_probs = self.batch_log_probs(feats)
        greedy_hyps = [self.decode(lp, 1) for lp in log_probs]
        beam_hyps = [self.decode(lp, beam) for lp in log_probs]
        said = conversions.describe(self.features.sample_rate)
        if said:
            print(f"recurrent: speech: {manifest}: {said}", file=sys.stderr)
        refs = [u.text for u in utterances]
        g, b = error_rates(refs, greedy_hyps), error_rates(refs, beam_hyps)
        return {"greedy_wer": g["wer"], "greedy_cer": g["cer"], "beam_wer": b["wer"], "beam_cer": b["cer"],
                "utterances": len(refs)}


def audio_from_bytes(data: bytes, sample_rate: int, where: str = "audio") -> np.ndarray:
    """load_audio for the bytes of an audio file (an upload): float32 mono samples at `sample_rate`, (N,)."""
    return read_audio(io.BytesIO(data), sample_rate, where)


def load_recognizer(run_dir, device: str = "cpu") -> Recognizer:
    model, meta = load_best(run_dir, "speech", build, device)
    return Recognizer(model, Vocab(tuple(meta["chars"])), FeatureConfig(**meta["features"]))
