"""A language-model corpus read in pieces, so that memory does not grow with its size.

`load_corpus` (recurrent/data/text.py) returns the text of each split as one str; this module gives the same splits
as spans of text read chunk by chunk, never held whole. The vocabulary is counted in one streaming pass, and the ids
are encoded chunk by chunk into a compact array (uint8, int16 or int32, the smallest that holds the vocabulary) in
an unlinked temporary file, memory-mapped: the OS pages in the windows a batch reads, nothing else.

    corpus = stream_corpus(data="input.txt")              # the splits of load_corpus(data="input.txt"), as spans
    vocab = corpus.build_vocab("char")                    # == Vocab.build(train + valid, "char")
    ids = encode_span(corpus.train, vocab)                # (N,) uint8 over a memory map == vocab.encode(train)
    streams = batchify(ids, batch_size=32)                # (B, L): a view; bptt_batches gives int64 windows

Every result equals the in-memory path's: "".join(span.chunks()) is that split's str, and so the vocabulary, the
ids and the split point are the same (tests/data/test_corpus_stream.py checks this on chunk boundaries that cut a
UTF-8 character, a "\\r\\n" and a word in two).
"""
from __future__ import annotations

import codecs
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recurrent.data.stdlib import stdlib_text
from recurrent.data.text import EOS, LEVELS, Vocab, _is_hidden
from recurrent.errors import UserError

CHUNK_BYTES = 1 << 18  # read files 256 KiB at a time (str sources 256 Ki characters at a time): a chunk's
#                        encoding needs about 40 bytes a character for a moment (char_ids' int64 arrays)


# --- text in pieces -----------------------------------------------------------------------------------------


def text_chunks(path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """read_text(path) in pieces: "".join(text_chunks(path)) == read_text(path), with the same UserErrors (a
    missing path, an empty file or directory, bytes that are not UTF-8: their offset and line)."""
    files = _files(Path(path))
    last = ""  # the last character given so far
    for i, file in enumerate(files):
        if i > 0 and last != "\n":
            yield "\n"  # each file starts on a new line
            last = "\n"
        for piece in _file_chunks(file, chunk_bytes):
            if piece:
                yield piece
                last = piece[-1]


def _files(path: Path) -> list[Path]:
    """The files read_text reads, in its order; its errors for a missing path or an empty directory."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _is_hidden(p.relative_to(path)))
    if not files:
        raise UserError(f"{path} is empty: a directory with no files")
    return files


def _file_chunks(path: Path, chunk_bytes: int) -> Iterator[str]:
    """One file's text, as text.decode gives it (byte-order mark dropped, "\\r\\n" and "\\r" as "\\n"), in pieces.
    A UTF-8 character cut by a chunk boundary waits in the decoder, a "\\r" at a piece's end for the next piece."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = newlines = 0  # bytes read before this chunk, and the b"\n" among them
    started, cr = False, ""  # past the byte-order mark; a "\r" held back
    with open(path, "rb") as f:
        while True:
            raw = f.read(chunk_bytes)
            final = not raw
            if final and offset == 0:
                raise UserError(f"{path} is empty")
            try:
                text = decoder.decode(raw, final)
            except UnicodeDecodeError as e:  # e.object: the bytes the decoder held back, then raw
                at = offset - (len(e.object) - len(raw)) + e.start
                line = newlines + e.object.count(b"\n", 0, e.start) + 1  # held-back bytes are never b"\n"
                raise UserError(f"{path} is not UTF-8: invalid byte 0x{e.object[e.start]:02x} at offset {at} "
                                f"(line {line})") from None
            offset, newlines = offset + len(raw), newlines + raw.count(b"\n")
            if text and not started:
                text, started = text.removeprefix("\ufeff"), True
            text, cr = cr + text, ""
            if text.endswith("\r") and not final:
                text, cr = text[:-1], "\r"  # it may be the first half of a "\r\n"
            yield text.replace("\r\n", "\n").replace("\r", "\n")
            if final:
                return


def _string_chunks(text: str, size: int = CHUNK_BYTES) -> Iterator[str]:
    return (text[i : i + size] for i in range(0, len(text), size))


@dataclass(frozen=True)
class Span:
    """The characters [start, stop) of a text that `read()` gives in pieces (stop None: to its end)."""

    read: Callable[[], Iterator[str]]
    name: str  # for messages: the file, or what the text is
    start: int = 0
    stop: int | None = None

    def chunks(self) -> Iterator[str]:
        offset = 0  # of the piece in the whole text
        for piece in self.read():
            if self.stop is not None and offset >= self.stop:
                return
            lo = max(self.start - offset, 0)
            hi = len(piece) if self.stop is None else min(self.stop - offset, len(piece))
            if lo < hi:
                yield piece[lo:hi]
            offset += len(piece)


def _file_span(path, chunk_bytes: int) -> Span:
    _files(Path(path))  # a missing path or an empty directory fails now, as read_text would
    return Span(lambda: text_chunks(path, chunk_bytes), str(path))


# --- a corpus: train, valid and test spans ------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusStream:
    """load_corpus's Corpus, each split a Span. `whole` is the text that train and valid split, when they come
    from one (`data`): a pass over it reads both at once."""

    train: Span
    valid: Span
    test: Span | None = None
    whole: Span | None = None

    def build_vocab(self, level: str, max_size: int | None = None, min_freq: int = 1) -> Vocab:
        """recurrent.train.lm's rule, in one streaming pass: word level from train only (PTB), char level from all
        the text (nanoGPT)."""
        if level not in LEVELS:
            raise UserError(f"vocabulary level must be one of {LEVELS}, got {level!r}")
        if level == "word":
            spans = [self.train]
        else:
            spans = [self.whole] if self.whole else [s for s in (self.train, self.valid, self.test) if s]
        counts = Counter()
        for span in spans:
            for tokens in _tokens(span.chunks(), level):
                counts.update(tokens if level == "word" else _char_counts(tokens))
        return Vocab.from_counts(counts, level, max_size, min_freq)


def _char_counts(text: str) -> dict[str, int]:
    """Counter(text), counted by numpy: 10x quicker on a large text."""
    counts = np.bincount(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))  # (max code point + 1,)
    return {chr(c): int(counts[c]) for c in np.flatnonzero(counts)}


