"""Train and use a sequence classifier (one label per sentence).

    run_dir = train_classify(TrainClassifyConfig(train="train.tsv", valid="dev.tsv", out="runs/sent"))
    classifier = load_classifier(run_dir)
    classifier.predict([["a", "fine", "film"]])            # ["positive"]
    report = evaluate_classifier(classifier, "test.tsv")   # report.accuracy, report.macro_f1, report.confusion

A label in an evaluation file that training never saw is an error naming file:line (the model could never
predict it, so accuracy would silently be capped).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recurrent.data.buckets import bucket_batches, pad
from recurrent.data.labelled import Read, read_sst, read_tabular
from recurrent.embeddings import init_embedding
from recurrent.errors import UserError
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
from recurrent.train.supervised import (UNK, SupervisedConfig, build_index, confusion_matrix, fit,
                                        format_confusion, load_run, log, lookup, macro_f1,
                                        replace_singletons, seed_everything, singleton_ids)

FORMATS = ("tsv", "csv", "sst")


@dataclass
class TrainClassifyConfig(SupervisedConfig):
    out: str = "runs/classify"
    format: str = field(default="tsv", metadata={"help": f"one of {FORMATS}; tsv/csv: one example per row"})
    text_col: str = "1"  # tsv/csv: 0-based column index, or a header name with --header
    label_col: str = "0"
    header: bool = False  # tsv/csv: the first row names the columns
    binary: bool = False  # sst: SST-2 (negative/positive, neutral dropped) instead of SST-5
    phrases: bool = False  # sst: train on every labelled phrase too, not only whole sentences
    model: ClassifierConfig = field(default_factory=ClassifierConfig)

    def validate(self) -> None:
        super().validate()
        if self.format not in FORMATS:
            raise UserError(f"format must be one of {FORMATS}, got {self.format!r}")


def read_classification(path, config: TrainClassifyConfig, training: bool = False) -> Read:
    """The examples of a file in the run's format; phrases only for training."""
    if config.format == "sst":
        read = read_sst(path, binary=config.binary, phrases=config.phrases and training)
    else:
        read = read_tabular(path, config.text_col, config.label_col, config.header,
                            "," if config.format == "csv" else "\t")
    if read.skipped:
        log(f"{path}: skipped {read.skipped} empty sentences")
    return read


@dataclass
class Classifier:
    """A trained model with its vocabularies: what predict and evaluate need."""

    model: SequenceClassifier
    words: list[str]
    labels: list[str]
    config: dict  # the trainer config it was trained with

    def __post_init__(self):
        self.stoi = lookup(self.words)

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(t.lower() if self.config["lowercase"] else t, unk) for t in tokens]

    @torch.no_grad()
    def predict_ids(self, sentences: list[list[str]], batch_size: int = 64) -> list[int]:
        self.model.eval()
        ids = [self.encode(s) for s in sentences]
        out = [0] * len(ids)
        for batch in bucket_batches([len(x) for x in ids], batch_size):
            words, lengths = pad([ids[i] for i in batch])
            for i, p in zip(batch, self.model(words, lengths).logits.argmax(-1).tolist()):
                out[i] = p
        return out

    def predict(self, sentences: list[list[str]], batch_size: int = 64) -> list[str]:
        """One label per sentence (each a non-empty token list), in order."""
        return [self.labels[i] for i in self.predict_ids(sentences, batch_size)]


def encode_labels(read: Read, labels: list[str], path) -> list[int]:
    index = lookup(labels)
    out = []
    for ex in read.examples:
        if ex.label not in index:
            raise UserError(f"{path}:{ex.line}: label {ex.label!r} never appears in training; known labels: "
                            f"{labels}")
        out.append(index[ex.label])
    return out


