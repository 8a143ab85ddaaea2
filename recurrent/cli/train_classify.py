"""`recurrent train classify`: train a sentence classifier (embedding -> (bi)RNN -> pooling -> linear).

    recurrent train classify --train train.tsv --valid dev.tsv --out runs/sent          # label<TAB>text
    recurrent train classify --format csv --header --text-col sentence --label-col label --train ... --valid ...
    recurrent train classify --format sst --binary --train sst/train.txt --valid sst/dev.txt --out runs/sst2
    recurrent train classify --config sst.toml --lr 1e-3                                # flags win over the file

Every field of TrainClassifyConfig and ClassifierConfig is a flag (`--pooling attention`, `--no-bidirectional`),
and a TOML file given with --config uses the same names as keys.
"""
from __future__ import annotations

import argparse
import json

from recurrent.cli.config import add_train_args, train_config_from_args
from recurrent.models.classifier import ClassifierConfig
from recurrent.train.classify import TrainClassifyConfig, train_classify

DERIVED = {"vocab_size", "num_classes"}  # taken from the data


def register(subparsers) -> None:
    p = subparsers.add_parser("classify", help="train a sequence classifier", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p, TrainClassifyConfig, ClassifierConfig, DERIVED)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = train_classify(train_config_from_args(args, TrainClassifyConfig, ClassifierConfig, DERIVED))
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"best valid accuracy {best['accuracy']:.3f} (macro-F1 {best['macro_f1']:.3f}) at step {best['step']}; "
          f"run folder: {run_dir}")
    return 0
