"""A trained translation model with its vocabularies: text in, text out.

    translator = load_translator("runs/de-en")
    translator.translate(["Ein Mann fährt Fahrrad."], beam_size=5)        # [Translation("A man rides a bike.", ...)]

Training is recurrent/train/translate.py's.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm import tqdm

from recurrent.data.parallel import PAD_ID, TextCodec, bucket_batches, encode_pairs
from recurrent.decoding import Hypothesis, beam_search, greedy_search
from recurrent.devices import model_device, to_device
from recurrent.errors import UserError
from recurrent.inference.common import BEST, load_best
from recurrent.models.seq2seq import Seq2Seq, Seq2SeqConfig


class Translation(NamedTuple):
    text: str  # detokenised output
    hypothesis: Hypothesis  # ids, score, attention (output step x source token)
    src_tokens: list[str]  # the source as the model saw it (after lowercasing, tokenisation, truncation)


@dataclass
class Translator:
    """A trained model with its vocabularies: text in, text out."""

    model: Seq2Seq
    src_codec: TextCodec
    tgt_codec: TextCodec
    max_len: int
    lowercase: bool = False  # trained on lowercased text: score case-insensitively
    truncated: int = 0  # source sentences cut to max_len so far

    def translate(self, lines: list[str], beam_size: int = 1, batch_size: int = 64, alpha: float = 1.0,
                  progress: bool = False) -> list[Translation]:
        """One Translation per line, in order. An empty line gives an empty translation. beam_size 1: greedy."""
        ids = self.src_codec.encode_batch(lines)
        self.truncated += sum(len(s) > self.max_len for s in ids)
        ids = [s[: self.max_len] for s in ids]
        order = sorted((i for i in range(len(ids)) if ids[i]), key=lambda i: -len(ids[i]))  # bucket by length
        results: list[Translation | None] = [None] * len(ids)
        bar = tqdm(total=len(order), disable=not progress, desc="translate", unit="sent", file=sys.stderr)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            src = torch.nn.utils.rnn.pad_sequence([torch.tensor(ids[i]) for i in idx], batch_first=True,
                                                  padding_value=PAD_ID)  # (B, S)
            lengths = torch.tensor([len(ids[i]) for i in idx])
            src = src.to(model_device(self.model))  # (the lengths may stay on the CPU: the search moves them)
            if beam_size == 1:
                hyps = greedy_search(self.model, src, lengths, alpha=alpha)
            else:
                hyps = beam_search(self.model, src, lengths, beam_size, alpha=alpha)
            for i, h in zip(idx, hyps):
                results[i] = Translation(self.tgt_codec.decode(h.tokens), h, self._tokens(ids[i]))
            bar.update(len(idx))
        bar.close()
        empty = Hypothesis([], 0.0, 0.0, None)
        return [r if r is not None else Translation("", empty, []) for r in results]

    def _tokens(self, ids: list[int]) -> list[str]:
        return [self.src_codec.tokenizer.id_to_token(i) for i in ids]

    def target_tokens(self, ids: list[int]) -> list[str]:
        return [self.tgt_codec.tokenizer.id_to_token(i) for i in ids]

    def perplexity(self, src_lines: list[str], tgt_lines: list[str], batch_size: int = 128) -> float:
        """exp(nats per target token), teacher-forced on the references; empty pairs skipped."""
        pairs = [(s, t) for s, t in zip(src_lines, tgt_lines) if s.strip() and t.strip()]
        encoded = encode_pairs(pairs, self.src_codec, self.tgt_codec, self.max_len)
        if not encoded:
            raise UserError("no sentence pairs to score")
        return math.exp(evaluate_loss(self.model, encoded, batch_size))


def load_translator(run_dir, device: str = "cpu") -> Translator:
    """The best model of a run folder (in eval mode, on `device`) with its vocabularies, checked as load_best
    says."""
    model, meta = load_best(run_dir, "translate", lambda meta: Seq2Seq(Seq2SeqConfig(**meta["model"])), device)
    src, tgt = (_codec(meta, side, run_dir) for side in ("src", "tgt"))
    return Translator(model, src, tgt, meta["max_len"], meta["lowercase"])


def _codec(meta: dict, side: str, run_dir) -> TextCodec:
    """The `side` ("src" or "tgt") vocabulary of a checked meta, as large as the model's."""
    try:
        codec = TextCodec.from_json(meta[f"{side}_vocab"])
    except Exception as e:  # tokenizers raises a bare Exception for a malformed document
        raise UserError(f"{run_dir}/{BEST}.json: {side}_vocab is not a tokenizer: {str(e).splitlines()[0]}") from None
    if len(codec) != meta["model"][f"{side}_vocab_size"]:
        raise UserError(f"{run_dir}/{BEST}.json: {side}_vocab holds {len(codec)} tokens, but "
                        f"model.{side}_vocab_size is {meta['model'][f'{side}_vocab_size']}")
    return codec


@torch.no_grad()
def evaluate_loss(model: Seq2Seq, pairs, batch_size: int = 128) -> float:
    """Mean cross-entropy in nats per target token (</s> included, padding excluded), teacher-forced, no dropout,
    on the model's device."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in bucket_batches(pairs, batch_size):
        batch = to_device(batch, model_device(model))
        out = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
        n = int((batch.tgt_out != PAD_ID).sum())
        total, count = total + out.loss.item() * n, count + n
    model.train(was_training)
    return total / count
