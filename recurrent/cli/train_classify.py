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
import dataclasses
import json

from recurrent.cli.train_lm import _read_toml, add_fields
from recurrent.errors import UserError
from recurrent.models.classifier import ClassifierConfig
from recurrent.train.classify import TrainClassifyConfig, train_classify

DERIVED = {"vocab_size", "num_classes"}  # taken from the data


def register(subparsers) -> None:
    p = subparsers.add_parser("classify", help="train a sequence classifier", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p, TrainClassifyConfig, ClassifierConfig, DERIVED)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = train_classify(config_from(args, TrainClassifyConfig, ClassifierConfig, DERIVED))
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"best valid accuracy {best['accuracy']:.3f} (macro-F1 {best['macro_f1']:.3f}) at step {best['step']}; "
          f"run folder: {run_dir}")
    return 0


# --- flags shared with `recurrent train tag` ---------------------------------------------------------------


def add_flags(parser, train_class: type, model_class: type, derived: set[str]) -> None:
    parser.add_argument("--config", default=None, help="a TOML file whose keys are the flags' field names")
    add_fields(parser.add_argument_group("training"), train_class, skip={"model"})
    add_fields(parser.add_argument_group("model"), model_class, skip=derived)


def config_from(args: argparse.Namespace, train_class: type, model_class: type, derived: set[str]):
    """Dataclass defaults, then the TOML file, then the flags given on the command line."""
    values = _read_toml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k not in {"config", "func", "command", "subcommand"}})
    model_names = {f.name for f in dataclasses.fields(model_class)} - derived
    train_names = {f.name for f in dataclasses.fields(train_class)} - {"model"}
    unknown = sorted(set(values) - model_names - train_names)
    if unknown:
        raise UserError(f"{args.config}: unknown keys {unknown}; use the flags' field names, e.g. hidden_size")
    try:
        model = model_class(**{k: v for k, v in values.items() if k in model_names})
        return train_class(model=model, **{k: v for k, v in values.items() if k in train_names})
    except TypeError as e:
        raise UserError(f"bad configuration: {e}") from None
