"""Train and use a sequence tagger (one tag per token): NER, POS tagging, chunking.

    run_dir = train_tag(TrainTagConfig(train="eng.train", valid="eng.testa", out="runs/ner",
                                       model=TaggerConfig(crf=True, char_encoder="lstm")))
    tagger = load_tagger(run_dir)
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
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from recurrent.data.buckets import bucket_batches, pad
from recurrent.data.labelled import CONLLU_FIELDS, Read, is_iob, read_conll, read_conllu, to_bio
from recurrent.embeddings import init_embedding
from recurrent.errors import UserError
from recurrent.models.tagger import SequenceTagger, TaggerConfig
from recurrent.train.common import model_device, resolve_device, to_device
from recurrent.train.loop import TrainConfig
from recurrent.train.supervised import (UNK, SupervisedConfig, SupervisedTask, build_index, confusion_matrix,
                                        fit, format_confusion, load_run, log, lookup, replace_singletons,
                                        singleton_ids, supervised_training)
from recurrent.unseen import Unseen

FORMATS = ("conll", "conllu")
SCHEMES = ("auto", "none")
MAX_WORD_CHARS = 30  # longer words keep their first 30 characters for the char encoder


@dataclass
class TrainTagConfig(SupervisedConfig):
    training: TrainConfig = dataclasses.field(default_factory=lambda: supervised_training(out="runs/tag"))
    format: str = dataclasses.field(default="conll", metadata={"help": f"one of {FORMATS}"})
    column: int = -1  # conll: 0-based tag column (default: the last)
    field: str = dataclasses.field(  # named as the --field flag, so dataclasses.field is spelled out
        default="upos", metadata={"help": f"conllu: the tag field, one of {CONLLU_FIELDS}"})
    scheme: str = dataclasses.field(default="auto",
                                    metadata={"help": "auto: IOB1 -> BIO when every tag is O/B-X/I-X; none"})
    model: TaggerConfig = dataclasses.field(default_factory=TaggerConfig)

    def validate(self) -> None:
        super().validate()
        if self.format not in FORMATS:
            raise UserError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.scheme not in SCHEMES:
            raise UserError(f"scheme must be one of {SCHEMES}, got {self.scheme!r}")


def read_tagged(path, config: TrainTagConfig) -> Read:
    if config.format == "conllu":
        read = read_conllu(path, config.field)
    else:
        read = read_conll(path, config.column)
    if read.skipped:
        log(f"{path}: skipped {read.skipped} empty sentences")
    if config.scheme == "auto" and is_iob(t for ex in read.examples for t in ex.label):
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


def encode_tags(read: Read, tags: list[str], path) -> list[list[int]]:
    index = lookup(tags)
    out = []
    for ex in read.examples:
        unknown = [(k, t) for k, t in enumerate(ex.label) if t not in index]
        if unknown:
            k, t = unknown[0]
            raise UserError(f"{path}:{ex.line}: tag {t!r} (token {k + 1} of the sentence starting here, "
                            f"{ex.tokens[k]!r}) never appears in training; known tags: {tags}")
        out.append([index[t] for t in ex.label])
    return out


def train_tag(config: TrainTagConfig) -> Path:
    """Train as `config` says (recurrent.train.loop does the training); return the run folder."""
    config.validate()
    return fit(config, lambda: tag_task(config))


def tag_task(config: TrainTagConfig) -> SupervisedTask:
    """Read the data, build the vocabularies and the model: the task the loop trains."""
    train, valid = read_tagged(config.train, config), read_tagged(config.valid, config)
    norm = (lambda t: t.lower()) if config.lowercase else (lambda t: t)
    words = build_index(([norm(t) for t in ex.tokens] for ex in train.examples), config.min_freq)
    singletons = singleton_ids(([norm(t) for t in ex.tokens] for ex in train.examples), words)
    chars = build_index((c for t in ex.tokens for c in t) for ex in train.examples)
    tags = build_index((ex.label for ex in train.examples), specials=())
    model_config = dataclasses.replace(config.model, vocab_size=len(words), num_chars=len(chars),
                                       num_tags=len(tags))
    try:
        model = SequenceTagger(model_config, tags)
    except ValueError as e:
        raise UserError(str(e)) from None
    if config.embeddings:
        init_embedding(model.embedding, config.embeddings, words, log)
    tagger = Tagger(model, words, chars, tags, dataclasses.asdict(config))

    def encode(read: Read, path) -> list:
        return [(*tagger.encode(ex.tokens), y) for ex, y in zip(read.examples, encode_tags(read, tags, path))]

    train_items = encode(train, config.train)
    valid_items = evaluation_items(tagger, valid)  # gold tags as strings: a dev tag unseen in train is a miss
    unseen = Unseen.count((t for ex in valid.examples for t in ex.label), tags, "tag", "token")
    if unseen.counts:
        log(f"{config.valid}: {unseen}")

    def collate(items) -> dict:
        batch = tagger.collate([(w, c) for w, c, _ in items])  # fit moves it to the device
        batch = batch._replace(words=replace_singletons(batch.words, singletons, config.unk_replace))
        return {**batch._asdict(), "tags": pad([y for _, _, y in items])[0]}

    def score(model, items) -> dict:
        report = evaluate_items(tagger, items)
        metric = report.f1 if report.f1 is not None else report.accuracy
        return {"metric": metric, "val_loss": report.loss, "f1": report.f1, "token_accuracy": report.accuracy}

    meta = {"model": dataclasses.asdict(model_config), "words": words, "chars": chars, "tags": tags}
    # The CRF's loss is a mean over sentences, softmax's over tokens: what several processes weigh their losses by.
    loss_terms = len if config.model.crf else (lambda items: sum(len(w) for w, _, _ in items))
    return SupervisedTask("tag", config, model, train_items, [len(w) for w, _, _ in train_items], valid_items,
                          collate, score, meta, loss_terms)


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
    config = TrainTagConfig(**{k: v for k, v in tagger.config.items() if k != "model"})
    return evaluate_items(tagger, evaluation_items(tagger, read_tagged(path, config)), batch_size)


def load_tagger(run_dir, device: str = "cpu") -> Tagger:
    """The best model of a run folder (in eval mode, on `device`) with its vocabularies."""
    device = resolve_device(device)
    tensors, meta = load_run(run_dir)
    if "tags" not in meta or "words" not in meta:
        raise UserError(f"{run_dir} does not hold a tagger checkpoint (no tags or words)")
    model = SequenceTagger(TaggerConfig(**meta["model"]), meta["tags"])
    model.load_state_dict(tensors)
    model.to(device).eval()
    return Tagger(model, meta["words"], meta["chars"], meta["tags"], meta["trainer"])
