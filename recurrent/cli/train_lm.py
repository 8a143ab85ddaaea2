"""`recurrent train lm`: train a recurrent language model on a text file.

    recurrent train lm --data input.txt --out runs/shakespeare --hidden-size 256 --max-time 600
    recurrent train lm --config shakespeare.toml --lr 1e-3          # flags win over the file
    recurrent train lm --config shakespeare.toml --resume           # continue from runs/.../last.safetensors

Every field of TrainLMConfig and LMConfig is a flag (`--hidden-size`, `--random-bptt / --no-random-bptt`), and a
TOML file given with --config uses the same names as keys (`hidden_size = 256`).
"""
from __future__ import annotations

import argparse
import json

from recurrent.cli.config import add_train_args, train_config_from_args
from recurrent.models.lm import LMConfig
from recurrent.train.lm import TrainLMConfig, train_lm

DERIVED = {"vocab_size"}  # LMConfig.vocab_size comes from the data


def register(subparsers) -> None:
    p = subparsers.add_parser("lm", help="train a language model", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p, TrainLMConfig, LMConfig, DERIVED)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = train_config_from_args(args, TrainLMConfig, LMConfig, DERIVED)
    run_dir = train_lm(config)
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"best valid loss {best['val_loss']:.4f} nats/token at step {best['step']}; run folder: {run_dir} "
          f"(model.safetensors, metrics.jsonl, loss.png, config.json)")
    return 0
