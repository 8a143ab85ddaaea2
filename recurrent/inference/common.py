"""What the inference objects share: the run folder's best checkpoint, word lists' specials, and the supervised
metrics (confusion matrix, macro-F1) their reports hold."""
from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from recurrent.checkpoint import check_tensor_header, open_checkpoint, read_tensors
from recurrent.devices import resolve_device
from recurrent.errors import UserError
from recurrent.schema import check_model_meta, check_task

BEST = "model"  # the best model's checkpoint name in a run folder
PAD, UNK = "<pad>", "<unk>"  # ids 0 and 1 of every word and character list


def lookup(itos: list[str]) -> dict[str, int]:
    return {s: i for i, s in enumerate(itos)}


def log(message: str) -> None:
    """A line on stderr for the user (skipped sentences, embedding coverage): stdout stays for results."""
    print(message, file=sys.stderr)


def load_best(run_dir, task: str, build: Callable[[dict], nn.Module], device: str = "cpu") -> tuple[nn.Module, dict]:
    """(model, meta): a run folder's best model, in eval mode on `device`, and its checked JSON.

    Nothing is allocated before the file is checked: the folder's task (config.json), the tensors file's checksum,
    the JSON against the task's schema (recurrent.schema: types, bounds, vocabulary sizes), then the tensors'
    names, shapes and dtypes against the model `build(meta)` makes on the meta device. The weights must be finite.
    Every failure is a one-line UserError."""
    device = resolve_device(device)
    check_task(run_dir, task)
    checkpoint = open_checkpoint(run_dir, BEST)
    meta = check_model_meta(checkpoint.meta, task, checkpoint.meta_path)
    with torch.device("meta"), _NoInit():  # shapes without storage
        expected = _build(build, meta, checkpoint.meta_path).state_dict()
    check_tensor_header(checkpoint.tensors_path, expected)
    tensors = read_tensors(checkpoint.tensors_path, finite=True)
    model = _build(build, meta, checkpoint.meta_path)
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


class _NoInit(TorchFunctionMode):
    """Skip torch.nn.init's functions: a model on the meta device has no values to initialise (and torch's meta
    normal_, which nn.Embedding's init calls, imports torch._dynamo on first use: 2.5 s)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _build(build: Callable[[dict], nn.Module], meta: dict, path) -> nn.Module:
    """build(meta), with a model constructor's ValueError (an unknown cell, sizes that do not fit together) as a
    UserError naming the file."""
    try:
        return build(meta)
    except ValueError as e:
        raise UserError(f"{path}: its model section does not describe a model: {e}") from None



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
