"""Train a recurrent language model with truncated BPTT (Zaremba et al. 2014; Merity et al. 2018).

Key: N tokens, B batch (parallel streams), t window length (<= bptt), V vocab.

    config = TrainLMConfig(data="input.txt", training=lm_training(out="runs/shakespeare", max_time=600),
                           model=LMConfig(hidden_size=256))
    run_dir = train_lm(config)                                  # the task below, run by recurrent.train.loop
    lm = load_lm(run_dir)                                       # recurrent/inference/lm.py: LM(model, vocab)
    print(lm.evaluate(read_text("test.txt")))                   # bits/char 1.912

The corpus is cut into B streams read side by side (`batchify`); each step trains on the next window of every
stream, starting from the state the previous window left, detached so that gradients span one window.

The run folder is the loop's (recurrent/train/loop.py): config.json (this TrainLMConfig), model.* (the best model,
lowest valid loss, with its config and vocabulary), last.* (everything --resume needs, the carried hidden state
included), metrics.jsonl and loss.png.
"""
from __future__ import annotations

import codecs
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from recurrent.data import Vocab, batchify, bptt_batches, num_bptt_batches
from recurrent.data.corpus_stream import encode_span, stream_corpus
from recurrent.data.text import LEVELS
from recurrent.errors import UserError
from recurrent.inference.lm import evaluate_loss
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.train import distributed
from recurrent.train.loop import TrainConfig, train
from recurrent.validation import at_least, check


def lm_training(**changes) -> TrainConfig:
    """The language model's training defaults (a char model in a few minutes on a CPU), with `changes`."""
    return TrainConfig(**{**dict(out="runs/lm", lr=2e-3, clip=1.0, epochs=10, eval_every=500), **changes})


@dataclass
class TrainLMConfig:
    # data
    data: str | None = None  # a text file or directory; its last 10% becomes valid
    train: str | None = None  # or explicit train / valid (/ test) files
    valid: str | None = None
    test: str | None = None
    level: str = field(default="char", metadata={"help": f"tokens: one of {LEVELS}", "choices": LEVELS})
    vocab_size: int = field(default=0, metadata=at_least(0))  # keep at most this many tokens, specials included
    #                                                           (0: all)
    min_freq: int = field(default=1, metadata=at_least(1))  # drop tokens seen fewer times
    # batches
    batch_size: int = 32  # B parallel streams
    bptt: int = field(default=64, metadata=at_least(1))  # window length: gradients flow back at most this many
    #                                                      tokens
    random_bptt: bool = False  # AWD-LSTM's variable window lengths, around bptt
    reset_at: str | None = field(default=None, metadata={"help": "a token that starts each document (<eos> at "
                                 "word level; at char level one character, escapes such as \\n read): every "
                                 "stream's state restarts before it, so documents do not leak into one another"})
    eval_batch_size: int = 10
    # conditional generation (recurrent/train/conditional.py): one sentence per line, batch_size sentences a batch
    condition: str | None = field(default=None, metadata={"help": "label (lines label<TAB>text), a feature file "
                                  "(.npy or CSV: a row per line), or none (sentences, no condition: the baseline)"})
    valid_condition: str | None = field(default=None, metadata={"help": "with a feature file as --condition: the "
                                        "valid lines' features"})
    training: TrainConfig = field(default_factory=lm_training)  # the loop's: optimizer, budgets, checkpoints, ...
    model: LMConfig = field(default_factory=LMConfig)  # vocab_size is taken from the data

    def validate(self) -> None:
        """UserError naming the first bad value: types and ranges (recurrent.validation), then the device."""
        check(self)
        if self.reset_at is not None and self.condition is not None:
            raise UserError("--reset-at is for streams of documents; a run with --condition reads one sentence at a "
                            "time, each from its own initial state already")
        self.training.validate()


# --- the task -----------------------------------------------------------------------------------------------


