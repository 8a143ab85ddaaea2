"""CoNLL-2003 English NER: test entity F1 (conlleval chunking) of a BiLSTM tagger, no pretrained vectors.

    python benchmarks/conll2003.py                      # BiLSTM-CRF + char BiLSTM (Lample et al. 2016). Target >= 85
                                                        # within about an hour of CPU
    python benchmarks/conll2003.py --no-crf             # the same with a per-token softmax
    python benchmarks/conll2003.py --max-time 60        # a smoke run

Prints test F1 overall and per type, token accuracy, the wall time, and the exact configuration.
"""
import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from recurrent.models.tagger import TaggerConfig
from recurrent.inference.tag import evaluate_tagger, load_tagger
from recurrent.train.tag import TrainTagConfig, train_tag
from recurrent.train.loop import flat_replace

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/conll2003"

MODEL = dict(cell="lstm", embedding_size=100, hidden_size=200, bidirectional=True, char_encoder="lstm",
             char_embedding_size=25, char_hidden_size=25, dropout=0.5)
TRAINER = dict(format="conll", column=3, lowercase=True, unk_replace=0.5,
               batch_size=16, lr=2e-3, clip=5.0, epochs=30,
               eval_every=1000, patience=8, max_time=3600.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--max-time", type=float, default=0.0, help="override the time budget (seconds)")
    p.add_argument("--out", default="runs/bench-conll2003")
    args = p.parse_args()
    files = {split: Path(args.data) / f"eng.{split}" for split in ("train", "testa", "testb")}
    if not all(f.is_file() for f in files.values()):
        raise SystemExit(f"{args.data} lacks eng.train/testa/testb: the benchmark needs ../shared/data/conll2003")
    trainer = dict(TRAINER, **({"max_time": args.max_time} if args.max_time else {}))
    config = flat_replace(TrainTagConfig(), train=str(files["train"]), valid=str(files["testa"]),
                            out=f"{args.out}-{'crf' if args.crf else 'softmax'}", progress=False,
                            model=TaggerConfig(**MODEL, crf=args.crf), **trainer)
    start = time.monotonic()
    run_dir = train_tag(config)
    wall = time.monotonic() - start
    report = evaluate_tagger(load_tagger(run_dir), files["testb"])
    best = json.loads((run_dir / "model.json").read_text())["metrics"]
    print(f"test F1 {report.f1:.1f} (best dev F1 {best['f1']:.1f} at step {best['step']})")
    for kind, s in report.per_type.items():
        print(f"test F1 {kind} {s['f1']:.1f}")
    print(f"test token accuracy {report.accuracy:.3f}")
    print(f"wall time {wall:.0f} s")
    print("config " + json.dumps(asdict(config)))


if __name__ == "__main__":
    main()