def train_classify(config: TrainClassifyConfig) -> Path:
    config.validate()
    seed_everything(config.seed)
    train = read_classification(config.train, config, training=True)
    valid = read_classification(config.valid, config)
    norm = (lambda t: t.lower()) if config.lowercase else (lambda t: t)
    words = build_index(([norm(t) for t in ex.tokens] for ex in train.examples), config.min_freq)
    singletons = singleton_ids(([norm(t) for t in ex.tokens] for ex in train.examples), words)
    labels = sorted({ex.label for ex in train.examples})
    model_config = dataclasses.replace(config.model, vocab_size=len(words), num_classes=len(labels))
    try:
        model = SequenceClassifier(model_config)
    except ValueError as e:
        raise UserError(str(e)) from None
    if config.embeddings:
        init_embedding(model.embedding, config.embeddings, words, log)
    classifier = Classifier(model, words, labels, dataclasses.asdict(config))

    def encode(read: Read, path) -> list[tuple[list[int], int]]:
        return list(zip((classifier.encode(ex.tokens) for ex in read.examples), encode_labels(read, labels, path)))

    train_items, valid_items = encode(train, config.train), encode(valid, config.valid)

    def collate(items):
        words_, lengths = pad([x for x, _ in items])
        return {"words": replace_singletons(words_, singletons, config.unk_replace), "lengths": lengths,
                "labels": torch.tensor([y for _, y in items])}

    def score(model, items) -> dict:
        report = evaluate_items(classifier, items)
        return {"metric": report.accuracy, "val_loss": report.loss, "accuracy": report.accuracy,
                "macro_f1": report.macro_f1}

    meta = {"model": dataclasses.asdict(model_config), "words": words, "labels": labels}
    return fit(config, "classify", model, train_items, [len(x) for x, _ in train_items], valid_items, collate,
               score, meta)


# --- evaluation ---------------------------------------------------------------------------------------------


class ClassificationReport(NamedTuple):
    accuracy: float
    macro_f1: float
    loss: float  # mean cross-entropy
    confusion: list[list[int]]  # [gold][predicted]
    labels: list[str]

    def __str__(self) -> str:
        return (f"accuracy {self.accuracy:.3f}\nmacro-F1 {self.macro_f1:.3f}\n"
                f"confusion matrix (rows: gold, columns: predicted)\n{format_confusion(self.confusion, self.labels)}")


@torch.no_grad()
def evaluate_items(classifier: Classifier, items: list[tuple[list[int], int]],
                   batch_size: int = 64) -> ClassificationReport:
    model = classifier.model
    was_training = model.training
    model.eval()
    gold, pred, loss = [], [], 0.0
    for batch in bucket_batches([len(x) for x, _ in items], batch_size):
        words, lengths = pad([items[i][0] for i in batch])
        labels = torch.tensor([items[i][1] for i in batch])
        logits = model(words, lengths).logits
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        gold += labels.tolist()
        pred += logits.argmax(-1).tolist()
    model.train(was_training)
    confusion = confusion_matrix(gold, pred, len(classifier.labels))
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    return ClassificationReport(accuracy, macro_f1(confusion), loss / len(gold), confusion, classifier.labels)


def evaluate_classifier(classifier: Classifier, path, batch_size: int = 64) -> ClassificationReport:
    """Score a labelled file, read in the format the model was trained on."""
    config = TrainClassifyConfig(**{k: v for k, v in classifier.config.items() if k != "model"})
    read = read_classification(path, config)
    items = list(zip((classifier.encode(ex.tokens) for ex in read.examples),
                     encode_labels(read, classifier.labels, path)))
    return evaluate_items(classifier, items, batch_size)


def load_classifier(run_dir) -> Classifier:
    tensors, meta = load_run(run_dir)
    if "labels" not in meta or "words" not in meta:
        raise UserError(f"{run_dir} does not hold a classifier checkpoint (no labels or words)")
    model = SequenceClassifier(ClassifierConfig(**meta["model"]))
    model.load_state_dict(tensors)
    model.eval()
    return Classifier(model, meta["words"], meta["labels"], meta["trainer"])
