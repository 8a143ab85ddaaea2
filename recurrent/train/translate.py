"""Train an encoder-decoder translation model on parallel text, or on a synthetic task; recurrent/inference/
translate.py loads and runs it.

Key: B batch, S source length, T target length, V vocabulary.

    run_dir = train_translate(TrainTranslateConfig(src="train.de", tgt="train.en", valid_src="val.de",
                                                   valid_tgt="val.en", training=translate_training(out="runs/de-en")))
    translator = load_translator(run_dir)                                 # recurrent.inference.translate
    translator.translate(["Ein Mann fährt Fahrrad."], beam_size=5)        # ["A man rides a bike."]

The run folder is the training loop's (recurrent/train/loop.py); model.json holds the model config, both
vocabularies (the tokenizers' JSON) and metrics.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from recurrent.data.parallel import (KINDS, PAD_ID, Batch, ReadReport, TextCodec, bucket_batches, encode_pairs,
                                     read_parallel)
from recurrent.errors import UserError
from recurrent.inference.translate import evaluate_loss
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig
from recurrent.tasks.synthetic import TASKS, SyntheticTask
from recurrent.train import distributed
from recurrent.train.loop import TrainConfig, train
from recurrent.validation import at_least, between, check, fraction, probability


@dataclass
class TrainTranslateConfig:
    # data: parallel files, or a synthetic task
    src: str | None = None  # training source file, one sentence per line
    tgt: str | None = None  # training target file, line-aligned with src
    valid_src: str | None = None
    valid_tgt: str | None = None
    # (`synthetic`, not `task`: config.json's "task" names what was trained, "translate"; the CLI flag is --task)
    synthetic: str | None = field(default=None, metadata={"help": f"a synthetic task instead of files: {TASKS}",
                                                          "choices": TASKS})
    task_symbols: int = field(default=10, metadata=between(2, 1000))  # synthetic: alphabet size
    task_min_len: int = field(default=1, metadata=at_least(1))  # synthetic: lengths uniform in min..max (trained
    task_max_len: int = field(default=8, metadata=at_least(1))  # on one length, a model fails on the others)
    task_size: int = field(default=10000, metadata=at_least(1))  # synthetic: training pairs (valid: a tenth, at
    #                                                              least 100)
    # vocabularies and preprocessing
    vocab: str = field(default="word", metadata={"help": f"vocabulary kind: one of {KINDS}", "choices": KINDS})
    src_vocab_size: int = field(default=0, metadata=at_least(0))  # word: keep at most this many (0: all); bpe:
    #                                                               merges up to this size (0: 8000)
    tgt_vocab_size: int = field(default=0, metadata=at_least(0))
    min_freq: int = field(default=1, metadata=at_least(1))  # drop rarer words (word) / pairs (bpe)
    lowercase: bool = False
    split_punctuation: bool = False  # tokenise: punctuation becomes its own token
    max_len: int = field(default=100, metadata=at_least(1))  # sentences are cut to this many tokens (counted)
    # optimisation
    batch_size: int = 64  # sentences per batch, bucketed by length
    teacher_forcing: float = field(default=1.0, metadata=probability())  # probability of feeding the true
    #                                                                      previous token (1: always)
    label_smoothing: float = field(default=0.0, metadata=fraction())  # of the training loss (Szegedy et al.
    #                                                                   2016); valid loss is plain
    eval_batch_size: int = 128
    training: TrainConfig = field(default_factory=lambda: translate_training())  # the loop's: optimizer, budgets
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)  # vocabulary sizes come from the data

    def validate(self) -> None:
        """UserError naming the first bad value: types and ranges (recurrent.validation), then the files or the
        synthetic task (one or the other), the model and the device."""
        check(self)
        files = [f"--{name.replace('_', '-')}" for name in ("src", "tgt", "valid_src", "valid_tgt")
                 if getattr(self, name) is not None]
        if self.synthetic is not None and files:
            raise UserError(f"--task {self.synthetic} makes its own data: {' and '.join(files)} cannot apply (give "
                            f"one or the other)")
        if self.synthetic is None and len(files) < 4:
            raise UserError("give --src, --tgt, --valid-src and --valid-tgt, or a synthetic --task")
        try:
            dataclasses.replace(self.model, src_vocab_size=1, tgt_vocab_size=1).validate()
        except ValueError as e:
            raise UserError(str(e)) from None
        self.training.validate()


# --- data ---------------------------------------------------------------------------------------------------


def read_data(config: TrainTranslateConfig):
    """(train pairs, valid pairs) of text, from the files or the synthetic task, with what reading dropped."""
    if config.synthetic is not None:
        try:
            task = SyntheticTask(config.synthetic, config.task_symbols, config.task_min_len, config.task_max_len)
        except ValueError as e:
            raise UserError(str(e)) from None
        generator = torch.Generator().manual_seed(config.training.seed)
        train = list(zip(*task.lines(config.task_size, generator)))
        valid = list(zip(*task.lines(max(100, config.task_size // 10), generator)))
        return train, valid, ReadReport(len(train)), ReadReport(len(valid))
    train, train_report = read_parallel(config.src, config.tgt)
    valid, valid_report = read_parallel(config.valid_src, config.valid_tgt)
    for name, pairs in (("training", train), ("validation", valid)):
        if not pairs:
            raise UserError(f"the {name} files hold no sentence pairs")
    return train, valid, train_report, valid_report


def train_codecs(config: TrainTranslateConfig, train_pairs) -> tuple[TextCodec, TextCodec]:
    """Source and target vocabularies, learned from the training pairs only."""
    kind = "word" if config.synthetic else config.vocab
    options = dict(kind=kind, min_freq=config.min_freq, lowercase=config.lowercase,
                   split_punctuation=config.split_punctuation)
    return (TextCodec.train([s for s, _ in train_pairs], vocab_size=config.src_vocab_size, **options),
            TextCodec.train([t for _, t in train_pairs], vocab_size=config.tgt_vocab_size, **options))


# --- the task -------------------------------------------------------------------------------------------------


class StepOutput(NamedTuple):
    loss: Tensor  # what the step minimises: the label-smoothed loss when label_smoothing > 0


class TranslateTask:
    """Sentence pairs in length buckets, teacher-forced (or scheduled-sampling) training; the metric is the valid
    loss in nats per target token, whatever the label smoothing of training."""

    name, metric, higher_is_better, unit = "translate", "val_loss", False, "tok"

    def __init__(self, config: TrainTranslateConfig):
        self.config = config
        train_text, valid_text, train_report, valid_report = read_data(config)
        self.src_codec, self.tgt_codec = train_codecs(config, train_text)
        self.train = encode_pairs(train_text, self.src_codec, self.tgt_codec, config.max_len, train_report)
        self.valid = encode_pairs(valid_text, self.src_codec, self.tgt_codec, config.max_len, valid_report)
        print(f"train: {train_report}\nvalid: {valid_report}\nvocabularies: source {len(self.src_codec)}, "
              f"target {len(self.tgt_codec)} ({config.vocab if not config.synthetic else 'word'})", file=sys.stderr)
        if not self.train or not self.valid:
            raise UserError("no sentence pairs left after tokenisation")
        self.model_config = dataclasses.replace(config.model, src_vocab_size=len(self.src_codec),
                                                tgt_vocab_size=len(self.tgt_codec))
        self.model = Seq2Seq(self.model_config)

    def meta(self) -> dict:
        return {"model": asdict(self.model_config), "src_vocab": self.src_codec.to_json(),
                "tgt_vocab": self.tgt_codec.to_json(), "max_len": self.config.max_len,
                "lowercase": self.config.lowercase}

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.config.batch_size)

    def batches(self, epoch: int):
        """Length-bucketed batches, shuffled by a generator of this epoch's own (a resumed run sees the same ones).
        With several processes, this one's rows of each (recurrent/train/distributed.py), padded as the whole."""
        generator = torch.Generator().manual_seed(self.config.training.seed * 100_003 + epoch)
        world = distributed.world()
        for batch in bucket_batches(self.train, self.config.batch_size, shuffle=True, generator=generator):
            yield world.share(len(batch.index), lambda rows: Batch(*(field[rows] for field in batch)))

    def step(self, model: Seq2Seq, batch, carry):
        out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                    self.config.teacher_forcing)  # logits (B, T, V)
        if not self.config.label_smoothing:
            return out, None
        loss = F.cross_entropy(out.logits.flatten(0, 1).float(), batch.tgt_out.flatten(), ignore_index=PAD_ID,
                               label_smoothing=self.config.label_smoothing)
        return StepOutput(loss), None

    def count(self, batch) -> int:
        return int((batch.tgt_out != PAD_ID).sum())

    def weight(self, batch) -> int:
        return self.count(batch)  # the loss is a mean over the target tokens

    def evaluate(self, model: Seq2Seq) -> dict:
        return {"val_loss": evaluate_loss(model, self.valid, self.config.eval_batch_size)}


def translate_training(**changes) -> TrainConfig:
    """Translation's training defaults, with `changes`."""
    return TrainConfig(**{**dict(out="runs/translate", lr=1e-3, clip=1.0, epochs=10, eval_every=500), **changes})


def train_translate(config: TrainTranslateConfig) -> Path:
    """Train as `config` says (recurrent.train.loop does the training); return the run folder."""
    config.validate()
    return train(lambda resumed: TranslateTask(config), config.training, asdict(config))
