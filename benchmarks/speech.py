"""Speech recognition on corpora synthesised with espeak-ng (benchmarks/speech_synth.py): connected digits and PTB
sentences, test voices never heard in training. Trains a BiLSTM-CTC (offline) and a unidirectional LSTM-CTC
(streaming) per set and prints one table: set, model, greedy WER/CER, beam WER/CER, streaming WER, beam WER with a
word bigram LM of the training transcripts (for digits, in effect a word list), training minutes.

    python benchmarks/speech.py                          # the issue's budgets: digits 20 min, sentences 40 min a model
    python benchmarks/speech.py --smoke                  # tiny corpora and 1-minute budgets: does it all run
    python benchmarks/speech.py --sets digits --models bi --minutes 5

Targets on a 2-core CPU: digits WER <= 2% within 20 minutes of training, sentences CER <= 15% within 40 minutes.
Corpora are written once under --work (reused when their manifests exist) and follow --seed.
"""
from __future__ import annotations

import time
from pathlib import Path

import speech_synth
from common import SHARED_DATA, parser

from recurrent.speech.ctc import WordBigram
from recurrent.speech.data import read_manifest
from recurrent.speech.inference import load_recognizer
from recurrent.speech.metrics import error_rates
from recurrent.tasks.speech import TrainSpeechConfig, train_speech
from recurrent.train.loop import flat_replace

SIZES = {"digits": {"train": 8000, "valid": 200, "test": 400}, "sentences": {"train": 5000, "valid": 200, "test": 300}}
SMOKE_SIZES = {"train": 24, "valid": 6, "test": 6}
MINUTES = {"digits": 20.0, "sentences": 40.0}
MODELS = {  # name -> config changes
    "bi": {"bidirectional": True, "normalize": "utterance"},
    "uni": {"bidirectional": False, "normalize": "global"},  # causal: transcribes a stream
}
TRAINING = {"schedule": "cosine", "warmup_steps": 100, "lr": 1.5e-3,  # anneals to 0 as the time budget runs out
            "freq_warp": 0.1}  # vocal tract length perturbation: most test errors come from a few unseen voices
SHAPE = {"digits": {"hidden_size": 192, "num_layers": 3}, "sentences": {"hidden_size": 192, "num_layers": 3}}  # ~1 s a step
#   of 16 utterances on 2 busy cores: 256 wide took 3 s on 4-second sentences, too few epochs in 40 minutes


def corpus(kind: str, work: Path, sizes: dict, seed: int) -> dict[str, Path]:
    folder = work / kind
    manifests = {split: folder / f"{split}.tsv" for split in sizes}
    if all(m.exists() for m in manifests.values()):
        return manifests
    start = time.monotonic()
    made = speech_synth.make_corpus(kind, folder, sizes, seed, SHARED_DATA / "ptb")
    print(f"{kind}: synthesised {sum(sizes.values())} utterances in {time.monotonic() - start:.0f} s", flush=True)
    return made


def streaming_wer(rec, manifest: Path) -> float:
    utterances = read_manifest(manifest)
    hyps = [rec.transcribe(u.path, stream=True) for u in utterances]
    return error_rates([u.text for u in utterances], hyps)["wer"]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sets", default="digits,sentences")
    p.add_argument("--models", default="bi,uni")
    p.add_argument("--minutes", type=float, default=0.0, help="training minutes per model (0: the issue's budgets)")
    p.add_argument("--work", default="runs/speech-bench", help="corpora and run folders")
    p.add_argument("--beam", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny corpora, 1-minute budgets, small models")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); with two copies of "
                   "this script side by side (--models bi and --models uni), 1 each")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if speech_synth.espeak() is None:
        raise SystemExit("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    work = Path(args.work) / ("smoke" if args.smoke else "full")
    rows = []
    for kind in args.sets.split(","):
        manifests = corpus(kind, work, SMOKE_SIZES if args.smoke else SIZES[kind], args.seed)
        for name in args.models.split(","):
            minutes = args.minutes or (0.5 if args.smoke else MINUTES[kind])
            shape = {"hidden_size": 32, "num_layers": 1, "conv_channels": 32} if args.smoke else SHAPE[kind]
            config = flat_replace(TrainSpeechConfig(), train=str(manifests["train"]), valid=str(manifests["valid"]),
                                  out=str(work / f"{kind}-{name}"), overwrite=True, epochs=10_000,
                                  max_time=minutes * 60, seed=args.seed, progress=False, **TRAINING, **MODELS[name],
                                  **shape)
            start = time.monotonic()
            run = train_speech(config)
            trained = (time.monotonic() - start) / 60
            rec = load_recognizer(run)
            report = rec.evaluate(manifests["test"], args.beam)
            stream = streaming_wer(rec, manifests["test"]) if name == "uni" else None
            # beam search with a word bigram LM of the training transcripts (for digits, in effect a word list)
            rec.scorer = WordBigram([u.text for u in read_manifest(manifests["train"])], rec.vocab.itos)
            lm = rec.evaluate(manifests["test"], args.beam)["beam_wer"]
            rec.scorer = None
            rows.append((kind, name, report, stream, lm, trained))
            print(f"{kind} {name}: done in {trained:.1f} min", flush=True)
    print(f"\n{'set':<10} {'model':<6} {'greedy WER':>10} {'CER':>6} {'beam WER':>9} {'CER':>6} "
          f"{'stream WER':>10} {'beam+LM WER':>11} {'minutes':>8}")
    for kind, name, r, stream, lm, minutes in rows:
        stream_text = f"{stream:.3f}" if stream is not None else "-"
        print(f"{kind:<10} {name:<6} {r['greedy_wer']:>10.3f} {r['greedy_cer']:>6.3f} {r['beam_wer']:>9.3f} "
              f"{r['beam_cer']:>6.3f} {stream_text:>10} {lm:>11.3f} {minutes:>8.1f}")
    print(f"(test voices unseen in training; beam {args.beam})")


if __name__ == "__main__":
    main()