class LMTask:
    """Language modelling with truncated BPTT: B streams read side by side, the state carried from window to
    window (the loop detaches it: gradients span one window). Loss and metric: valid nats/token."""

    name, metric, higher_is_better, unit = "lm", "val_loss", False, "tok"

    def __init__(self, config: TrainLMConfig, resumed: dict | None):
        self.config = config
        # The corpus is read in pieces, never whole (recurrent/data/corpus_stream.py): one pass counts the
        # vocabulary, and each split's ids go to a memory-mapped file, so memory does not grow with the corpus.
        corpus = stream_corpus(config.data, config.train, config.valid, config.test)
        self.vocab = Vocab.from_dict(resumed["vocab"]) if resumed else corpus.build_vocab(
            config.level, max_size=config.vocab_size or None, min_freq=config.min_freq)
        self.model_config = dataclasses.replace(config.model, vocab_size=len(self.vocab),
                                                reset_id=_reset_id(config.reset_at, self.vocab))
        try:
            self.model = LanguageModel(self.model_config)
        except ValueError as e:
            raise UserError(str(e)) from None
        self.world = distributed.world()  # with several processes, each reads B/W of the streams
        if config.batch_size % self.world.size:
            raise UserError(f"batch_size {config.batch_size} must be divisible by the {self.world.size} processes: "
                            f"each reads batch_size / {self.world.size} of the streams")
        # (B, L): a view of the memory-mapped ids (uint8 for a char vocabulary); each window comes out as int64
        self.streams = batchify(encode_span(corpus.train, self.vocab), config.batch_size)
        self.valid_ids = encode_span(corpus.valid, self.vocab)  # (N,) memory-mapped too

    def meta(self) -> dict:
        return {"model": asdict(self.model_config), "vocab": self.vocab.to_dict()}

    def steps_per_epoch(self) -> int:
        return num_bptt_batches(self.streams, self.config.bptt)

    def batches(self, epoch: int):
        # The window lengths of an epoch come from their own seeded generator, so a resumed run can skip the
        # windows it has already trained on and see the same ones next.
        # With several processes, this one reads its rows of the streams: B/W streams, every window.
        lengths = torch.Generator().manual_seed(self.config.training.seed * 100_003 + epoch)
        streams = self.streams[self.world.rows(len(self.streams))]  # (B/W, L)
        return bptt_batches(streams, self.config.bptt, self.config.random_bptt, lengths)

    def step(self, model: LanguageModel, batch, state):
        x, y = batch  # (B, t) each
        out = model(x, state, targets=y)  # logits (B, t, V)
        return out, out.state

    def count(self, batch) -> int:
        return batch[1].numel()

    def weight(self, batch) -> int:
        return batch[1].numel()  # the loss is a mean over the tokens

    def evaluate(self, model: LanguageModel) -> dict:
        return {"val_loss": evaluate_loss(model, self.valid_ids, self.config.eval_batch_size, self.config.bptt)}


def _reset_id(token: str | None, vocab: Vocab) -> int:
    """--reset-at's token id (-1 without one); a UserError if the vocabulary does not hold it."""
    if token is None:
        return -1
    text = codecs.decode(token, "unicode_escape") if vocab.level == "char" else token  # "\\n" -> a newline
    if text not in vocab.stoi:
        raise UserError(f"--reset-at {token!r}: the training data's vocabulary has no such token")
    return vocab.stoi[text]


def train_lm(config: TrainLMConfig) -> Path:
    """Train as `config` says; return the run folder. Stops at `epochs`, the step/time budget, or on patience,
    and in each case evaluates, keeps the best checkpoint and returns normally."""
    config.validate()
    if config.condition is not None:  # one sentence per line, with its condition
        from recurrent.train.conditional import ConditionalTask

        return train(lambda resumed: ConditionalTask(config, resumed), config.training, asdict(config))
    return train(lambda resumed: LMTask(config, resumed), config.training, asdict(config))


def _build_vocab(corpus, config: TrainLMConfig) -> Vocab:
    """Word level: from train only (PTB). Char level: from all the text, as nanoGPT does (a character that only
    a later test file holds encodes as "<unk>"). For a Corpus in memory (the conditional task's sentences); LMTask
    counts its files in one streaming pass by the same rule (CorpusStream.build_vocab)."""
    text = corpus.train
    if config.level == "char":
        text += corpus.valid + (corpus.test or "")
    return Vocab.build(text, config.level, max_size=config.vocab_size or None, min_freq=config.min_freq)
