"""`recurrent evaluate RUN --data FILE` for a classifier: accuracy, macro-F1 and the confusion matrix.

    test accuracy 0.931
    test macro-F1 0.902
    test unseen in training: 1 label (neutral) on 4 examples
    confusion matrix (rows: gold, columns: predicted) ...

The file is read in the format the model was trained on (tsv/csv columns, or SST trees with --binary kept). An
example whose label training never saw counts wrong; macro-F1 averages over the gold and predicted labels.
"""
from __future__ import annotations

import argparse

from recurrent.errors import UserError
from recurrent.inference.classify import evaluate_classifier, load_classifier
from recurrent.inference.common import format_confusion


def evaluate(args: argparse.Namespace) -> int:
    if not args.data:
        raise UserError("evaluating a classifier needs --data FILE")
    report = evaluate_classifier(load_classifier(args.run, args.device), args.data, args.batch_size)
    print(f"{args.name} accuracy {report.accuracy:.3f}")
    print(f"{args.name} macro-F1 {report.macro_f1:.3f}")
    print(f"{args.name} {report.unseen}")
    print("confusion matrix (rows: gold, columns: predicted)")
    print(format_confusion(report.confusion, report.labels))
    return 0
