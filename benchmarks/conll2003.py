"""CoNLL-2003 English NER: test entity F1 (conlleval chunking) of a BiLSTM tagger, no pretrained vectors.

    python benchmarks/conll2003.py                      # BiLSTM-CRF + char BiLSTM (Lample et al. 2016). Target >= 85
                                                        # within about an hour of CPU
    python benchmarks/conll2003.py --no-crf             # the same with a per-token softmax
    python benchmarks/conll2003.py --max-time 60        # a smoke run

Prints test F1 overall and per type, token accuracy, the wall time, and the exact configuration.
"""
import argparse

from common import (SHARED_DATA, TAGGER_MODEL, TAGGER_TRAINER, add_run_flags, data_files, parser,
                    train_and_test, with_budget)
from recurrent.models.tagger import TaggerConfig
from recurrent.inference.tag import evaluate_tagger, load_tagger
from recurrent.train.tag import TrainTagConfig, train_tag
from recurrent.train.loop import flat_replace

DATA = SHARED_DATA / "conll2003"

MODEL = dict(TAGGER_MODEL, hidden_size=200, dropout=0.5)
TRAINER = dict(TAGGER_TRAINER, format="conll", column=3, batch_size=16, epochs=30, eval_every=1000, max_time=3600.0)


def main():
    p = parser(__doc__)
    p.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True)
    add_run_flags(p, DATA, "runs/bench-conll2003")
    args = p.parse_args()
    files = data_files(args.data, "eng.{}", ("train", "testa", "testb"), "eng.train/testa/testb", "conll2003")
    config = flat_replace(TrainTagConfig(), train=str(files["train"]), valid=str(files["testa"]),
                          out=f"{args.out}-{'crf' if args.crf else 'softmax'}", progress=False, overwrite=True,
                          model=TaggerConfig(**MODEL, crf=args.crf), **with_budget(TRAINER, args.max_time))
    train_and_test(train_tag, config, load_tagger, evaluate_tagger, files["testb"], lambda report, best: "\n".join([
        f"test F1 {report.f1:.1f} (best dev F1 {best['f1']:.1f} at step {best['step']})",
        *(f"test F1 {kind} {s['f1']:.1f}" for kind, s in report.per_type.items()),
        f"test token accuracy {report.accuracy:.3f}"]))


if __name__ == "__main__":
    main()
