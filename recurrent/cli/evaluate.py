"""`recurrent evaluate RUN --data FILE`: score a text with a trained language model.

Prints `test bits/char 1.912` for a char-level model and `test perplexity 114.2` for a word-level one.
"""
from __future__ import annotations

import argparse

from recurrent.data import read_text
from recurrent.errors import UserError
from recurrent.train.lm import evaluate_lm, load_lm


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="bits/char or perplexity of a trained language model on a text",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train lm`")
    p.add_argument("--data", required=True, help="a UTF-8 text file (or directory) to score")
    p.add_argument("--batch-size", type=int, default=10, help="parallel streams; the state is carried along each")
    p.add_argument("--bptt", type=int, default=64, help="window length (memory only: the state is carried)")
    p.add_argument("--name", default="test", help="label printed before the metric")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1 or args.bptt < 1:
        raise UserError(f"--batch-size and --bptt must be >= 1, got {args.batch_size} and {args.bptt}")
    model, vocab = load_lm(args.run)
    score = evaluate_lm(model, vocab, read_text(args.data), args.batch_size, args.bptt)
    print(f"{args.name} {score}")
    return 0
