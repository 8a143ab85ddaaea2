"""`recurrent evaluate RUN --data FILE` for a tagger: entity F1 overall and per type (BIO tags; conlleval's
chunking, via seqeval), token accuracy, and the token confusion matrix.

    test F1 88.4
    test F1 LOC 91.2 (precision 90.8, recall 91.6, support 1668)
    ...
    test token accuracy 0.977
    test unseen in training: 2 tags (I-LST, B-LST) on 5 tokens
    confusion matrix (tokens; rows: gold, columns: predicted) ...

The file is read in the format the model was trained on (CoNLL column or CoNLL-U field, IOB1 -> BIO). A gold
tag that training never saw is a miss, as conlleval counts it: its chunk counts in recall, its tokens are wrong.
"""
from __future__ import annotations

import argparse

from recurrent.errors import UserError
from recurrent.inference.common import format_confusion
from recurrent.inference.tag import evaluate_tagger, load_tagger


def evaluate(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("evaluating a tagger needs --data FILE")
    report = evaluate_tagger(load_tagger(args.run, args.device), args.data, args.batch_size)
    if report.f1 is not None:
        print(f"{args.name} F1 {report.f1:.1f}")
        for kind, s in report.per_type.items():
            print(f"{args.name} F1 {kind} {s['f1']:.1f} (precision {s['precision']:.1f}, "
                  f"recall {s['recall']:.1f}, support {s['support']})")
    print(f"{args.name} token accuracy {report.accuracy:.3f}")
    print(f"{args.name} {report.unseen}")
    print("confusion matrix (tokens; rows: gold, columns: predicted)")
    print(format_confusion(report.confusion, report.tags))
    return 0
