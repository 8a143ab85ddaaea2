"""`recurrent train <task>`: one command per task in the registry (recurrent/registry.py), all built the same way.

Every field of the task's config, of its training loop's (recurrent/train/loop.py TrainConfig) and of its model's
config is a flag (`--hidden-size`, `--max-steps`, `--bidirectional / --no-bidirectional`), and a TOML file given
with --config uses the same names as keys (`hidden_size = 256`): dataclass defaults, then the file, then the
flags given, which win. `--resume` continues from the run folder's last checkpoint.
"""
from __future__ import annotations

import argparse
import json

from recurrent.cli.config import add_train_args, train_config_from_args
from recurrent.registry import TASKS, TaskSpec
from recurrent.train import distributed


def register(subparsers) -> None:
    """`recurrent train` with a sub-command per registered task."""
    group = subparsers.add_parser("train", help="train ... (see `recurrent train --help`)")
    tasks = group.add_subparsers(dest="subcommand", metavar="TASK", required=True)
    for spec in TASKS.values():
        p = tasks.add_parser(spec.name, help=spec.help, formatter_class=argparse.RawDescriptionHelpFormatter,
                             description=f"`recurrent train {spec.name}`: {spec.help}.\n\n{spec.examples}\n\n"
                                         + __doc__.split("\n\n", 1)[1])
        for flag, (dest, help_text) in spec.aliases.items():
            p.add_argument(flag, dest=dest, metavar="NAME", default=argparse.SUPPRESS, help=help_text)
        skip = {dest for dest, _ in spec.aliases.values()}
        add_train_args(p, spec.config_class, spec.model_class, set(spec.derived), train_skip=skip)
        p.set_defaults(func=run, spec=spec)


def run(args: argparse.Namespace) -> int:
    spec: TaskSpec = args.spec
    aliases = {dest: flag for flag, (dest, _) in spec.aliases.items()}  # translate's --task sets `synthetic`
    config = train_config_from_args(args, spec.config_class, spec.model_class, set(spec.derived), aliases)
    run_dir = spec.train(config)
    if not distributed.world().main:  # under torchrun, rank 0 wrote the run folder and reports it
        return 0
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"{spec.summary(best)}; run folder: {run_dir} (model.safetensors, metrics.jsonl, loss.png, config.json)")
    return 0