def stream_corpus(data=None, train=None, valid=None, test=None, valid_fraction: float = 0.1,
                  chunk_bytes: int = CHUNK_BYTES) -> CorpusStream:
    """load_corpus(data, train, valid, test, valid_fraction), with its errors, as spans. With `data`, two passes
    find the split: one counts the characters, one reads on to the first line start after the cut."""
    if data is None and all(f is None for f in (train, valid, test)):  # the embedded default
        text = stdlib_text()
        whole = Span(lambda: _string_chunks(text, chunk_bytes), "the Python standard library")
    elif data is not None:
        if any(f is not None for f in (train, valid, test)):
            raise UserError("give either data (split into train and valid) or train/valid/test files, not both")
        whole = _file_span(data, chunk_bytes)
    else:
        if train is None or valid is None:
            missing = " and ".join(name for name, f in (("train", train), ("valid", valid)) if f is None)
            raise UserError(f"no {missing} file: give data (split into train and valid), or train and valid files")
        return CorpusStream(*(None if f is None else _file_span(f, chunk_bytes) for f in (train, valid, test)))
    if not 0.0 < valid_fraction < 1.0:
        raise UserError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}")
    n = sum(len(piece) for piece in whole.read())
    cut = split_point(whole, n, valid_fraction)
    if not 0 < cut < n:
        raise UserError(f"{whole.name}: {n} characters are too few to split off a valid_fraction of {valid_fraction}")
    return CorpusStream(Span(whole.read, whole.name, 0, cut), Span(whole.read, whole.name, cut), whole=whole)


def split_point(span: Span, n: int, valid_fraction: float) -> int:
    """text._split_point on a text of n characters read in pieces: the first line start at or after the last
    valid_fraction, else the cut itself."""
    cut = int(n * (1.0 - valid_fraction))
    if cut == 0:
        return cut
    offset = 0
    for piece in span.read():
        end = offset + len(piece)
        if end >= cut:  # the piece holds character cut - 1, or comes after it
            if offset <= cut - 1 < end and piece[cut - 1 - offset] == "\n":
                return cut  # already at a line start
            i = piece.find("\n", max(cut - offset, 0))
            if i != -1:
                newline = offset + i
                return cut if newline + 1 == n else newline + 1  # no line starts later: cut inside the last line
        offset = end
    return cut


# --- tokens and ids -----------------------------------------------------------------------------------------


def _tokens(pieces: Iterator[str], level: str) -> Iterator:
    """Each piece's tokens: its characters (a str), or (word level) a list of words."""
    return pieces if level == "char" else word_chunks(pieces)


def word_chunks(pieces: Iterator[str]) -> Iterator[list[str]]:
    """text._words of the whole text, in lists: each line's words, then "<eos>". A word cut by a piece boundary
    waits for the next piece; a final newline adds no empty line (and an empty text is one empty line)."""
    carry, last = "", ""  # the start of a word the piece boundary cut; the text's last character so far
    for piece in pieces:
        if not piece:
            continue
        lines = (carry + piece).split("\n")  # the last is unfinished: its line goes on in the next piece
        words = [w for line in lines[:-1] for w in (*line.split(), EOS)]
        tail = lines[-1].split()
        carry = tail.pop() if tail and not lines[-1][-1].isspace() else ""
        yield words + tail
        last = piece[-1]
    if last != "\n":
        yield [*carry.split(), EOS]


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest dtype torch indexes with that holds every id."""
    for dtype in (np.uint8, np.int16, np.int32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise UserError(f"a vocabulary of {vocab_size} tokens is too large")


def encode_span(span: Span, vocab: Vocab) -> Tensor:
    """vocab.encode of the span's text, chunk by chunk, into an unlinked temporary file, memory-mapped: (N,) of
    id_dtype(len(vocab)). A character outside a char vocabulary without "<unk>" is the same UserError as encode's,
    positions counted from the span's start."""
    dtype = id_dtype(len(vocab))
    n, unknown = 0, None  # ids written; the first unknown character (char, position, line) and how many
    with tempfile.TemporaryFile(prefix="recurrent-ids-") as f:  # gone from the disk once closed, or at exit
        lines = 0
        for tokens in _tokens(span.chunks(), vocab.level):
            if vocab.level == "word":
                ids = np.array([vocab.stoi.get(w, vocab.unk_index) for w in tokens], dtype=dtype)
            else:
                ids, missing = vocab.char_ids(tokens)
                if len(missing):
                    if unknown is None:
                        pos = int(missing[0])
                        unknown = [tokens[pos], n + pos, lines + tokens.count("\n", 0, pos) + 1, 0]
                    unknown[3] += len(missing)
                lines += tokens.count("\n")
            f.write(ids.astype(dtype, copy=False))  # the array's bytes
            n += len(ids)
        if unknown is not None:
            raise UserError(vocab.unknown_char_message(*unknown))
        if n == 0:
            return torch.zeros(0, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
        f.flush()
        ids = np.memmap(f, dtype=dtype, mode="c", shape=(n,))  # copy-on-write: private, and writable for torch
    return torch.from_numpy(ids)  # the map outlives the file's handle
