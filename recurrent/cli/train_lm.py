"""`recurrent train lm`: train a recurrent language model on a text file.

    recurrent train lm --data input.txt --out runs/shakespeare --hidden-size 256 --max-time 600
    recurrent train lm --config shakespeare.toml --lr 1e-3          # flags win over the file
    recurrent train lm --config shakespeare.toml --resume           # continue from runs/.../last.safetensors

Every field of TrainLMConfig and LMConfig is a flag (`--hidden-size`, `--random-bptt / --no-random-bptt`), and a
TOML file given with --config uses the same names as keys (`hidden_size = 256`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import typing

from recurrent.errors import UserError
from recurrent.models.lm import LMConfig
from recurrent.train.lm import TrainLMConfig, train_lm

SKIP = {"model", "vocab_size"}  # TrainLMConfig.model holds the LMConfig; LMConfig.vocab_size comes from the data


def register(subparsers) -> None:
    p = subparsers.add_parser("lm", help="train a language model", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="a TOML file whose keys are the flags' field names")
    add_fields(p.add_argument_group("training"), TrainLMConfig, skip={"model"})
    add_fields(p.add_argument_group("model"), LMConfig, skip={"vocab_size"})
    p.set_defaults(func=run)


def add_fields(parser, config_class: type, skip: set[str]) -> None:
    """One flag per field, as recurrent.cli.config does, but with no argparse default: a flag left out is absent
    from the parsed args, so a TOML value can fill it and an explicit flag always wins."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        kind = _plain_type(hints[f.name])
        flag = f"--{f.name.replace('_', '-')}"
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})".strip()
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def _plain_type(hint):
    """`str | None` -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def config_from(args: argparse.Namespace) -> TrainLMConfig:
    """Dataclass defaults, then the TOML file, then the flags given on the command line."""
    values = _read_toml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k not in {"config", "func", "command", "subcommand"}})
    model_names = {f.name for f in dataclasses.fields(LMConfig)} - SKIP
    train_names = {f.name for f in dataclasses.fields(TrainLMConfig)} - {"model"}
    unknown = sorted(set(values) - model_names - train_names)
    if unknown:
        raise UserError(f"{args.config}: unknown keys {unknown}; use the flags' field names, e.g. hidden_size")
    try:
        model = LMConfig(**{k: v for k, v in values.items() if k in model_names})
        return TrainLMConfig(model=model, **{k: v for k, v in values.items() if k in train_names})
    except TypeError as e:
        raise UserError(f"bad configuration: {e}") from None


def _read_toml(path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    run_dir = train_lm(config)
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"best valid loss {best['val_loss']:.4f} nats/token at step {best['step']}; run folder: {run_dir} "
          f"(model.safetensors, metrics.jsonl, loss.png, config.json)")
    return 0
