"""A trained sequence or tree classifier with its vocabularies, and scoring a labelled file with it.

    classifier = load_classifier("runs/sent")
    classifier.predict([["a", "fine", "film"]])            # ["positive"]
    report = evaluate_classifier(classifier, "test.tsv")   # report.accuracy, report.macro_f1, report.confusion

A label in an evaluation file that training never saw counts wrong: the model can never predict it. The report
counts such labels (`ClassificationReport.unseen`), so a capped accuracy is never silent. Training is
recurrent/train/classify.py's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from recurrent.data.buckets import bucket_batches, pad
from recurrent.data.labelled import Read, Tree, read_sst, read_tabular
from recurrent.devices import model_device, to_device
from recurrent.errors import UserError
from recurrent.inference.common import UNK, confusion_matrix, format_confusion, load_best, log, lookup, macro_f1
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
from recurrent.models.tree import NO_LABEL, EncodedTree, TreeClassifier, batch_trees, encode_tree
from recurrent.unseen import Unseen

FORMATS = ("tsv", "csv", "sst")


def read_classification(path, config: dict, training: bool = False) -> Read:
    """The examples of a file in the run's format (`config`: the trainer config as a dict, as the run saved it); phrases only for training. A tree model reads whole trees
    (every tree in training, neutral roots too, since its phrases carry labels) and finds the phrases inside."""
    if config["format"] == "sst":
        if config["model"]["structure"] == "tree" and training:
            read = read_sst(path)
        else:
            read = read_sst(path, binary=config["binary"], phrases=config["phrases"] and training)
    else:
        read = read_tabular(path, config["text_col"], config["label_col"], config["header"],
                            "," if config["format"] == "csv" else "\t")
    if read.skipped:
        log(f"{path}: skipped {read.skipped} empty sentences")
    return read


@dataclass
class Classifier:
    """A trained model with its vocabularies: what predict and evaluate need. A sequence model reads token
    lists, a tree model parse trees (`recurrent.data.labelled.Tree`)."""

    model: SequenceClassifier | TreeClassifier
    words: list[str]
    labels: list[str]
    config: dict  # the trainer config it was trained with

    def __post_init__(self):
        self.stoi = lookup(self.words)
        self.reads_trees = isinstance(self.model, TreeClassifier)

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(t.lower() if self.config["lowercase"] else t, unk) for t in tokens]

    def encode_tree(self, tree: Tree, label_id=lambda label: NO_LABEL) -> EncodedTree:
        return encode_tree(tree, lambda word: self.encode([word])[0], label_id)

    def encode_input(self, x: list[str] | Tree) -> list[int] | EncodedTree:
        """A sentence's model input: word ids, or an encoded tree (no labels)."""
        if not self.reads_trees:
            return self.encode(x.leaves() if isinstance(x, Tree) else x)
        if not isinstance(x, Tree):
            raise UserError("this classifier composes parse trees: give one PTB-bracketed tree per line, "
                            "such as (3 (2 a) (3 film)); the labels are ignored")
        return self.encode_tree(x)

    def collate(self, inputs: list) -> dict:
        """Encoded inputs -> the model's keyword arguments, on the CPU."""
        if self.reads_trees:
            return {"trees": batch_trees(inputs)}
        words, lengths = pad(inputs)
        return {"words": words, "lengths": lengths}

    def batch(self, inputs: list) -> dict:
        """collate(inputs) on the model's device."""
        return to_device(self.collate(inputs), model_device(self.model))

    @torch.no_grad()
    def predict_ids(self, sentences: list, batch_size: int = 64) -> list[int]:
        self.model.eval()
        inputs = [self.encode_input(s) for s in sentences]
        out = [0] * len(inputs)
        for batch in bucket_batches([input_size(x) for x in inputs], batch_size):
            logits = self.model(**self.batch([inputs[i] for i in batch])).logits
            for i, p in zip(batch, logits.argmax(-1).tolist()):
                out[i] = p
        return out

    def predict(self, sentences: list, batch_size: int = 64) -> list[str]:
        """One label per sentence (a non-empty token list, or a Tree for a tree model), in order."""
        return [self.labels[i] for i in self.predict_ids(sentences, batch_size)]


