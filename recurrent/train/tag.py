"""Train a sequence tagger (one tag per token): NER, POS tagging, chunking. Loading, predicting and scoring a
saved tagger, and how tags are scored (IOB1 -> BIO, conlleval's chunking, tags training never saw), are
recurrent/inference/tag.py's.

    config = TrainTagConfig(train="eng.train", valid="eng.testa", training=supervised_training(out="runs/ner"),
                            model=TaggerConfig(crf=True, char_encoder="lstm"))
    run_dir = train_tag(config)                              # the task below, run by recurrent.train.loop

The dev metric for early stopping is entity F1 for BIO tags, token accuracy otherwise (POS).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from recurrent.data.buckets import pad
from recurrent.data.labelled import CONLLU_FIELDS, Read
from recurrent.embeddings import init_embedding
from recurrent.errors import UserError
from recurrent.inference.common import log, lookup
from recurrent.inference.tag import Tagger, evaluate_items, evaluation_items, read_tagged
from recurrent.models.tagger import SequenceTagger, TaggerConfig
from recurrent.train.loop import TrainConfig
from recurrent.train.supervised import (SupervisedConfig, SupervisedTask, build_index, fit, replace_singletons,
                                        singleton_ids, supervised_training)
from recurrent.unseen import Unseen

FORMATS = ("conll", "conllu")
SCHEMES = ("auto", "none")


@dataclass
class TrainTagConfig(SupervisedConfig):
    training: TrainConfig = dataclasses.field(default_factory=lambda: supervised_training(out="runs/tag"))
    format: str = dataclasses.field(default="conll", metadata={"help": f"one of {FORMATS}", "choices": FORMATS})
    column: int = -1  # conll: 0-based tag column (default: the last)
    field: str = dataclasses.field(  # named as the --field flag, so dataclasses.field is spelled out
        default="upos", metadata={"help": f"conllu: the tag field, one of {CONLLU_FIELDS}",
                                  "choices": CONLLU_FIELDS})
    scheme: str = dataclasses.field(default="auto", metadata={
        "help": "auto: IOB1 -> BIO when every tag is O/B-X/I-X; none", "choices": SCHEMES})
    model: TaggerConfig = dataclasses.field(default_factory=TaggerConfig)


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
    train, valid = read_tagged(config.train, dataclasses.asdict(config)), read_tagged(config.valid, dataclasses.asdict(config))
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
