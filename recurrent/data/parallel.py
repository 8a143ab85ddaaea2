"""Parallel text for translation: sentence pairs, word or BPE vocabularies, and length-bucketed batches.

Key: B batch, S source length, T target length (with <s> or </s>), V vocabulary.

    pairs, report = read_parallel("train.de", "train.en", max_len=100)   # report: skipped empty, truncated
    src_vocab = TextCodec.train([s for s, _ in pairs], kind="bpe", vocab_size=8000, lowercase=True)
    ids = src_vocab.encode("Ein Mann fährt Fahrrad.")                     # [412, 87, ...] (no <s> / </s>)
    src_vocab.decode(ids)                                                 # "ein mann fährt fahrrad."

Tokenisation is the `tokenizers` library's (Hugging Face), so BPE is never written by hand. Each vocabulary is a
`tokenizers.Tokenizer` saved as one JSON string with the model. Words are marked with a leading "▁" (Metaspace, as
SentencePiece), so decoding puts the spaces back exactly where they were: the output is detokenised text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch
from torch import Tensor

from recurrent.errors import UserError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
KINDS = ("word", "bpe")


# --- reading files ------------------------------------------------------------------------------------------


def read_lines(path) -> list[str]:
    """The lines of a UTF-8 file, without their newlines. UserError naming the file if it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 (byte {e.start})") from None


@dataclass
class ReadReport:
    """What reading a parallel corpus dropped or cut, so the trainer can say so."""

    pairs: int = 0  # pairs kept
    empty: int = 0  # pairs skipped because the source or the target line is empty
    truncated: int = 0  # sentences (either side) cut to max_len tokens

    def __str__(self) -> str:
        return (f"{self.pairs} pairs; skipped {self.empty} with an empty line; "
                f"truncated {self.truncated} sentences to the maximum length")


def read_parallel(src_path, tgt_path) -> tuple[list[tuple[str, str]], ReadReport]:
    """Sentence pairs from two files read line by line. Pairs with an empty (or blank) side are skipped and
    counted. UserError if the files have different line counts, naming both."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise UserError(f"source and target differ in length: {src_path} has {len(src)} lines, "
                        f"{tgt_path} has {len(tgt)}")
    pairs = [(s, t) for s, t in zip(src, tgt) if s.strip() and t.strip()]
    return pairs, ReadReport(pairs=len(pairs), empty=len(src) - len(pairs))


# --- vocabularies -------------------------------------------------------------------------------------------


class TextCodec:
    """Text <-> token ids through a `tokenizers.Tokenizer`: word level or BPE, optional lowercasing and
    punctuation splitting. Ids 0..3 are <pad>, <unk>, <s>, </s> in every vocabulary."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, lines: Sequence[str], kind: str = "word", vocab_size: int = 0, min_freq: int = 1,
              lowercase: bool = False, split_punctuation: bool = False) -> TextCodec:
        """Learn a vocabulary from training lines. vocab_size 0 keeps every word (word) or means 8000 (bpe)."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if kind not in KINDS:
            raise UserError(f"vocabulary kind must be one of {KINDS}, got {kind!r}")
        limit = {"vocab_size": vocab_size} if vocab_size else {}
        if kind == "word":
            tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
            trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIALS), min_frequency=min_freq, **limit)
        else:
            tokenizer = Tokenizer(models.BPE(unk_token=UNK))
            trainer = trainers.BpeTrainer(special_tokens=list(SPECIALS), min_frequency=min_freq,
                                          vocab_size=vocab_size or 8000)
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase
                                                                           else []))
        # Metaspace marks each word start with "▁": decoding restores the original spacing (detokenisation)
        splitters = [pre_tokenizers.Metaspace()] + ([pre_tokenizers.Punctuation("isolated")] if split_punctuation
                                                     else [])
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(splitters)
        tokenizer.decoder = decoders.Metaspace()
        tokenizer.train_from_iterator(lines, trainer)
        return cls(tokenizer)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, lines: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(lines), add_special_tokens=False)]

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenised text; specials (and <unk>) are dropped."""
        return self.tokenizer.decode([int(i) for i in ids if int(i) >= len(SPECIALS)])

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str) -> TextCodec:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text))


def encode_pairs(pairs: Sequence[tuple[str, str]], src_codec: TextCodec, tgt_codec: TextCodec, max_len: int,
                 report: ReadReport | None = None) -> list[tuple[list[int], list[int]]]:
    """Token ids for each pair, each side cut to `max_len` tokens (counted in `report.truncated`)."""
    src = src_codec.encode_batch([s for s, _ in pairs])
    tgt = tgt_codec.encode_batch([t for _, t in pairs])
    out, truncated = [], 0
    for s, t in zip(src, tgt):
        truncated += (len(s) > max_len) + (len(t) > max_len)
        if s and t:  # a line of only unknown characters can still encode to nothing
            out.append((s[:max_len], t[:max_len]))
    if report is not None:
        report.truncated += truncated
        report.empty += len(src) - len(out)
        report.pairs = len(out)
    return out


# --- batches ------------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    src: Tensor  # (B, S) source ids, PAD past each length
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (B, T) <s> y_1 .. y_n, PAD after
    tgt_out: Tensor  # (B, T) y_1 .. y_n </s>, PAD after (ignored by the loss)
    index: Tensor  # (B,) each pair's position in the list it came from


def pad(seqs: Sequence[Sequence[int]], value: int = PAD_ID) -> Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def collate(pairs: Sequence[tuple[list[int], list[int]]], index: Sequence[int]) -> Batch:
    src = [s for s, _ in pairs]
    return Batch(pad(src), torch.tensor([len(s) for s in src]), pad([[BOS_ID] + t for _, t in pairs]),
                 pad([t + [EOS_ID] for _, t in pairs]), torch.as_tensor(list(index)))


def bucket_batches(pairs: Sequence[tuple[list[int], list[int]]], batch_size: int, shuffle: bool = False,
                   generator: torch.Generator | None = None, pool: int = 50) -> Iterator[Batch]:
    """Batches of sentences of similar length, so little compute goes to padding.

    shuffle: draw a random order, sort each pool of `pool` batches by source length, cut it into batches and
    shuffle the batches (Ott et al.'s fairseq does much the same). Without shuffle: sorted by length, longest first.
    """
    n = len(pairs)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    batches, size = [], pool * batch_size if shuffle else max(n, 1)
    for start in range(0, n, size):
        chunk = sorted(order[start : start + size], key=lambda i: (-len(pairs[i][0]), -len(pairs[i][1])))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    for idx in batches:
        yield collate([pairs[i] for i in idx], idx)
