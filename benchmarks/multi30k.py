"""Multi30k German→English (test_2016_flickr): BLEU at greedy and beam 5, with and without attention.

    PYTHONPATH=. python benchmarks/multi30k.py --max-time 2400 --bf16 --label-smoothing 0.1   # the full benchmark
    PYTHONPATH=. python benchmarks/multi30k.py --max-time 120 --out-dir runs/m30k    # a smoke run (minutes)

Data: /work/shared/data/multi30k/tok/ (lowercased, normalised, tokenised: *.lc.norm.tok.{de,en}), word
vocabularies of the words seen at least --min-freq times in train. BLEU is sacrebleu's corpus BLEU of the
detokenised hypotheses against test_2016_flickr.lc.norm.tok.en as it is in the file, so on that
lowercased tokenisation (the convention of the anchors below); --files raw scores cased raw text with BPE instead.

Anchors (same data, word level): GRU + Bahdanau attention 28.3 BLEU greedy; without attention 20.6.
Target: BLEU >= 30 with beam 5.

Each variant trains for --max-time seconds (or --epochs), keeps the checkpoint with the best validation loss,
and is scored with it; "train s" is the wall time of train_translate (data, vocabularies, steps and the final
validation). Prints a table and writes results.json and the test hypotheses to --out-dir.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import SHARED_DATA, add_precision_flags, parser, train_timed  # noqa: E402
from recurrent.cli.evaluate_translate import score  # noqa: E402
from recurrent.data.parallel import read_lines  # noqa: E402
from recurrent.models.seq2seq import Seq2SeqConfig  # noqa: E402
from recurrent.inference.translate import load_translator  # noqa: E402
from recurrent.train.translate import TrainTranslateConfig, train_translate  # noqa: E402
from recurrent.train.loop import flat_replace  # noqa: E402

DATA = SHARED_DATA / "multi30k"


def files(kind: str, split: str) -> tuple[str, str]:
    if kind == "tok":
        return tuple(str(DATA / "tok" / f"{split}.lc.norm.tok.{lang}") for lang in ("de", "en"))
    return tuple(str(DATA / "raw" / f"{split}.{lang}") for lang in ("de", "en"))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--files", choices=("tok", "raw"), default="tok")
    p.add_argument("--attention", default="bahdanau,none", help="comma-separated variants to train")
    p.add_argument("--cell", default="gru")
    p.add_argument("--max-time", type=float, default=3600.0, help="training seconds per variant (0: --epochs)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-freq", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--test-limit", type=int, default=0, help="score only the first N test sentences (0: all)")
    p.add_argument("--out-dir", default="runs/multi30k")
    p.add_argument("--seed", type=int, default=0)
    add_precision_flags(p)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", help="learning-rate schedule; cosine anneals over --max-time")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads. 1 on a shared machine: with other jobs running, two OpenMP threads "
                        "spin-wait on each other (measured 80x slower per step on the shared 2-core box)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train_src, train_tgt = files(args.files, "train")
    valid_src, valid_tgt = files(args.files, "val")
    test_src, test_tgt = files(args.files, "test_2016_flickr")
    src, refs = read_lines(test_src), read_lines(test_tgt)
    if args.test_limit:
        src, refs = src[: args.test_limit], refs[: args.test_limit]
    results = []
    for attention in args.attention.split(","):
        out = Path(args.out_dir) / f"{args.cell}-{attention}"
        config = flat_replace(TrainTranslateConfig(),
            src=train_src, tgt=train_tgt, valid_src=valid_src, valid_tgt=valid_tgt, out=str(out), overwrite=True,
            vocab="word" if args.files == "tok" else "bpe", min_freq=args.min_freq,
            batch_size=args.batch_size, lr=args.lr, epochs=args.epochs, max_time=args.max_time,
            eval_every=args.eval_every, seed=args.seed, precision=args.precision, label_smoothing=args.label_smoothing,
            schedule=args.schedule, progress=False,
            model=Seq2SeqConfig(cell=args.cell, attention=attention, embedding_size=args.embedding_size,
                                hidden_size=args.hidden_size, dropout=args.dropout))
        _, train_seconds, best = train_timed(train_translate, config)
        translator = load_translator(out)
        row = {"variant": f"{args.cell} + {attention}", "train_s": round(train_seconds), "best_step": best["step"],
               "valid_ppl": round(2.718281828 ** best["val_loss"], 2)}
        for name, beam in (("greedy", 1), (f"beam{args.beam}", args.beam)):
            start = time.monotonic()
            hyps = [r.text for r in translator.translate(src, beam, batch_size=64, progress=True)]
            s = score(hyps, refs, lowercase=translator.lowercase)
            row[f"bleu_{name}"], row[f"chrf_{name}"] = round(s["bleu"], 2), round(s["chrf"], 2)
            row[f"decode_s_{name}"] = round(time.monotonic() - start, 1)
            (out / f"test.{name}.en").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        results.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out_dir, "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nMulti30k de→en test_2016_flickr ({args.files} files, {len(src)} sentences), "
          f"training {args.max_time:.0f} s per variant")
    print(f"{'variant':<18} {'train s':>8} {'BLEU greedy':>12} {f'BLEU beam{args.beam}':>12} {'chrF':>6} {'valid ppl':>10}")
    for r in results:
        print(f"{r['variant']:<18} {r['train_s']:>8} {r['bleu_greedy']:>12.2f} {r[f'bleu_beam{args.beam}']:>12.2f} "
              f"{r[f'chrf_beam{args.beam}']:>6.1f} {r['valid_ppl']:>10.2f}")


if __name__ == "__main__":
    main()
