"""A trained sequence tagger with its vocabularies, and scoring a tagged file with it (one tag per token): NER, POS tagging, chunking.

    tagger = load_tagger("runs/ner")
    tagger.predict([["EU", "rejects", "German", "call"]])     # [["B-ORG", "O", "B-MISC", "O"]]
    print(evaluate_tagger(tagger, "eng.testb"))              # F1 per type, token accuracy, confusion matrix

Tag schemes: with scheme "auto" (the default), tags that are all O / B-X / I-X are converted from IOB1 to BIO
(`to_bio`; BIO input is unchanged), so CoNLL-2003 files need no preprocessing. Entity F1 is seqeval's default
mode, which chunks as the official conlleval script does. The dev metric for early stopping is entity F1 for
BIO tags, token accuracy otherwise (POS).

A tag in an evaluation file that training never saw (CoNLL-2000's test set has I-LST) is scored as conlleval
scores it: the gold keeps it, so its chunk counts in recall and the model, which cannot predict it, misses it;
its tokens count wrong in token accuracy. The report says how many there were (`TaggingReport.unseen`).
Unseen words and characters read as <unk>, as they always have.
Training is recurrent/train/tag.py's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from recurrent.data.buckets import bucket_batches, pad
from recurrent.data.labelled import Read, is_iob, read_conll, read_conllu, to_bio
from recurrent.devices import model_device, to_device
from recurrent.inference.common import UNK, confusion_matrix, format_confusion, load_best, log, lookup
from recurrent.models.tagger import SequenceTagger, TaggerConfig
from recurrent.unseen import Unseen

MAX_WORD_CHARS = 30  # longer words keep their first 30 characters for the char encoder


def read_tagged(path, config: dict) -> Read:
    """The sentences of a file in the run's format (`config`: the trainer config as a dict, as the run saved it)."""
    if config["format"] == "conllu":
        read = read_conllu(path, config["field"])
    else:
        read = read_conll(path, config["column"])
    if read.skipped:
        log(f"{path}: skipped {read.skipped} empty sentences")
    if config["scheme"] == "auto" and is_iob(t for ex in read.examples for t in ex.label):
        read = Read([ex._replace(label=to_bio(ex.label)) for ex in read.examples], read.skipped)
    return read


class Batch(NamedTuple):
    words: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,)
    chars: torch.Tensor  # (B, T, C)
    char_lengths: torch.Tensor  # (B, T), 0 on padding


@dataclass
class Tagger:
    """A trained model with its vocabularies: what predict and evaluate need."""

    model: SequenceTagger
    words: list[str]
    chars: list[str]
    tags: list[str]
    config: dict  # the trainer config it was trained with

    def __post_init__(self):
        self.word_index, self.char_index = lookup(self.words), lookup(self.chars)

    def encode(self, tokens: list[str]) -> tuple[list[int], list[list[int]]]:
        """(word ids, char ids per word)."""
        unk, lower = self.word_index[UNK], self.config["lowercase"]
        words = [self.word_index.get(t.lower() if lower else t, unk) for t in tokens]
        chars = [[self.char_index.get(c, 1) for c in t[:MAX_WORD_CHARS]] for t in tokens]
        return words, chars

    def collate(self, encoded: list[tuple[list[int], list[list[int]]]]) -> Batch:
        """Encoded sentences -> the model's inputs, on the CPU."""
        words, lengths = pad([w for w, _ in encoded])
        B, T = words.shape
        C = max(len(c) for _, cs in encoded for c in cs)
        chars = torch.zeros(B, T, C, dtype=torch.long)
        char_lengths = torch.zeros(B, T, dtype=torch.long)
        for b, (_, cs) in enumerate(encoded):
            for t, c in enumerate(cs):
                chars[b, t, :len(c)] = torch.tensor(c)
                char_lengths[b, t] = len(c)
        return Batch(words, lengths, chars, char_lengths)

    def batch(self, encoded: list[tuple[list[int], list[list[int]]]]) -> Batch:
        """collate(encoded) on the model's device."""
        return to_device(self.collate(encoded), model_device(self.model))

    @torch.no_grad()
    def predict_ids(self, encoded: list, batch_size: int = 64) -> list[list[int]]:
        self.model.eval()
        out = [None] * len(encoded)
        for indices in bucket_batches([len(w) for w, _ in encoded], batch_size):
            batch = self.batch([encoded[i] for i in indices])
            emissions = self.model(*batch).emissions
            for i, path in zip(indices, self.model.decode(emissions, batch.lengths)):
                out[i] = path
        return out

    def predict(self, sentences: list[list[str]], batch_size: int = 64) -> list[list[str]]:
        """One tag per token of each sentence (each a non-empty token list), in order."""
        ids = self.predict_ids([self.encode(s) for s in sentences], batch_size)
        return [[self.tags[i] for i in path] for path in ids]


# --- evaluation ---------------------------------------------------------------------------------------------


