"""`recurrent train tag`: train a sequence tagger (embedding [+ char encoder] -> BiRNN -> softmax or CRF).

    recurrent train tag --train eng.train --valid eng.testa --column 3 --crf --char-encoder lstm --out runs/ner
    recurrent train tag --format conllu --train en_ewt-ud-train.conllu.gz --valid en_ewt-ud-dev.conllu.gz \\
        --field upos --out runs/pos

--column is the 0-based tag column of a CoNLL file (default: the last). IOB1 tags (CoNLL-2003) become BIO.
Every field of TrainTagConfig and TaggerConfig is a flag, and a TOML file given with --config uses the same names.
"""
from __future__ import annotations

import argparse
import json

from recurrent.cli.config import add_train_args, train_config_from_args
from recurrent.models.tagger import TaggerConfig
from recurrent.train.tag import TrainTagConfig, train_tag

DERIVED = {"vocab_size", "num_chars", "num_tags"}  # taken from the data


def register(subparsers) -> None:
    p = subparsers.add_parser("tag", help="train a sequence tagger (NER, POS)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p, TrainTagConfig, TaggerConfig, DERIVED)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = train_tag(train_config_from_args(args, TrainTagConfig, TaggerConfig, DERIVED))
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    f1 = f"F1 {best['f1']:.1f}, " if best["f1"] is not None else ""
    print(f"best valid {f1}token accuracy {best['token_accuracy']:.3f} at step {best['step']}; run folder: {run_dir}")
    return 0