def input_size(x: list[int] | EncodedTree) -> int:
    """An encoded input's size, what batches are bucketed by: its tokens, or its tree's nodes."""
    return len(x.words) if isinstance(x, EncodedTree) else len(x)



# --- evaluation ---------------------------------------------------------------------------------------------


class ClassificationReport(NamedTuple):
    accuracy: float  # an example whose gold label training never saw is always wrong
    macro_f1: float  # over the union of gold and predicted labels, unseen gold labels included (see evaluate_items)
    loss: float  # mean cross-entropy over the examples whose gold label training saw (an unseen one has no logit)
    confusion: list[list[int]]  # [gold][predicted], rows and columns named by `labels`
    labels: list[str]  # the model's labels, then the unseen gold labels (whose columns stay 0)
    unseen: Unseen  # the gold labels that training never saw, counted on examples

    def __str__(self) -> str:
        return (f"accuracy {self.accuracy:.3f}\nmacro-F1 {self.macro_f1:.3f}\n{self.unseen}\n"
                f"confusion matrix (rows: gold, columns: predicted)\n{format_confusion(self.confusion, self.labels)}")


@torch.no_grad()
def evaluate_items(classifier: Classifier, items: list[tuple[list[int] | EncodedTree, str]],
                   batch_size: int = 64) -> ClassificationReport:
    """Score items (model input, gold label as a string).

    A gold label that training never saw stays in the gold labels: the model cannot predict it, so its examples
    count wrong in accuracy, and macro-F1 averages over the union of gold and predicted labels, as
    scikit-learn's f1_score(average="macro") does by default, so the unseen label adds a class whose F1 is 0
    (a label absent from both gold and predictions is left out)."""
    model = classifier.model
    index = lookup(classifier.labels)
    was_training = model.training
    model.eval()
    gold, pred, loss, scored = [], [], 0.0, 0
    for batch in bucket_batches([input_size(x) for x, _ in items], batch_size):
        logits = model(**classifier.batch([items[i][0] for i in batch])).logits  # (B, C)
        pred += [classifier.labels[k] for k in logits.argmax(-1).tolist()]
        gold += [items[i][1] for i in batch]
        keep = [j for j, i in enumerate(batch) if items[i][1] in index]  # an unseen label has no logit to score
        if keep:
            target = torch.tensor([index[items[batch[j]][1]] for j in keep], device=logits.device)
            loss += F.cross_entropy(logits[keep], target, reduction="sum").item()
            scored += len(keep)
    model.train(was_training)
    unseen = Unseen.count(gold, index, "label", "example")
    names = classifier.labels + list(unseen.counts)
    rows = lookup(names)
    confusion = confusion_matrix([rows[g] for g in gold], [rows[p] for p in pred], len(names))
    accuracy = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    return ClassificationReport(accuracy, macro_f1(confusion), loss / scored if scored else math.nan, confusion,
                                names, unseen)


def evaluation_items(classifier: Classifier, read: Read) -> list[tuple[list[int] | EncodedTree, str]]:
    """(model input, gold label as a string) per example (a tree model: the root's label): what
    `evaluate_items` scores."""
    return [(classifier.encode_input(ex.tree if classifier.reads_trees else ex.tokens), ex.label)
            for ex in read.examples]


def evaluate_classifier(classifier: Classifier, path, batch_size: int = 64) -> ClassificationReport:
    """Score a labelled file, read in the format the model was trained on. Labels that training never saw
    count wrong (see evaluate_items) and are counted in the report's `unseen`."""
    read = read_classification(path, classifier.config)
    return evaluate_items(classifier, evaluation_items(classifier, read), batch_size)


def load_classifier(run_dir, device: str = "cpu") -> Classifier:
    """The best model of a run folder (in eval mode, on `device`) with its vocabularies, checked as load_best
    says."""
    model, meta = load_best(run_dir, "classify", build_classifier, device)
    return Classifier(model, meta["words"], meta["labels"], meta["trainer"])


def build_classifier(meta: dict) -> SequenceClassifier | TreeClassifier:
    config = ClassifierConfig(**meta["model"])
    return (TreeClassifier if config.structure == "tree" else SequenceClassifier)(config)