class TaggingReport(NamedTuple):
    accuracy: float  # token accuracy; a token whose gold tag training never saw is always wrong
    f1: float | None  # entity F1 (%), for BIO tags; None otherwise
    per_type: dict[str, dict]  # BIO: type -> {"precision", "recall", "f1" (%), "support"}
    loss: float  # mean loss per sentence (CRF: negative log-likelihood; softmax: cross-entropy per token), over
    #              the sentences whose gold tags training all saw (an unseen tag has no score to take a loss of)
    confusion: list[list[int]]  # token level, [gold][predicted], rows and columns named by `tags`
    tags: list[str]  # the model's tags, then the unseen gold tags (whose columns stay 0)
    unseen: Unseen  # the gold tags that training never saw, counted on tokens

    def __str__(self) -> str:
        lines = []
        if self.f1 is not None:
            lines.append(f"F1 {self.f1:.1f}")
            lines += [f"F1 {t} {s['f1']:.1f} (precision {s['precision']:.1f}, recall {s['recall']:.1f}, "
                      f"support {s['support']})" for t, s in self.per_type.items()]
        lines.append(f"token accuracy {self.accuracy:.3f}")
        lines.append(str(self.unseen))
        lines.append("confusion matrix (tokens; rows: gold, columns: predicted)")
        lines.append(format_confusion(self.confusion, self.tags))
        return "\n".join(lines)


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> tuple[float, dict[str, dict]]:
    """Overall (micro) entity F1 in % and per-type scores, chunked as conlleval does (seqeval's default mode)."""
    from seqeval.metrics import classification_report  # here: it imports scikit-learn, 1.4 s at CLI start

    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {t: {"precision": 100 * s["precision"], "recall": 100 * s["recall"], "f1": 100 * s["f1-score"],
                    "support": int(s["support"])}
                for t, s in report.items() if not t.endswith(" avg")}
    return 100 * report["micro avg"]["f1-score"], per_type


@torch.no_grad()
def evaluate_items(tagger: Tagger, items: list, batch_size: int = 64) -> TaggingReport:
    """Score items (word ids, char ids, gold tags as strings). Gold tags stay strings, so that a tag training
    never saw stays in the gold sequence (conlleval's counting: see the module docstring)."""
    model = tagger.model
    index = lookup(tagger.tags)
    was_training = model.training
    model.eval()
    gold, pred, loss, scored = [], [], 0.0, 0
    for indices in bucket_batches([len(w) for w, _, _ in items], batch_size):
        batch = tagger.batch([items[i][:2] for i in indices])
        emissions = model(*batch).emissions  # (B, T, K)
        pred += [[tagger.tags[k] for k in path] for path in model.decode(emissions, batch.lengths)]
        gold += [items[i][2] for i in indices]
        # the loss needs a score for every gold tag: only sentences whose tags the model knows have one
        keep = [j for j, i in enumerate(indices) if all(t in index for t in items[i][2])]
        if keep:
            target = pad([[index[t] for t in items[indices[j]][2]] for j in keep])[0]  # (B', T')
            rows = torch.tensor(keep, device=emissions.device)
            T = target.shape[1]  # the kept sentences' longest: emissions beyond it are padding
            loss += model.loss(emissions[rows, :T], batch.lengths[keep], target).item() * len(keep)
            scored += len(keep)
    model.train(was_training)
    flat_gold = [t for s in gold for t in s]
    flat_pred = [t for s in pred for t in s]
    accuracy = sum(g == p for g, p in zip(flat_gold, flat_pred)) / len(flat_gold)
    unseen = Unseen.count(flat_gold, index, "tag", "token")
    names = tagger.tags + list(unseen.counts)  # an unseen tag gets a confusion row (its column stays 0)
    f1, per_type = None, {}
    if is_iob(names):
        f1, per_type = entity_scores(gold, pred)
    rows = lookup(names)
    confusion = confusion_matrix([rows[t] for t in flat_gold], [rows[t] for t in flat_pred], len(names))
    return TaggingReport(accuracy, f1, per_type, loss / scored if scored else math.nan, confusion, names, unseen)


def evaluation_items(tagger: Tagger, read: Read) -> list[tuple[list[int], list[list[int]], list[str]]]:
    """(word ids, char ids, gold tags as strings) per sentence: what `evaluate_items` scores."""
    return [(*tagger.encode(ex.tokens), list(ex.label)) for ex in read.examples]


def evaluate_tagger(tagger: Tagger, path, batch_size: int = 64) -> TaggingReport:
    """Score a tagged file, read in the format the model was trained on. Tags that training never saw count
    as misses (see the module docstring) and are counted in the report's `unseen`."""
    return evaluate_items(tagger, evaluation_items(tagger, read_tagged(path, tagger.config)), batch_size)


def load_tagger(run_dir, device: str = "cpu") -> Tagger:
    """The best model of a run folder (in eval mode, on `device`) with its vocabularies, checked as load_best
    says."""
    model, meta = load_best(run_dir, "tag", lambda meta: SequenceTagger(TaggerConfig(**meta["model"]), meta["tags"]),
                            device)
    return Tagger(model, meta["words"], meta["chars"], meta["tags"], meta["trainer"])
