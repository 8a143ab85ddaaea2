"""Every config value checked by its field's type and range, in one place: the command line, TOML files and the
Python API all go through `check`.

A range is declared beside its field, in the field's metadata, with the helpers below:

    lr: float = field(default=1e-3, metadata=positive())              # a finite number > 0
    dropout: float = field(default=0.0, metadata=fraction())          # in [0, 1): 1 would drop everything
    epochs: int = field(default=10, metadata=at_least(1))
    optimizer: str = field(default="adamw", metadata={"choices": OPTIMIZERS, "help": "..."})

Without one, the type decides: a bool must be a real boolean (TOML "no" is refused), a float must be finite, a
str a string, and an int field named *_size or num_* must be >= 1. Nested dataclasses (a task's `training` and
`model` configs) are checked too. Checks that relate two fields stay in each config's `validate()`.

    check(config)                                    # UserError: "weight_decay must be a finite number >= 0, got nan"
    check(config, name=lambda f: f"--{f}")           # how the CLI names flags and TOML keys
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass

from recurrent.errors import UserError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (either end may be open, or absent)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return "" if self.high is None else f"{'<' if self.high_open else '<='} {high}"


def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def at_least(low: int, **metadata) -> dict:
    """Field metadata: an integer (or number) >= low."""
    return {"range": Range(low), **metadata}


def between(low: float, high: float, **metadata) -> dict:
    """Field metadata: low <= value <= high."""
    return {"range": Range(low, high), **metadata}


def positive(**metadata) -> dict:
    """Field metadata: a finite number > 0."""
    return {"range": Range(0, low_open=True), **metadata}


def probability(**metadata) -> dict:
    """Field metadata: in [0, 1]."""
    return {"range": Range(0, 1), **metadata}


def fraction(**metadata) -> dict:
    """Field metadata: in [0, 1), a dropout rate (1 would drop everything)."""
    return {"range": Range(0, 1, high_open=True), **metadata}


def check(config, name: Callable[[str], str] = str) -> None:
    """UserError naming the first field of `config` (and of its nested dataclasses) whose value is of the wrong
    type or out of its range. `name` turns a field name into what the message calls it (a flag, a TOML key)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(hints[f.name]) and dataclasses.is_dataclass(value):
            check(value, name)
        else:
            check_value(name(f.name), value, hints[f.name], f.metadata, f.name)


def check_value(label: str, value, hint, metadata: typing.Mapping | None = None, field_name: str = "") -> None:
    """UserError "`label` must be ..., got `value`" unless value fits the type `hint` and the metadata's
    "range" or "choices" (type defaults: see the module docstring)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)]
    if options and value is None:
        return  # `str | None`: None means "not given"
    kind = options[0] if options else hint
    problem = _problem(value, kind, metadata or {}, field_name)
    if problem:
        raise UserError(f"{label} must be {problem}, got {value!r}")


def _problem(value, kind, metadata, field_name: str) -> str | None:
    """What `value` must be, if it is not; None if it is fine. The type is named when it is the problem:
    "a finite number >= 0" for nan, ">= 0" for -1."""
    choices = metadata.get("choices")
    if kind is bool:
        return None if isinstance(value, bool) else "true or false"
    if kind is str:
        if not isinstance(value, str):
            return "a string"
        return None if choices is None or value in choices else f"one of {tuple(choices)}"
    if kind is int:
        bounds = metadata.get("range") or _default_int_range(field_name)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"an integer {bounds}".rstrip()
        return None if value in bounds else str(bounds)
    if kind is float:
        bounds = metadata.get("range", Range())
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"a finite number {bounds}".rstrip()
        return None if value in bounds else str(bounds)
    return None


def _default_int_range(field_name: str) -> Range:
    sized = field_name.endswith("_size") or field_name.startswith("num_")
    return Range(1) if sized else Range()


def flag(kind: type, **metadata) -> Callable[[str], object]:
    """An argparse `type` for a flag that is not a config field: parses the string, then checks it as `check`
    would. `flag(float, **positive())`: "argument --temperature: must be a finite number > 0, got nan"."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {_problem(None, kind, metadata, '')}, got {text!r}") from None
        problem = _problem(value, kind, metadata, "")
        if problem:
            raise argparse.ArgumentTypeError(f"must be {problem}, got {value!r}")
        return value

    parse.__name__ = kind.__name__
    return parse
