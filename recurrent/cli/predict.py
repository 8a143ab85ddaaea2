"""`recurrent predict RUN`: label or tag sentences read from stdin, one per line, tokens separated by spaces.

    recurrent predict runs/sent < sentences.txt     # classifier: one label per line
    recurrent predict runs/sst-tree < trees.txt     # tree classifier: one PTB-bracketed tree per line
    recurrent predict runs/ner < sentences.txt      # tagger: token/TAG pairs, e.g. "EU/B-ORG rejects/O"

One output line per input line, in order; an empty input line gives an empty output line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

import torch

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.data.text import decode
from recurrent.errors import UserError
from recurrent.registry import TASKS
from recurrent.runs import read_task
from recurrent.validation import at_least, flag


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="label (classifier) or tag (tagger) sentences from stdin",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train classify|tag`")
    p.add_argument("--batch-size", type=flag(int, **at_least(1)), default=64, help="sentences per batch")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    task = read_task(args.run)
    predictors = {name: spec.predict for name, spec in TASKS.items() if spec.predict}
    if task not in predictors:
        raise UserError(f"predict works on {' and '.join(sorted(predictors))} runs; {args.run} is a {task!r} run")
    lines = decode(sys.stdin.buffer.read(), "stdin").splitlines()  # UserError naming the line of a bad byte
    precision = precision_from_args(args)
    module, _, function = predictors[task].partition(":")
    with precision.autocast(torch.device(args.device).type):
        getattr(importlib.import_module(module), function)(args, lines)
    return 0


def classify(args: argparse.Namespace, lines: list[str]) -> None:
    """One label per line (a tree model reads one bracketed tree per line)."""
    from recurrent.inference.classify import load_classifier

    sentences = [line.split() for line in lines]
    kept = [s for s in sentences if s]
    classifier = load_classifier(args.run, args.device)
    if classifier.reads_trees:
        from recurrent.data.labelled import parse_tree
        try:
            kept = [parse_tree(line, f"stdin:{n}") for n, line in enumerate(lines, start=1) if line.split()]
        except UserError as e:
            raise UserError(f"{e} (this classifier composes parse trees: give one PTB-bracketed tree per "
                            "line, such as (3 (2 a) (3 film)); the labels are ignored)") from None
    outputs = iter(classifier.predict(kept, args.batch_size) if kept else [])
    for s in sentences:
        print(next(outputs) if s else "")


def tag(args: argparse.Namespace, lines: list[str]) -> None:
    """token/TAG pairs per line."""
    from recurrent.inference.tag import load_tagger

    sentences = [line.split() for line in lines]
    kept = [s for s in sentences if s]
    outputs = iter(load_tagger(args.run, args.device).predict(kept, args.batch_size) if kept else [])
    for s in sentences:
        print(" ".join(f"{w}/{t}" for w, t in zip(s, next(outputs))) if s else "")
