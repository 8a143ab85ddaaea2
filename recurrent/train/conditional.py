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

from recurrent.data import Vocab
from recurrent.data.buckets import bucket_batches
from recurrent.data.sentences import collate, encode, read_sentences
from recurrent.data.text import Corpus
from recurrent.errors import UserError
from recurrent.inference.lm import sentence_loss
from recurrent.models.lm import LanguageModel
from recurrent.train import distributed
from recurrent.train.lm import _build_vocab


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
