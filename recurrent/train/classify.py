"""Train a sequence classifier (one label per sentence); recurrent/inference/classify.py loads and scores it.

    run_dir = train_classify(flat_replace(TrainClassifyConfig(), train="train.tsv", valid="dev.tsv", out="runs/sent"))
    classifier = load_classifier(run_dir)                  # recurrent.inference.classify
    classifier.predict([["a", "fine", "film"]])            # ["positive"]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recurrent.data.labelled import SST2, Read
from recurrent.embeddings import init_embedding
from recurrent.errors import UserError
from recurrent.inference.classify import (FORMATS, Classifier, evaluate_items, evaluation_items, input_size,
                                          read_classification)
from recurrent.inference.common import log, lookup
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
from recurrent.models.tree import NO_LABEL, EncodedTree, TreeClassifier
from recurrent.train.loop import TrainConfig
from recurrent.train.supervised import (SupervisedConfig, SupervisedTask, build_index, fit,
                                        replace_singletons, singleton_ids, supervised_training)
from recurrent.unseen import Unseen


@dataclass
class TrainClassifyConfig(SupervisedConfig):
    training: TrainConfig = field(default_factory=lambda: supervised_training(out="runs/classify"))
    format: str = field(default="tsv", metadata={"help": f"one of {FORMATS}; tsv/csv: one example per row",
                                                 "choices": FORMATS})
    text_col: str = "1"  # tsv/csv: 0-based column index, or a header name with --header
    label_col: str = "0"
    header: bool = False  # tsv/csv: the first row names the columns
    binary: bool = False  # sst: SST-2 (negative/positive, neutral dropped) instead of SST-5
    phrases: bool = False  # sst: train on every labelled phrase too, not only whole sentences
    model: ClassifierConfig = field(default_factory=ClassifierConfig)

    def validate(self) -> None:
        super().validate()
        if self.model.structure == "tree" and self.format != "sst":
            raise UserError(f"structure 'tree' needs parse trees: format must be 'sst', got {self.format!r}")


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
    """Train as `config` says (recurrent.train.loop does the training); return the run folder."""
    config.validate()
    return fit(config, lambda: classify_task(config))


def classify_task(config: TrainClassifyConfig) -> SupervisedTask:
    """Read the data, build the vocabularies and the model: the task the loop trains."""
    train = read_classification(config.train, dataclasses.asdict(config), training=True)
    valid = read_classification(config.valid, dataclasses.asdict(config))
    trees = config.model.structure == "tree"
    norm = (lambda t: t.lower()) if config.lowercase else (lambda t: t)
    words = build_index(([norm(t) for t in ex.tokens] for ex in train.examples), config.min_freq)
    singletons = singleton_ids(([norm(t) for t in ex.tokens] for ex in train.examples), words)
    sst_label = (lambda raw: SST2.get(raw)) if config.binary else (lambda raw: raw)  # None: dropped (neutral)
    if trees:
        labels = sorted({sst_label(n.label) for ex in train.examples for n in ex.tree.subtrees()} - {None})
    else:
        labels = sorted({ex.label for ex in train.examples})
    model_config = dataclasses.replace(config.model, vocab_size=len(words), num_classes=len(labels))
    try:
        model = (TreeClassifier if trees else SequenceClassifier)(model_config)
    except ValueError as e:
        raise UserError(str(e)) from None
    if config.embeddings:
        init_embedding(model.embedding, config.embeddings, words, log)
    classifier = Classifier(model, words, labels, dataclasses.asdict(config))
    train_items = encode_training_trees(classifier, train, config.phrases, sst_label) if trees else \
        encode_items(classifier, train, config.train)
    valid_items = evaluation_items(classifier, valid)  # gold labels as strings: one unseen in train counts wrong
    unseen = Unseen.count((ex.label for ex in valid.examples), labels, "label", "example")
    if unseen.counts:
        log(f"{config.valid}: {unseen}")

    def collate(items):
        inputs = classifier.collate([x for x, _ in items])  # fit moves it to the device
        if trees:
            t = inputs["trees"]
            return {"trees": t._replace(words=replace_singletons(t.words, singletons, config.unk_replace))}
        return {**inputs, "words": replace_singletons(inputs["words"], singletons, config.unk_replace),
                "labels": torch.tensor([y for _, y in items])}

    def score(model, items) -> dict:
        report = evaluate_items(classifier, items)
        return {"metric": report.accuracy, "val_loss": report.loss, "accuracy": report.accuracy,
                "macro_f1": report.macro_f1}

    meta = {"model": dataclasses.asdict(model_config), "words": words, "labels": labels}
    # A tree model's loss is a mean over the labelled nodes (with --phrases, more than one a tree): what several
    # processes weigh their losses by.
    loss_terms = (lambda items: sum(y != NO_LABEL for x, _ in items for y in x.labels)) if trees else len
    return SupervisedTask("classify", config, model, train_items, [input_size(x) for x, _ in train_items], valid_items,
                          collate, score, meta, loss_terms)


def encode_items(classifier: Classifier, read: Read, path) -> list[tuple[list[int] | EncodedTree, int]]:
    """(model input, label id) per example: the label of the sentence (a tree model: of the root)."""
    inputs = [classifier.encode_input(ex.tree if classifier.reads_trees else ex.tokens) for ex in read.examples]
    return list(zip(inputs, encode_labels(read, classifier.labels, path)))


def encode_training_trees(classifier: Classifier, read: Read, phrases: bool, sst_label) -> list:
    """(tree with a label id on every labelled node, root label id) per training tree. Without `phrases` only
    the roots keep their labels; a tree left with no label at all (SST-2: a neutral sentence) is dropped."""
    index = lookup(classifier.labels)
    items = []
    for ex in read.examples:
        tree = classifier.encode_tree(ex.tree, lambda raw: index.get(sst_label(raw), NO_LABEL))
        if not phrases:
            tree = tree._replace(labels=[NO_LABEL] * (len(tree.labels) - 1) + tree.labels[-1:])
        if any(y != NO_LABEL for y in tree.labels):
            items.append((tree, tree.labels[-1]))
    return items
