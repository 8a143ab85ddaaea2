"""`recurrent evaluate RUN --data FILE` for a language model: score a text.

Prints `test bits/char 1.912` for a char-level model and `test perplexity 114.2` for a word-level one, then
what training never saw, scored as "<unk>": `test unseen in training: 3 characters (æ, ø, å) in 12 places`.
"""
from __future__ import annotations

import argparse

from recurrent.data import read_text
from recurrent.errors import UserError
from recurrent.train.lm import evaluate_lm, load_lm


def evaluate(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("evaluating a language model needs --data FILE")
    if args.batch_size < 1 or args.bptt < 1:
        raise UserError(f"--batch-size and --bptt must be >= 1, got {args.batch_size} and {args.bptt}")
    model, vocab = load_lm(args.run, args.device)
    score = evaluate_lm(model, vocab, read_text(args.data), args.batch_size, args.bptt)
    print(f"{args.name} {score}")
    print(f"{args.name} {score.unseen}")
    return 0
