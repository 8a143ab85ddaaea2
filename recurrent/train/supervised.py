"""The supervised trainer shared by sequence classification (`train/classify.py`) and tagging (`train/tag.py`).

Each task supplies its examples already encoded, a `collate` that turns a list of them into the model's keyword
arguments, and a `score` that measures the model on the dev set (higher "metric" is better). `fit` does the
rest: length-bucketed batches, AdamW or SGD with clipping, a learning-rate schedule, evaluation every epoch (or
every `eval_every` steps), the best checkpoint (early stopping on the dev metric), a progress bar, metrics.jsonl
and loss.png, and the step/time budget.

A run folder holds config.json ({"task": ..., the config}), model.safetensors + model.json (the best model; the
JSON has the model config, the word/char/label lists and the dev metrics), metrics.jsonl and loss.png.
`fit` trains on `config.device`: it moves the model there and each collated batch; checkpoints hold CPU tensors.
A task's `score` runs the model where it is, so it must move its own batches (`to_device(batch, model_device(model))`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from recurrent.data.buckets import bucket_batches
from recurrent.errors import UserError
from recurrent.inference.common import PAD, UNK
from recurrent.train import distributed
from recurrent.train.common import model_device, to_device
from recurrent.train.loop import TrainConfig, train
from recurrent.validation import at_least, check, probability


def supervised_training(**changes) -> TrainConfig:
    """Classification's and tagging's training defaults (evaluated once per epoch, patience 5), with `changes`."""
    return TrainConfig(**{**dict(out="runs/supervised", lr=1e-3, clip=5.0, epochs=20, eval_every=0, patience=5),
                          **changes})


@dataclass
class SupervisedConfig:
    train: str | None = None  # training file
    valid: str | None = None  # dev file: early stopping and the best checkpoint
    lowercase: bool = False  # lowercase words before looking them up (the char encoder still sees case)
    min_freq: int = field(default=1, metadata=at_least(1))  # words seen fewer times in train become <unk>
    unk_replace: float = field(default=0.0, metadata=probability())  # in training, replace each word seen once
    #     by <unk> with this probability, so that <unk> learns an embedding for unseen words (Lample et al. 2016
    #     use 0.5)
    embeddings: str | None = None  # a word2vec/GloVe text file to initialise the word embeddings (never downloaded)
    batch_size: int = 32
    training: TrainConfig = field(default_factory=supervised_training)  # the loop's: optimizer, budgets, ...

    def validate(self) -> None:
        """UserError naming the first bad value: types and ranges (recurrent.validation), the files, the device."""
        check(self)
        if not self.train or not self.valid:
            raise UserError("training needs --train FILE and --valid FILE")
        self.training.validate()


# --- vocabularies -------------------------------------------------------------------------------------------


def build_index(sequences, min_freq: int = 1, specials: tuple[str, ...] = (PAD, UNK)) -> list[str]:
    """specials, then the items of `sequences` seen at least min_freq times, by frequency (ties by the item)."""
    counts = Counter(x for seq in sequences for x in seq)
    items = sorted((x for x, n in counts.items() if n >= min_freq and x not in specials),
                   key=lambda x: (-counts[x], x))
    return list(specials) + items


def singleton_ids(sequences, itos: list[str]) -> torch.Tensor:
    """(V,) bool: True for the words of `itos` seen exactly once in `sequences` (already normalised)."""
    counts = Counter(x for seq in sequences for x in seq)
    return torch.tensor([counts[w] == 1 for w in itos])


def replace_singletons(words: torch.Tensor, singletons: torch.Tensor, p: float) -> torch.Tensor:
    """words (B, T) ids with each singleton replaced by UNK (id 1) with probability p (torch's global RNG)."""
    if p <= 0:
        return words
    drop = singletons[words] & (torch.rand(words.shape) < p)
    return words.masked_fill(drop, 1)


# --- the task -------------------------------------------------------------------------------------------------


class SupervisedTask:
    """Labelled examples (classification, tagging) for the training loop: shuffled length buckets, one forward
    pass per batch, and the task's own score on the dev set, whose "metric" (higher is better) picks the best model.

    collate(items) -> the model's keyword arguments (on the CPU; the step moves them); score(model, items) -> dict
    with "metric" and "val_loss"; meta: the model config and vocabularies the checkpoint holds; loss_terms(items):
    what the model's loss on them is a mean over (default: the examples; a softmax tagger's is the tokens), which
    weighs each process's loss when several train together."""

    metric, higher_is_better, unit = "metric", True, "ex"

    def __init__(self, name: str, config: SupervisedConfig, model: nn.Module, train: list, lengths: list[int],
                 valid: list, collate: Callable[[list], dict], score: Callable[[nn.Module, list], dict], meta: dict,
                 loss_terms: Callable[[list], int] = len):
        self.name, self.config, self.model, self.train, self.lengths, self.valid = name, config, model, train, \
            lengths, valid
        self.collate, self.score, self._meta, self.loss_terms = collate, score, meta, loss_terms

    def meta(self) -> dict:
        return self._meta

    def steps_per_epoch(self) -> int:
        return -(-len(self.train) // self.config.batch_size)

    def batches(self, epoch: int):
        """Index lists, shuffled within and across length buckets by a generator of this epoch's own, so a resumed
        run sees the same batches. With several processes, this one's part of each (recurrent/train/distributed.py)."""
        shuffle = torch.Generator().manual_seed(self.config.training.seed * 100_003 + epoch)
        world = distributed.world()
        return iter([world.share(len(indices), lambda rows: indices[rows])
                     for indices in bucket_batches(self.lengths, self.config.batch_size, shuffle)])

    def step(self, model: nn.Module, indices: list[int], carry):
        return model(**to_device(self.collate([self.train[i] for i in indices]), model_device(model))), None

    def count(self, indices: list[int]) -> int:
        return len(indices)

    def weight(self, indices: list[int]) -> int:
        return self.loss_terms([self.train[i] for i in indices])

    def evaluate(self, model: nn.Module) -> dict:
        return self.score(model, self.valid)


def fit(config: SupervisedConfig, build: Callable[[], SupervisedTask]) -> Path:
    """Train the task that `build()` makes (it reads the data and builds the model, after the loop has seeded the
    RNGs) with the training loop; return the run folder."""
    return train(lambda resumed: build(), config.training, asdict(config))


def _plain(d: dict) -> dict:
    """JSON-safe copy (numpy and torch scalars -> float)."""
    return json.loads(json.dumps(d, default=float))
