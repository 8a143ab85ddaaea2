"""Command-line flags from config dataclasses, and configs back from the flags (and a TOML file).

Each dataclass field becomes `--field-name` with the field's type and default; `str | None` becomes `str`;
booleans become `--flag / --no-flag`; help text comes from `field(metadata={"help": ...})`.

Train commands (`add_train_args` / `train_config_from_args`) take a trainer config with a nested model
config, and `--config FILE.toml` whose keys are the same field names: dataclass defaults, then the file,
then the flags actually given, which always win.
"""
from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing

import torch

from recurrent.errors import UserError
from recurrent.precision import HELP as PRECISION_HELP, PRECISIONS, Precision, choose as choose_precision

_NOT_FIELDS = {"config", "func", "command", "subcommand", "threads"}


def add_config_args(parser, config_class: type, skip: set[str] = frozenset(), suppress_defaults: bool = False) -> None:
    """One flag per field. With suppress_defaults, a flag left out is absent from the parsed args (so a TOML
    value can fill it), and the help text states the default instead."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        flag = f"--{f.name.replace('_', '-')}"
        kind = _plain_type(hints[f.name])
        default = argparse.SUPPRESS if suppress_defaults else f.default
        help_text = f.metadata.get("help", "")
        if suppress_defaults:
            help_text = f"{help_text} (default: {f.default})".strip()
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=default, help=help_text, choices=f.metadata.get("choices"))


def add_run_args(parser) -> None:
    """--device, --precision and its alias --bf16: for the commands that run a saved model."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the model runs")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                        help="short for --precision bf16")


def precision_from_args(args: argparse.Namespace) -> Precision:
    """The precision a run-the-model command uses on its --device (a bad device is a UserError first)."""
    from recurrent.train.common import resolve_device

    return choose_precision(args.precision, resolve_device(args.device))


def config_from_args(config_class: type, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)}
    return config_class(**{**values, **overrides})


def add_train_args(parser, train_class: type, model_class: type, derived: set[str],
                   train_skip: set[str] = frozenset()) -> None:
    """--config, then the trainer's fields ("training") and the model's ("model"), less those `derived` from data."""
    parser.add_argument("--config", default=None, help="a TOML file whose keys are the flags' field names")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's choice). On a shared machine use 1: busy cores make "
                             "OpenMP threads wait on each other")
    training = parser.add_argument_group("training")
    add_config_args(training, train_class, {"model", *train_skip}, True)
    if "precision" in {f.name for f in dataclasses.fields(train_class)} - set(train_skip):
        training.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                              default=argparse.SUPPRESS, help="short for --precision bf16")
    add_config_args(parser.add_argument_group("model"), model_class, derived, True)


def train_config_from_args(args: argparse.Namespace, train_class: type, model_class: type, derived: set[str]):
    """Dataclass defaults, then the TOML file, then the flags given on the command line. Applies --threads."""
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    values = read_toml(args.config) if args.config else {}
    values.update({k: v for k, v in vars(args).items() if k not in _NOT_FIELDS})
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


def read_toml(path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None


def _plain_type(hint):
    """`str | None` -> str."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint
