"""UD English-EWT UPOS tagging: test token accuracy of a BiLSTM tagger with a char encoder, no pretrained vectors.

    python benchmarks/ud_pos.py               # softmax output. Target >= 94%
    python benchmarks/ud_pos.py --crf         # with a CRF output layer
    python benchmarks/ud_pos.py --max-time 60 # a smoke run

Prints the test token accuracy, the wall time, and the exact configuration.
"""
import argparse

from common import (SHARED_DATA, TAGGER_MODEL, TAGGER_TRAINER, add_run_flags, data_files, parser,
                    train_and_test, with_budget)
from recurrent.models.tagger import TaggerConfig
from recurrent.inference.tag import evaluate_tagger, load_tagger
from recurrent.train.tag import TrainTagConfig, train_tag
from recurrent.train.loop import flat_replace

DATA = SHARED_DATA / "ud_english_ewt"

MODEL = dict(TAGGER_MODEL, hidden_size=150, dropout=0.33)
TRAINER = dict(TAGGER_TRAINER, format="conllu", field="upos", batch_size=32, epochs=20, eval_every=500,
               max_time=1800.0)


def main():
    p = parser(__doc__)
    p.add_argument("--crf", action=argparse.BooleanOptionalAction, default=False)
    add_run_flags(p, DATA, "runs/bench-ud-pos")
    args = p.parse_args()
    files = data_files(args.data, "en_ewt-ud-{}.conllu.gz", ("train", "dev", "test"), "en_ewt-ud-*.conllu.gz",
                       "ud_english_ewt")
    config = flat_replace(TrainTagConfig(), train=str(files["train"]), valid=str(files["dev"]),
                          out=f"{args.out}-{'crf' if args.crf else 'softmax'}", progress=False, overwrite=True,
                          model=TaggerConfig(**MODEL, crf=args.crf), **with_budget(TRAINER, args.max_time))
    train_and_test(train_tag, config, load_tagger, evaluate_tagger, files["test"], lambda report, best: (
        f"test UPOS accuracy {report.accuracy:.3f} (best dev accuracy {best['token_accuracy']:.3f} "
        f"at step {best['step']})"))


if __name__ == "__main__":
    main()
