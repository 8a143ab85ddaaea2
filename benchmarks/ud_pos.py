"""UD English-EWT UPOS tagging: test token accuracy of a BiLSTM tagger with a char encoder, no pretrained vectors.

    python benchmarks/ud_pos.py               # softmax output. Target >= 94%
    python benchmarks/ud_pos.py --crf         # with a CRF output layer
    python benchmarks/ud_pos.py --max-time 60 # a smoke run

Prints the test token accuracy, the wall time, and the exact configuration.
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

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/ud_english_ewt"

MODEL = dict(cell="lstm", embedding_size=100, hidden_size=150, bidirectional=True, char_encoder="lstm",
             char_embedding_size=25, char_hidden_size=25, dropout=0.33)
TRAINER = dict(format="conllu", field="upos", lowercase=True, unk_replace=0.5,
               batch_size=32, lr=2e-3, clip=5.0, epochs=20,
               eval_every=500, patience=8, max_time=1800.0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crf", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--max-time", type=float, default=0.0, help="override the time budget (seconds)")
    p.add_argument("--out", default="runs/bench-ud-pos")
    args = p.parse_args()
    files = {split: Path(args.data) / f"en_ewt-ud-{split}.conllu.gz" for split in ("train", "dev", "test")}
    if not all(f.is_file() for f in files.values()):
        raise SystemExit(f"{args.data} lacks en_ewt-ud-*.conllu.gz: the benchmark needs ../shared/data/ud_english_ewt")
    trainer = dict(TRAINER, **({"max_time": args.max_time} if args.max_time else {}))
    config = flat_replace(TrainTagConfig(), train=str(files["train"]), valid=str(files["dev"]),
                            out=f"{args.out}-{'crf' if args.crf else 'softmax'}", progress=False,
                            model=TaggerConfig(**MODEL, crf=args.crf), **trainer)
    start = time.monotonic()
    run_dir = train_tag(config)
    wall = time.monotonic() - start
    report = evaluate_tagger(load_tagger(run_dir), files["test"])
    best = json.loads((run_dir / "model.json").read_text())["metrics"]
    print(f"test UPOS accuracy {report.accuracy:.3f} (best dev accuracy {best['token_accuracy']:.3f} "
          f"at step {best['step']})")
    print(f"wall time {wall:.0f} s")
    print("config " + json.dumps(asdict(config)))


if __name__ == "__main__":
    main()
