"""What the inference objects share: the run folder's best checkpoint, word lists' specials, and the supervised
metrics (confusion matrix, macro-F1) their reports hold."""
from __future__ import annotations

import sys

from recurrent.checkpoint import load_checkpoint

BEST = "model"  # the best model's checkpoint name in a run folder
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every word and character list


def lookup(itos: list[str]) -> dict[str, int]:
    return {s: i for i, s in enumerate(itos)}


def log(message: str) -> None:
    """A line on stderr for the user (skipped sentences, embedding coverage): stdout stays for results."""
    print(message, file=sys.stderr)



def load_run(run_dir) -> tuple[dict, dict]:
    """(tensors, meta) of a run folder's best model."""
    return load_checkpoint(run_dir, name=BEST)



# --- metrics ------------------------------------------------------------------------------------------------


def confusion_matrix(gold: list[int], pred: list[int], num_classes: int) -> list[list[int]]:
    """counts[g][p]: examples of gold class g predicted as p."""
    counts = [[0] * num_classes for _ in range(num_classes)]
    for g, p in zip(gold, pred):
        counts[g][p] += 1
    return counts


def macro_f1(confusion: list[list[int]]) -> float:
    """The unweighted mean of each gold class's F1 (classes absent from both gold and predictions are left out)."""
    scores = []
    for k in range(len(confusion)):
        tp = confusion[k][k]
        gold = sum(confusion[k])
        pred = sum(row[k] for row in confusion)
        if gold + pred:
            scores.append(2 * tp / (gold + pred))
    return sum(scores) / len(scores) if scores else 0.0


def format_confusion(confusion: list[list[int]], names: list[str]) -> str:
    """A table: one row per gold class, one column per predicted class."""
    width = max(6, *(len(n) for n in names), *(len(str(c)) for row in confusion for c in row)) + 1
    head = "gold \\ pred".ljust(width + 2) + "".join(n.rjust(width) for n in names)
    rows = [n.ljust(width + 2) + "".join(str(c).rjust(width) for c in row) for n, row in zip(names, confusion)]
    return "\n".join([head, *rows])
