"""A trained language model with its vocabulary, and scoring text with it.

    lm = load_lm("runs/shakespeare")                         # LM(model, vocab), in eval mode
    print(lm.evaluate(read_text("test.txt")))               # bits/char 1.912
    lm.model, lm.vocab                                      # the LanguageModel and its Vocab

Training is recurrent/train/lm.py's; generation (sampling, beam search) is `recurrent generate`'s
(recurrent/cli/generate.py, on recurrent.sampling and recurrent.decoding).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from recurrent.data import Vocab, batchify, bptt_batches
from recurrent.data.buckets import bucket_batches
from recurrent.data.sentences import collate
from recurrent.data.text import UNK
from recurrent.devices import model_device, to_device
from recurrent.errors import UserError
from recurrent.inference.common import load_best
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.unseen import Unseen


@dataclass
class LM:
    """A trained language model with its vocabulary: what evaluate, generate and the diagnostics need."""

    model: LanguageModel
    vocab: Vocab

    def evaluate(self, text: str, batch_size: int = 10, bptt: int = 64) -> LMScore:
        """evaluate_lm(self.model, self.vocab, text, ...): nats/token, bits/char, perplexity."""
        return evaluate_lm(self.model, self.vocab, text, batch_size, bptt)


@torch.no_grad()
def evaluate_loss(model: LanguageModel, ids: Tensor, batch_size: int = 10, bptt: int = 64,
                  bf16: bool = False) -> float:
    """Mean cross-entropy in nats/token over a whole token stream (N,), read as `batch_size` streams with the
    state carried from window to window, without dropout, on the model's device. Up to batch_size - 1 trailing
    tokens are not scored."""
    B = min(batch_size, ids.numel() // 2)
    if B < 1:
        raise UserError(f"{ids.numel()} tokens are too few to evaluate on: need at least 2")
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    device = model_device(model)
    for x, y in bptt_batches(batchify(ids, B).to(device), bptt):  # x, y (B, t)
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():  # (not enabled=False:
            out = model(x, state, targets=y)  # that would switch off an autocast the caller is in)
        total += out.loss.float().item() * y.numel()
        count += y.numel()
        state = out.state
    model.train(was_training)
    return total / count


class LMScore(NamedTuple):
    nats_per_token: float
    level: str  # char or word
    unseen: Unseen  # the characters or words that training never saw: scored as "<unk>", loss included

    @property
    def bits_per_token(self) -> float:
        return self.nats_per_token / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)

    def __str__(self) -> str:
        """"bits/char 1.912" at char level, "perplexity 114.2" at word level: each field's usual number."""
        if self.level == "char":
            return f"bits/char {self.bits_per_token:.3f}"
        return f"perplexity {self.perplexity:.1f}"


def evaluate_lm(model: LanguageModel, vocab: Vocab, text: str, batch_size: int = 10, bptt: int = 64) -> LMScore:
    """Score a text: nats/token, with bits/char (char level) and perplexity as properties.

    A character or word that training never saw reads as "<unk>", and the model's -log p(<unk>) at that place
    counts in the mean like any other target's (the usual convention: PTB's test set holds unknown words as
    "<unk>" already). `unseen` says how many there were."""
    unseen = count_unseen(vocab, text)
    return LMScore(evaluate_loss(model, vocab.encode(text), batch_size, bptt), vocab.level, unseen)


def count_unseen(vocab: Vocab, text: str, what: str = "the text") -> Unseen:
    """The tokens of `text` outside the vocabulary. A char vocabulary saved before char vocabularies had
    "<unk>" cannot read them: a UserError that says so and names them (`what` says whose they are)."""
    unseen = vocab.unseen(text)
    if unseen.counts and vocab.unk_index is None:
        raise UserError(f"{what} holds {unseen.summary()} that training never saw, and this run predates "
                        f"unknown-character support: its char vocabulary has no {UNK!r} to read them as "
                        f"(retrain the model, or leave those characters out)")
    return unseen


@torch.no_grad()
def sentence_loss(model: LanguageModel, items: list, batch_size: int) -> float:
    """Mean cross-entropy in nats per token (each sentence's closing sep included) over encoded sentences."""
    total, count = 0.0, 0
    for batch in bucket_batches([len(ids) for ids, _ in items], batch_size):
        x, y, c = to_device(collate([items[i] for i in batch]), model_device(model))
        n = int((y != -100).sum())
        total, count = total + model(x, targets=y, condition=c).loss.float().item() * n, count + n
    return total / count




def load_lm(run_dir, device: str = "cpu") -> LM:
    """The best model of a run folder (in eval mode, on `device`) with its vocabulary, checked as load_best says."""
    model, meta = load_best(run_dir, "lm", lambda meta: LanguageModel(LMConfig(**meta["model"])), device)
    return LM(model, Vocab.from_dict(meta["vocab"]))
