"""Build CLI flags from a config dataclass, and the dataclass back from parsed args.

Each field becomes `--field-name` with the field's type and default; help text comes from
`field(metadata={"help": ...})`. Booleans become `--flag / --no-flag`.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing


def add_config_args(parser: argparse.ArgumentParser, config_class: type) -> None:
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        flag = f"--{f.name.replace('_', '-')}"
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=f.default, help=help_text,
                                choices=f.metadata.get("choices"))


def config_from_args(config_class: type, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)}
    return config_class(**{**values, **overrides})
