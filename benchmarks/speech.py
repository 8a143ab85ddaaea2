"""Speech recognition on corpora synthesised with espeak-ng (benchmarks/speech_synth.py): connected digits and PTB
sentences, test voices never heard in training. Trains a BiLSTM-CTC (offline) and a unidirectional LSTM-CTC
(streaming) per set and prints one table: set, model, greedy WER/CER, beam WER/CER, beam WER/CER with an LM of the
training transcripts, streaming WER, training minutes. The LM is a word bigram for digits (in effect a word list)
and a character 6-gram for sentences (open vocabulary: most test sentences hold words training never said); its
weight and bonus are chosen on the validation set, by WER for digits and CER for sentences, never on test.

    python benchmarks/speech.py                          # the issue's budgets: digits 20 min, sentences 40 min a model
    python benchmarks/speech.py --smoke                  # tiny corpora and 1-minute budgets: does it all run
    python benchmarks/speech.py --sets digits --models bi --minutes 5

Targets on a 2-core CPU: digits WER <= 2% within 20 minutes of training, sentences CER <= 15% within 40 minutes.
Corpora are written once under --work (reused when their manifests exist) and follow --seed.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import speech_synth
from common import SHARED_DATA, parser

from recurrent.speech.ctc import CharNgram, WordBigram
from recurrent.speech.data import Conversions, load_audio, read_manifest
from recurrent.speech.inference import load_recognizer
from recurrent.speech.metrics import error_rates
from recurrent.tasks.speech import TrainSpeechConfig, train_speech
from recurrent.train.loop import flat_replace

SIZES = {"digits": {"train": 8000, "valid": 200, "test": 400}, "sentences": {"train": 5000, "valid": 200, "test": 300}}
SMOKE_SIZES = {"train": 24, "valid": 6, "test": 6}
MINUTES = {"digits": 20.0, "sentences": 40.0}
MODELS = {  # name -> config changes
    "bi": {"bidirectional": True, "normalize": "utterance"},
    "uni": {"bidirectional": False, "normalize": "running"},  # causal: transcribes a stream
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


LM_GRID = {  # set -> (the LM, the metric that picks its weight and bonus on validation, the grid)
    "digits": ("word", "wer", [(w, b) for w in (0.25, 0.5, 1.0) for b in (0.0, 1.0, 2.0)]),
    "sentences": ("char", "cer", [(w, b) for w in (0.3, 0.5, 0.8) for b in (0.5, 1.0, 1.5, 2.0)]),
}


def lm_for(kind: str, texts: list[str], itos, weight: float, bonus: float):
    lm, _, _ = LM_GRID[kind]
    return WordBigram(texts, itos, weight, bonus) if lm == "word" else CharNgram(texts, itos, 6, weight, bonus)


def scored(rec, manifest: Path, beam: int, scorers: dict) -> dict:
    """name -> {"wer", "cer"} of each decoder (None: greedy; else a scorer or "none" for beam without an LM) on the
    manifest's utterances, whose log-probabilities are computed once."""
    utterances = read_manifest(manifest)
    feats = [rec.feats(load_audio(u, rec.features.sample_rate, Conversions())) for u in utterances]
    log_probs, refs, out = rec.batch_log_probs(feats), [u.text for u in utterances], {}
    for name, scorer in scorers.items():
        rec.scorer = None if scorer == "none" else scorer
        out[name] = error_rates(refs, [rec.decode(lp, 1 if scorer is None else beam) for lp in log_probs])
    rec.scorer = None
    return out


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
    p.add_argument("--no-train", action="store_true", help="score the runs already in --work (trained by an "
                   "earlier call) again: e.g. after a change to decoding")
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
            run, record = work / f"{kind}-{name}", work / f"{kind}-{name}" / "benchmark.json"
            if args.no_train:
                if not record.exists():
                    raise SystemExit(f"{record}: no run of this benchmark to score (train it first)")
                trained = json.loads(record.read_text())["minutes"]
            else:
                start = time.monotonic()
                run = train_speech(config)
                trained = (time.monotonic() - start) / 60
                record.write_text(json.dumps({"minutes": trained}) + "\n")
            rec = load_recognizer(run)
            texts = [u.text for u in read_manifest(manifests["train"])]
            _, metric, grid = LM_GRID[kind]
            tried = scored(rec, manifests["valid"], args.beam,
                           {wb: lm_for(kind, texts, rec.vocab.itos, *wb) for wb in grid})
            weight, bonus = min(grid, key=lambda wb: tried[wb][metric])
            test = scored(rec, manifests["test"], args.beam,
                          {"greedy": None, "beam": "none", "lm": lm_for(kind, texts, rec.vocab.itos, weight, bonus)})
            stream = streaming_wer(rec, manifests["test"]) if name == "uni" else None
            lm_name = f"{LM_GRID[kind][0]} {weight:g}/{bonus:g}"
            rows.append((kind, name, test, stream, lm_name, trained))
            print(f"{kind} {name}: done in {trained:.1f} min; LM weight/bonus on validation: "
                  + ", ".join(f"{w:g}/{b:g} {tried[w, b][metric]:.3f}" for w, b in grid), flush=True)
    print(f"\n{'set':<10} {'model':<6} {'greedy WER':>10} {'CER':>6} {'beam WER':>9} {'CER':>6} "
          f"{'+LM WER':>8} {'CER':>6} {'LM w/bonus':>14} {'stream WER':>10} {'minutes':>8}")
    for kind, name, r, stream, lm_name, minutes in rows:
        stream_text = f"{stream:.3f}" if stream is not None else "-"
        g, b, lm = r["greedy"], r["beam"], r["lm"]
        print(f"{kind:<10} {name:<6} {g['wer']:>10.3f} {g['cer']:>6.3f} {b['wer']:>9.3f} {b['cer']:>6.3f} "
              f"{lm['wer']:>8.3f} {lm['cer']:>6.3f} {lm_name:>14} {stream_text:>10} {minutes:>8.1f}")
    print(f"(test voices unseen in training; beam {args.beam}; the LM's weight/bonus chosen on validation)")


if __name__ == "__main__":
    main()
