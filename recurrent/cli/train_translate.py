"""`recurrent train translate`: train an encoder-decoder with attention on parallel text or a synthetic task.

    recurrent train translate --src train.de --tgt train.en --valid-src val.de --valid-tgt val.en --out runs/de-en
    recurrent train translate --task reverse --out runs/reverse --max-steps 300 --hidden-size 64
    recurrent train translate --config de-en.toml --attention dot          # flags win over the file

Every field of TrainTranslateConfig and Seq2SeqConfig is a flag (`--hidden-size`, `--input-feeding /
--no-input-feeding`), and a TOML file given with --config uses the same names as keys (`hidden_size = 256`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from recurrent.cli.train_lm import _read_toml, add_fields
from recurrent.errors import UserError
from recurrent.models.seq2seq import Seq2SeqConfig
from recurrent.tasks.synthetic import TASKS
from recurrent.train.translate import TrainTranslateConfig, train_translate

SKIP = {"src_vocab_size", "tgt_vocab_size"}  # Seq2SeqConfig's sizes come from the data (the flags set the
# vocabularies' sizes: TrainTranslateConfig.src_vocab_size / tgt_vocab_size)


def register(subparsers) -> None:
    p = subparsers.add_parser("translate", help="train a translation model (encoder-decoder with attention)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a TOML file whose keys are the flags' field names")
    training = p.add_argument_group("training")
    training.add_argument("--task", dest="synthetic", choices=TASKS, default=argparse.SUPPRESS,
                          help="train on a synthetic task instead of files (TOML key: synthetic)")
    add_fields(training, TrainTranslateConfig, skip={"model", "synthetic"})
    add_fields(p.add_argument_group("model"), Seq2SeqConfig, skip=SKIP)
    p.set_defaults(func=run)


def config_from(args: argparse.Namespace) -> TrainTranslateConfig:
    """Dataclass defaults, then the TOML file, then the flags given on the command line."""
    values = _read_toml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k not in {"config", "func", "command", "subcommand"}})
    model_names = {f.name for f in dataclasses.fields(Seq2SeqConfig)} - SKIP
    train_names = {f.name for f in dataclasses.fields(TrainTranslateConfig)} - {"model"}
    unknown = sorted(set(values) - model_names - train_names)
    if unknown:
        raise UserError(f"{args.config}: unknown keys {unknown}; use the flags' field names, e.g. hidden_size")
    try:
        model = Seq2SeqConfig(**{k: v for k, v in values.items() if k in model_names})
        return TrainTranslateConfig(model=model, **{k: v for k, v in values.items() if k in train_names})
    except TypeError as e:
        raise UserError(f"bad configuration: {e}") from None


def run(args: argparse.Namespace) -> int:
    run_dir = train_translate(config_from(args))
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"best valid loss {best['val_loss']:.4f} nats/token at step {best['step']}; run folder: {run_dir} "
          f"(model.safetensors, metrics.jsonl, loss.png, config.json)")
    return 0
