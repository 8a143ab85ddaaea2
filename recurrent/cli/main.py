"""`recurrent` entry point: builds the parser from each command module, runs, and turns errors into one line.

Each command module defines `register(subparsers)`, which adds its parser and sets
`func=run` (a function taking the parsed args and returning an exit code).
Any `UserError` (bad file, bad flag value, bad data) is printed as one line on stderr
with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings

from recurrent.errors import Interrupted, UserError

# Command groups (`recurrent bench memory`): group -> modules, each adding one sub-command. `recurrent train <task>`
# is built from the registry of tasks (recurrent/registry.py) by recurrent.cli.train.
GROUPS = {
    "diagnose": ["recurrent.cli.diagnose_gradients", "recurrent.cli.diagnose_activations"],
    "bench": ["recurrent.cli.bench_throughput", "recurrent.cli.bench_memory"],
}
# Commands that a module adds whole (`recurrent generate RUN`, `recurrent train <task>`): name -> that module.
SINGLE = {
    "train": "recurrent.cli.train",
    "generate": "recurrent.cli.generate",
    "evaluate": "recurrent.cli.evaluate",
    "predict": "recurrent.cli.predict",
    "translate": "recurrent.cli.translate",
    "forecast": "recurrent.cli.forecast",
    "info": "recurrent.cli.info",
    "export": "recurrent.cli.export",
    "transcribe": "recurrent.cli.transcribe",
    "serve": "recurrent.cli.serve",
}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported on one line like every other error, not a usage block: `recurrent: error:
    --temperature must be a finite number > 0, got nan (see `recurrent generate --help`)`. Sub-parsers inherit it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})  # --hidden is not --hidden-size: say so

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): must be", r"\1 must be", message)  # recurrent.validation.flag's
        self.exit(2, f"recurrent: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="recurrent", description="Recurrent neural networks on PyTorch.",
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, modules in GROUPS.items():
        if modules:
            group = commands.add_parser(name, help=f"{name} ... (see `recurrent {name} --help`)")
            subs = group.add_subparsers(dest="subcommand", metavar="WHAT", required=True)
            for module in modules:
                importlib.import_module(module).register(subs)
    for module in filter(None, SINGLE.values()):
        importlib.import_module(module).register(commands)
    return parser


def _one_line(message, category, filename, lineno, line=None) -> str:
    """Warnings on the command line: `recurrent: warning: ...`, one line, not the source file and line."""
    return f"recurrent: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag (the parser has printed its one line)
        return int(e.code or 0)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"recurrent: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # training saved its last checkpoint first
        print(f"recurrent: interrupted: {e.message}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("recurrent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`recurrent generate ... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, what a shell reports for a killed pipe writer


if __name__ == "__main__":
    sys.exit(main())
