"""`recurrent evaluate RUN --data FILE` for a language model: score a text.

Prints `test bits/char 1.912` for a char-level model and `test perplexity 114.2` for a word-level one, then
what training never saw, scored as "<unk>": `test unseen in training: 3 characters (æ, ø, å) in 12 places`.

A run trained on sentences (`recurrent train lm --condition ...`) scores --data as it was trained: one sentence a
line, each from its condition's initial state (label<TAB>text for a label run; for a feature run, --condition FILE
holds the features of --data's lines), every token scored, each sentence's end included.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from recurrent.data import read_text
from recurrent.errors import UserError
from recurrent.inference.common import BEST
from recurrent.data.sentences import encode, read_sentences
from recurrent.inference.lm import LMScore, count_unseen, load_lm, sentence_loss


def evaluate(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("evaluating a language model needs --data FILE")
    lm = load_lm(args.run, args.device)
    meta = json.loads((Path(args.run) / f"{BEST}.json").read_text(encoding="utf-8"))
    if meta.get("sentences") is not None:
        score = score_sentences(lm.model, lm.vocab, meta, args.data, args.condition, args.batch_size)
    elif args.condition is not None:
        raise UserError(f"--condition gives the features of a run trained with --condition FILE; {args.run} is not")
    else:
        score = lm.evaluate(read_text(args.data), args.batch_size, args.bptt)
    print(f"{args.name} {score}")
    print(f"{args.name} {score.unseen}")
    return 0


def score_sentences(model, vocab, meta: dict, path, features=None, batch_size: int = 10) -> LMScore:
    """A file read as a sentence run was trained (one sentence a line, with its conditions; `meta`: the run's best
    checkpoint's) -> LMScore: perplexity (or bits/char) and the unseen tokens."""
    kind = meta["sentences"]  # label, vector or none
    if (features is None) == (kind == "vector"):
        raise UserError("--condition FILE (the features of --data's lines) goes with a run trained on features, "
                        "and only")
    texts, conditions = read_sentences(path, kind, features, meta["model"]["condition_size"])
    nats = sentence_loss(model, encode(texts, conditions, vocab, meta["labels"], path), batch_size)
    return LMScore(nats, vocab.level, count_unseen(vocab, "\n".join(texts)))
