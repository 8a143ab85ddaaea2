"""`recurrent bench throughput`: our backends against torch.nn, training tokens/s in one run."""
from __future__ import annotations

import argparse
from dataclasses import asdict

from recurrent.bench.throughput import LAYERS, ThroughputConfig, format_table, measure
from recurrent.cli.config import add_config_args, config_from_args
from recurrent.errors import UserError

QUICK = dict(batch_size=8, seq_len=32, input_size=64, hidden_size=64, rounds=3)


def register(subparsers) -> None:
    p = subparsers.add_parser("throughput", help="training tok/s of fused/bptt/autograd vs torch.nn",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_args(p, ThroughputConfig)
    p.add_argument("--quick", action="store_true", help=f"a few seconds' smoke run: {QUICK}")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_from_args(ThroughputConfig, args, **(QUICK if args.quick else {}))
    unknown = set(cfg.cells.split(",")) - set(LAYERS)
    if unknown:
        raise UserError(f"--cells must be a comma-separated subset of {sorted(LAYERS)}, got {cfg.cells!r}")
    for name, value in asdict(cfg).items():
        if isinstance(value, int) and name != "seed" and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    print(format_table(measure(cfg), cfg))
    return 0
