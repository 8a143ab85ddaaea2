"""Speech data: a manifest of `path<TAB>transcript` lines, the audio it names, and the characters of the transcripts.

    utterances = read_manifest("data/train.tsv")          # paths relative to the manifest's folder
    audio = load_audio(utterances[0], 16000)               # float32 mono at 16 kHz, resampled and downmixed if need be
    vocab = Vocab.from_texts(u.text for u in utterances)   # itos[0] is the CTC blank
    vocab.encode("one two", where="test.tsv:3")            # UserError naming the line for a character it lacks

A manifest:

    wav/0001.wav	one two three
    wav/0002.wav	oh four

Every problem is a one-line UserError naming the manifest line: a line without a tab, an empty transcript, an
audio file that is missing, not audio, or empty, a transcript with a character the model has no output for.
Audio at another sample rate is resampled (librosa's soxr_hq), and stereo is the mean of its channels; `Conversions`
counts both so that the command can say what it did.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recurrent.errors import UserError

BLANK = "<blank>"  # id 0: CTC's blank


@dataclass(frozen=True)
class Utterance:
    path: Path  # the audio file, resolved against the manifest's folder
    text: str  # the transcript
    where: str  # "manifest.tsv:LINE", for messages


def read_manifest(manifest) -> list[Utterance]:
    """The manifest's utterances, in order. Blank lines are skipped; every other line is path<TAB>transcript."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise UserError(f"{manifest}: no such manifest file")
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{manifest}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    utterances = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{manifest}:{number}"
        if "\t" not in line:
            raise UserError(f"{where}: expected path<TAB>transcript, found no tab in {_short(line)}")
        name, text = line.split("\t", 1)
        text = " ".join(text.split())  # runs of spaces and a trailing newline are not words
        if not name.strip():
            raise UserError(f"{where}: the audio path is empty")
        if not text:
            raise UserError(f"{where}: the transcript of {name} is empty")
        path = manifest.parent / name.strip()
        if not path.is_file():
            raise UserError(f"{where}: audio file {name} does not exist (looked for {path})")
        utterances.append(Utterance(path, text, where))
    if not utterances:
        raise UserError(f"{manifest}: the manifest holds no utterances (expected path<TAB>transcript lines)")
    return utterances


def read_words(path) -> list[str]:
    """A file's non-blank lines, stripped: a word list (one a line), or an LM's sentences."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not words:
        raise UserError(f"{path}: the file holds no lines")
    return words


def _short(text: str) -> str:
    return repr(text if len(text) <= 50 else text[:47] + "...")


@dataclass
class Conversions:
    """What load_audio changed, counted over a data set: said once, not once per file."""

    resampled: dict[int, int] = field(default_factory=dict)  # original rate -> files
    downmixed: int = 0

    def describe(self, sample_rate: int) -> str | None:
        parts = [f"{n} file{'s' * (n > 1)} at {rate} Hz resampled to {sample_rate} Hz"
                 for rate, n in sorted(self.resampled.items())]
        if self.downmixed:
            parts.append(f"{self.downmixed} file{'s' * (self.downmixed > 1)} with several channels downmixed to mono "
                         f"(their mean)")
        return "; ".join(parts) or None


def load_audio(utterance: Utterance, sample_rate: int, conversions: Conversions | None = None) -> np.ndarray:
    """The utterance's audio as float32 mono samples at `sample_rate`: (N,)."""
    return read_audio(str(utterance.path), sample_rate, f"{utterance.where}: {utterance.path}", conversions)


def read_audio(source, sample_rate: int, name: str, conversions: Conversions | None = None) -> np.ndarray:
    """Audio from a path or a file-like object (an upload's bytes) as float32 mono samples at `sample_rate`, (N,):
    channels averaged, other rates resampled (counted in `conversions`); a UserError starting with `name` for what
    is not audio, empty or not finite."""
    import soundfile as sf

    try:
        samples, rate = sf.read(source, dtype="float32", always_2d=True)  # (N, channels)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UserError(f"{name} is not audio soundfile can read ({getattr(e, 'error_string', None) or e})") from None
    if len(samples) == 0:
        raise UserError(f"{name} holds no samples")
    if samples.shape[1] > 1 and conversions is not None:
        conversions.downmixed += 1
    samples = samples.mean(1)  # (N,)
    if rate != sample_rate:
        import librosa

        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate).astype(np.float32)
        if conversions is not None:
            conversions.resampled[rate] = conversions.resampled.get(rate, 0) + 1
    if not np.isfinite(samples).all():
        raise UserError(f"{name} holds samples that are not finite")
    return samples


@dataclass(frozen=True)
class Vocab:
    """The model's outputs: the CTC blank (id 0), then the characters of the training transcripts, sorted."""

    itos: tuple[str, ...]

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocab:
        return cls((BLANK, *sorted(set().union(*map(set, texts)))))

    @property
    def stoi(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, where: str = "") -> list[int]:
        stoi = self.stoi
        unknown = sorted({ch for ch in text if ch not in stoi})
        if unknown:
            raise UserError(f"{where}: the transcript has character{'s' * (len(unknown) > 1)} "
                            f"{', '.join(map(repr, unknown))} outside the vocabulary the model was trained on "
                            f"({''.join(self.itos[1:])!r})")
        return [stoi[ch] for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[i] for i in ids if i != 0)
