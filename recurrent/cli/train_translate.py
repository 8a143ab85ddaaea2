"""`recurrent train translate`: train an encoder-decoder with attention on parallel text or a synthetic task.

    recurrent train translate --src train.de --tgt train.en --valid-src val.de --valid-tgt val.en --out runs/de-en
    recurrent train translate --task reverse --out runs/reverse --max-steps 300 --hidden-size 64
    recurrent train translate --config de-en.toml --attention dot          # flags win over the file

Every field of TrainTranslateConfig and Seq2SeqConfig is a flag (`--hidden-size`, `--input-feeding /
--no-input-feeding`), and a TOML file given with --config uses the same names as keys (`hidden_size = 256`).
"""
from __future__ import annotations

import argparse
import json

from recurrent.cli.config import add_train_args, train_config_from_args
from recurrent.models.seq2seq import Seq2SeqConfig
from recurrent.tasks.synthetic import TASKS
from recurrent.train.translate import TrainTranslateConfig, train_translate

SKIP = {"src_vocab_size", "tgt_vocab_size"}  # Seq2SeqConfig's sizes come from the data (the flags set the
# vocabularies' sizes: TrainTranslateConfig.src_vocab_size / tgt_vocab_size)


def register(subparsers) -> None:
    p = subparsers.add_parser("translate", help="train a translation model (encoder-decoder with attention)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", dest="synthetic", choices=TASKS, default=argparse.SUPPRESS,
                   help="train on a synthetic task instead of files (TOML key: synthetic)")
    add_train_args(p, TrainTranslateConfig, Seq2SeqConfig, SKIP, train_skip={"synthetic"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = train_translate(train_config_from_args(args, TrainTranslateConfig, Seq2SeqConfig, SKIP))
    best = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["metrics"]
    print(f"best valid loss {best['val_loss']:.4f} nats/token at step {best['step']}; run folder: {run_dir} "
          f"(model.safetensors, metrics.jsonl, loss.png, config.json)")
    return 0
