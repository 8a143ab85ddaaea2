"""Command-line flags from config dataclasses, and configs back from the flags (and a TOML file).

Each dataclass field becomes `--field-name` with the field's type and default; `str | None` becomes `str`;
booleans become `--flag / --no-flag`; help text comes from `field(metadata={"help": ...})`.

Train commands (`add_train_args` / `train_config_from_args`) take a trainer config with a nested model
config, and `--config FILE.toml` whose keys are the same field names: dataclass defaults, then the file,
then the flags actually given, which always win. Every config built here is checked by recurrent/validation.py
(types and ranges from the fields' metadata); errors name the flag (`--weight-decay`) or the file and key.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import typing
from pathlib import Path

import torch

from recurrent.errors import UserError
from recurrent.precision import HELP as PRECISION_HELP, PRECISIONS, Precision, choose as choose_precision
from recurrent.train.loop import flat_replace
from recurrent.validation import check

_NOT_FIELDS = {"config", "func", "command", "subcommand", "threads", "spec"}


def add_config_args(parser, config_class: type, skip: set[str] = frozenset(), suppress_defaults: bool = False,
                    defaults=None) -> None:
    """One flag per field. With suppress_defaults, a flag left out is absent from the parsed args (so a TOML
    value can fill it), and the help text states the default instead. `defaults`: an instance whose values are the
    defaults to show (a task's own training defaults), instead of the class's."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]):
            continue
        flag = f"--{f.name.replace('_', '-')}"
        kind = _plain_type(hints[f.name])
        shown = getattr(defaults, f.name) if defaults is not None else f.default
        default = argparse.SUPPRESS if suppress_defaults else shown
        help_text = f.metadata.get("help", "")
        if suppress_defaults:
            help_text = f"{help_text} (default: {shown})".strip()
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


def check_output(flag: str, path, suffix: str) -> None:
    """UserError unless `path` can take the file a command writes: a name ending in `suffix` (matplotlib would
    add ".png" to a name without one, and write somewhere else), in an existing folder this user may write to."""
    path = Path(path)
    if path.suffix.lower() != suffix or path.is_dir():
        raise UserError(f"{flag} must be a {suffix} file name, got {str(path)!r}")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{flag} {str(path)!r}: the folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {str(path)!r}: cannot write there (permission denied)")


def precision_from_args(args: argparse.Namespace) -> Precision:
    """The precision a run-the-model command uses on its --device (a bad device is a UserError first)."""
    from recurrent.devices import resolve_device

    return choose_precision(args.precision, resolve_device(args.device))


def config_from_args(config_class: type, args: argparse.Namespace, **overrides):
    """The config of a command whose flags are one dataclass's fields, checked (errors name the flag)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)}
    config = config_class(**{**values, **overrides})
    check(config, name=flag_name)
    return config


def flag_name(field_name: str) -> str:
    """hidden_size -> --hidden-size"""
    return f"--{field_name.replace('_', '-')}"


def add_train_args(parser, train_class: type, model_class: type, derived: set[str],
                   train_skip: set[str] = frozenset()) -> None:
    """--config, then the task's fields ("task"), the training loop's (its nested `training` config, "training")
    and the model's ("model"), less those `derived` from data. Flags are flat: every field name is unique."""
    parser.add_argument("--config", default=None, help="a TOML file whose keys are the flags' field names")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default: torch's choice). On a shared machine use 1: busy cores make "
                             "OpenMP threads wait on each other")
    add_config_args(parser.add_argument_group("task"), train_class, {"model", *train_skip}, True)
    training = parser.add_argument_group("training")
    nested = _training_field(train_class)
    if nested is not None:
        add_config_args(training, nested.type_, train_skip, True, defaults=nested.default_factory())
    if "precision" in _field_names(nested.type_ if nested else train_class) - set(train_skip):
        training.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                              default=argparse.SUPPRESS, help="short for --precision bf16")
    add_config_args(parser.add_argument_group("model"), model_class, derived, True)


def train_config_from_args(args: argparse.Namespace, train_class: type, model_class: type, derived: set[str],
                           aliases: dict[str, str] | None = None):
    """Dataclass defaults (the task's, its training loop's and its model's), then the TOML file, then the flags
    given on the command line, checked by recurrent.validation. Applies --threads. `aliases`: field -> the flag
    that sets it, where the two differ (translate's --task sets `synthetic`)."""
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    toml = read_toml(args.config) if args.config else {}
    tables = [k for k, v in toml.items() if isinstance(v, dict)]
    if tables:
        raise UserError(f"{args.config}: [{tables[0]}] is a table; keys are the flags' field names, flat, as in "
                        f"hidden_size = 256")
    flags = {k: v for k, v in vars(args).items() if k not in _NOT_FIELDS}
    values = {**toml, **flags}
    derived = derived - _field_names(train_class)  # a task field of the same name is not derived (LM vocab_size)
    given_derived = sorted(set(values) & derived)
    if given_derived:
        raise UserError(f"{args.config}: {given_derived} come from the data; leave them out")
    try:
        config = flat_replace(train_class(), **values)
    except TypeError as e:
        message = str(e)
        if "has no field" in message:
            message += "; use the flags' field names, e.g. hidden_size"
        raise UserError(f"{args.config or 'the command line'}: {message}") from None

    def name(field: str) -> str:  # where the value came from: a flag, the TOML file, or a default
        if field in flags:
            return (aliases or {}).get(field, flag_name(field))
        return f"{args.config}: {field}" if field in toml else field

    check(config, name=name)
    return config


def _field_names(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


class _Nested(typing.NamedTuple):
    type_: type
    default_factory: typing.Callable


def _training_field(config_class: type) -> _Nested | None:
    """The nested training-loop config of a task config (its `training` field), if it has one."""
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        if f.name == "training" and dataclasses.is_dataclass(hints[f.name]):
            return _Nested(hints[f.name], f.default_factory)
    return None


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
