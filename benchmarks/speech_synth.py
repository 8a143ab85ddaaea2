"""Synthesise speech corpora offline with espeak-ng: connected digits (TIDIGITS-like) and open-vocabulary sentences.

    python benchmarks/speech_synth.py --set digits --out data/digits --train 2000 --valid 200 --test 300
    python benchmarks/speech_synth.py --set sentences --out data/ptb-speech --sentences /work/shared/data/ptb

Writes <out>/{train,valid,test}.tsv (path<TAB>transcript, paths relative to the manifest) and 16 kHz WAVs under
<out>/wav/. Every utterance draws an accent (en-us, en-gb, ...) and a voice variant (+f3, +klatt2, ...), a speed
(words per minute), a pitch, then speed perturbation (resampling by 0.9-1.1, as Ko et al. 2015) and white noise at
an SNR from {clean, 30, 20, 10 dB}. The variants are split: test speaks with variants that train and valid never
use ("voices never seen in training"). Everything follows --seed.

Digits: 1-7 digits, each spoken as its word ("oh" and "zero" both for 0). Sentences: lines of a text corpus
(PTB's train, valid and test files, by default) of 4-16 words whose characters are a-z, space and apostrophe,
without <unk> or N.
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

DIGITS = ["oh", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029"]
SNRS = [None, 30.0, 20.0, 10.0]  # dB; None: clean
RATE = 16000


def espeak() -> str | None:
    return shutil.which("espeak-ng")


def variants() -> list[str]:
    """espeak-ng's voice variants (`espeak-ng --voices=variant`), sorted: f3, klatt2, m1, ..."""
    out = subprocess.run([espeak(), "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[4].removeprefix("!v/") for line in out.splitlines()[1:] if len(line.split()) >= 5]
    return sorted(set(names))


def split_variants(seed: int, test_fraction: float = 0.25) -> tuple[list[str], list[str]]:
    names = variants()
    random.Random(seed).shuffle(names)
    k = max(1, round(len(names) * test_fraction))
    return sorted(names[k:]), sorted(names[:k])  # (train and valid, test)


def digit_texts(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 7))) for _ in range(n)]


def sentence_pool(folder: Path) -> list[str]:
    allowed = set("abcdefghijklmnopqrstuvwxyz' ")
    pool = []
    for names in (("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), ("train.txt", "valid.txt", "test.txt")):
        paths = [Path(folder) / name for name in names if (Path(folder) / name).exists()]
        for path in paths:  # every file of the set: PTB's train alone holds too few usable sentences
            for line in path.read_text(encoding="utf-8").splitlines():
                text = " ".join(line.split())
                words = text.split()
                if 4 <= len(words) <= 16 and "<unk>" not in words and "N" not in words and set(text) <= allowed:
                    pool.append(text)
        if paths:
            break
    if not pool:
        raise SystemExit(f"no usable sentences in {folder} (expected ptb.train.txt or train.txt)")
    return pool


def speak(text: str, voice: str, speed: int, pitch: int, rng: np.random.Generator, snr: float | None,
          perturb: float) -> np.ndarray:
    """espeak-ng's audio, speed-perturbed, with noise at `snr` dB, at 16 kHz: (N,) float32."""
    import librosa
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "x.wav"
        subprocess.run([espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                       check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
    # resampling to rate/perturb, then treating it as 16 kHz: faster (perturb > 1) and higher, or slower and lower
    audio = librosa.resample(audio, orig_sr=rate, target_sr=round(RATE / perturb)).astype(np.float32)
    if snr is not None:
        power = float(np.mean(audio ** 2)) or 1e-8
        audio = audio + rng.standard_normal(len(audio)).astype(np.float32) * np.sqrt(power / 10 ** (snr / 10))
    peak = float(np.abs(audio).max()) or 1.0
    return (audio / max(peak, 1.0) * 0.9 if peak > 1.0 else audio).astype(np.float32)


def synthesize(out: Path, texts: dict[str, list[str]], seed: int, voices: dict[str, list[str]]) -> dict[str, Path]:
    """Speak each split's texts with its split's voice variants; write the WAVs and the manifests."""
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    (out / "wav").mkdir(exist_ok=True)
    manifests = {}
    for split, lines in texts.items():
        rng, nrng = random.Random(f"{seed}-{split}"), np.random.default_rng([seed, len(split), ord(split[0])])
        rows = []
        for i, text in enumerate(lines):
            voice = f"{rng.choice(ACCENTS)}+{rng.choice(voices[split])}"
            audio = speak(text, voice, rng.randint(130, 200), rng.randint(25, 75), nrng, rng.choice(SNRS),
                          rng.uniform(0.9, 1.1))
            name = f"wav/{split}-{i:05d}.wav"
            sf.write(out / name, audio, RATE, subtype="PCM_16")
            rows.append(f"{name}\t{text}\n")
        manifests[split] = out / f"{split}.tsv"
        manifests[split].write_text("".join(rows), encoding="utf-8")
    return manifests


def make_corpus(kind: str, out: Path, sizes: dict[str, int], seed: int = 0,
                sentences: Path = Path("/work/shared/data/ptb")) -> dict[str, Path]:
    rng = random.Random(seed)
    if kind == "digits":
        texts = {split: digit_texts(n, rng) for split, n in sizes.items()}
    else:
        pool = sentence_pool(sentences)
        if len(pool) < sum(sizes.values()):
            raise SystemExit(f"{sentences} holds {len(pool)} usable sentences, fewer than the {sum(sizes.values())} "
                             f"asked for ({sizes})")
        rng.shuffle(pool)
        texts, at = {}, 0
        for split, n in sizes.items():
            texts[split], at = pool[at:at + n], at + n
    seen, unseen = split_variants(seed)
    voices = {split: unseen if split == "test" else seen for split in sizes}
    return synthesize(out, texts, seed, voices)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=["digits", "sentences"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--valid", type=int, default=200)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sentences", default="/work/shared/data/ptb", help="a folder with ptb.train.txt or train.txt")
    args = p.parse_args()
    if espeak() is None:
        raise SystemExit("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    manifests = make_corpus(args.set, Path(args.out), {"train": args.train, "valid": args.valid, "test": args.test},
                            args.seed, Path(args.sentences))
    print(" ".join(str(m) for m in manifests.values()))


if __name__ == "__main__":
    main()
