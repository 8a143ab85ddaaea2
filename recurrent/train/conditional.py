"""Conditional generation, one-to-many from a vector as in image captioning (Vinyals et al. 2015): one sentence
per line, whose condition (a label, or a feature vector) sets the LM's initial state (recurrent/models/lm.py).
Key: B sentences, T tokens, F features. A sentence reads "sep w_1 .. w_n sep", sep being <eos> (word level) or a
newline (char level), as a generation prime of "\\n" does. Padded targets are -100, which the loss leaves out.

    recurrent train lm --train train.tsv --valid dev.tsv --level word --condition label     # label<TAB>text
    recurrent train lm --train a.txt --valid b.txt --condition a.npy --valid-condition b.npy  # or CSV: a row a line
    recurrent train lm --train a.txt --valid b.txt --condition none      # the baseline: same sentences, no condition
"""
from __future__ import annotations

import dataclasses

import torch
from torch.nn.utils.rnn import pad_sequence

from recurrent.data import Vocab, read_text
from recurrent.data.buckets import bucket_batches
from recurrent.data.features import read_features
from recurrent.data.text import Corpus
from recurrent.errors import UserError
from recurrent.models.lm import LanguageModel
from recurrent.train import distributed
from recurrent.train.common import model_device, to_device
from recurrent.train.lm import _build_vocab


def read_sentences(path, kind: str, features=None, width: int = 0) -> tuple[list[str], list | None]:
    """(texts, conditions), one per line: `label<TAB>text` (kind "label": the labels), or text with its row of
    `features` (kind "vector": rows (F,)), or text alone (kind "none": None). Errors name file:line."""
    texts, labels = [], []
    for line, text in enumerate(read_text(path).splitlines(), 1):
        if kind == "label":
            label, tab, text = text.partition("\t")
            if not tab or not label.strip():
                raise UserError(f"{path}:{line}: expected label<TAB>text, got {label[:60]!r}")
            labels.append(label.strip())
        if not text.strip():
            raise UserError(f"{path}:{line}: empty text")
        texts.append(text)
    if kind != "vector":
        return texts, labels or None
    rows = read_features(features, width)
    if len(rows) != len(texts):
        raise UserError(f"{features}: {len(rows)} feature rows for the {len(texts)} lines of {path}")
    return texts, list(torch.from_numpy(rows))


def encode(texts: list[str], conditions: list | None, vocab: Vocab, labels: list[str] | None, path) -> list[tuple]:
    """(ids "sep w_1 .. w_n sep", condition: a label id, a feature row (F,) or None) per sentence."""
    conditions = conditions or [None] * len(texts)
    if labels is not None:
        for line, label in enumerate(conditions, 1):
            if label not in labels:
                raise UserError(f"{path}:{line}: label {label!r} never appears in training; known labels: {labels}")
        conditions = [torch.tensor(labels.index(c)) for c in conditions]
    return [(vocab.encode("\n" + t + "\n"), c) for t, c in zip(texts, conditions)]  # word level: <eos> w.. <eos>


def collate(items: list) -> tuple:
    """Encoded sentences -> x (B, T), y (B, T) padded with -100, and the conditions (B,) or (B, F) or None."""
    x = pad_sequence([ids[:-1] for ids, _ in items], batch_first=True)  # (B, T)
    y = pad_sequence([ids[1:] for ids, _ in items], batch_first=True, padding_value=-100)  # (B, T)
    return x, y, None if items[0][1] is None else torch.stack([c for _, c in items])


@torch.no_grad()
def sentence_loss(model: LanguageModel, items: list, batch_size: int) -> float:
    """Mean cross-entropy in nats per token (each sentence's closing sep included) over encoded sentences."""
    total, count = 0.0, 0
    for batch in bucket_batches([len(ids) for ids, _ in items], batch_size):
        x, y, c = to_device(collate([items[i] for i in batch]), model_device(model))
        n = int((y != -100).sum())
        total, count = total + model(x, targets=y, condition=c).loss.float().item() * n, count + n
    return total / count


class ConditionalTask:
    """Sentences and their conditions, for the loop (recurrent/train/loop.py): `recurrent train lm --condition`."""

    name, metric, higher_is_better, unit = "lm", "val_loss", False, "tok"

    def __init__(self, config, resumed: dict | None):
        self.config, self.kind = config, {"label": "label", "none": "none"}.get(config.condition, "vector")
        if config.data or not (config.train and config.valid):
            raise UserError("--condition reads one sentence per line from --train and --valid files (not --data)")
        if (config.valid_condition is not None) != (self.kind == "vector"):
            raise UserError(f"--valid-condition (the valid lines' features) goes with a feature file (.npy, else CSV) "
                            f"as --condition, and only; got --condition {config.condition!r}")
        texts, conditions = read_sentences(config.train, self.kind, config.condition)
        width = len(conditions[0]) if self.kind == "vector" else 0
        valid_texts, valid_conditions = read_sentences(config.valid, self.kind, config.valid_condition, width)
        self.vocab = Vocab.from_dict(resumed["vocab"]) if resumed else _build_vocab(
            Corpus("\n".join(texts) + "\n", "\n".join(valid_texts) + "\n"), config)
        self.labels = (resumed or {}).get("labels") or (sorted(set(conditions)) if self.kind == "label" else None)
        self.model_config = dataclasses.replace(config.model, vocab_size=len(self.vocab),
                                                num_conditions=len(self.labels or []), condition_size=width)
        try:
            self.model = LanguageModel(self.model_config)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.train = encode(texts, conditions, self.vocab, self.labels, config.train)
        self.valid = encode(valid_texts, valid_conditions, self.vocab, self.labels, config.valid)

    def meta(self) -> dict:
        return {"model": dataclasses.asdict(self.model_config), "vocab": self.vocab.to_dict(), "labels": self.labels,
                "sentences": self.kind}

    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.config.batch_size)

    def batches(self, epoch: int):
        """Padded batches of similar-length sentences, shuffled by the epoch's own generator (for --resume); with
        several processes, this one's rows of each (recurrent/train/distributed.py)."""
        shuffle, world = torch.Generator().manual_seed(self.config.training.seed * 100_003 + epoch), distributed.world()
        order = bucket_batches([len(ids) for ids, _ in self.train], self.config.batch_size, shuffle)
        return (world.share(len(b), lambda rows, b=b: collate([self.train[i] for i in b[rows]])) for b in order)

    def step(self, model: LanguageModel, batch: tuple, carry):
        x, y, c = batch  # (B, T), (B, T), and (B,) or (B, F) or None
        return model(x, targets=y, condition=c), None  # each sentence starts from its condition's state

    def count(self, batch: tuple) -> int:
        return int((batch[1] != -100).sum())

    weight = count  # the loss is a mean over the scored tokens: a process's share of the gradient weighs as many

    def evaluate(self, model: LanguageModel) -> dict:
        return {"val_loss": sentence_loss(model, self.valid, self.config.eval_batch_size)}
