"""Text for language modelling: read files, split a corpus, and map tokens to ids with a vocabulary.

Two levels, as in the classic RNN language models:
    char  every character is a token (min-char-rnn, char-rnn, nanoGPT's shakespeare_char)
    word  PTB conventions (Mikolov 2010; Zaremba et al. 2014): each line is a sentence, its whitespace-separated
          words followed by "<eos>"; rare words are already "<unk>" in PTB, and any word outside the vocabulary
          becomes "<unk>"

    corpus = load_corpus(data="input.txt")                         # last 10% of the text is valid
    vocab = Vocab.build(corpus.train, level="char")
    ids = vocab.encode(corpus.train)                               # LongTensor (N,)
    vocab.decode(ids[:100].tolist())                               # -> str

These hold each split as one str, fine for a test file or a prime. `recurrent train lm` reads its corpus with
recurrent/data/corpus_stream.py instead: the same splits, vocabulary and ids, streamed in chunks into a
memory-mapped array, so its memory does not grow with the corpus.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from recurrent.data.stdlib import stdlib_text
from recurrent.errors import UserError
from recurrent.unseen import Unseen

UNK, EOS = "<unk>", "<eos>"
LEVELS = ("char", "word")


# --- reading files ------------------------------------------------------------------------------------------


def read_text(path) -> str:
    """The text of a UTF-8 file, or of every file under a directory.

    A directory is read recursively in sorted path order, skipping hidden files and folders (names starting
    with "."); each file starts on a new line (a "\\n" joins two files unless the first already ends with one).
    Newlines are normalised as `open()` does ("\\r\\n" and "\\r" become "\\n"), and a UTF-8 byte-order mark is
    dropped. Raises UserError, naming the file, if the path is missing, a file or the directory is empty, or a
    file is not UTF-8 (with the byte offset and line of the first bad byte).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_file():
        return _read_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _is_hidden(p.relative_to(path)))
    if not files:
        raise UserError(f"{path} is empty: a directory with no files")
    text = _read_file(files[0])
    for f in files[1:]:
        text += ("" if text.endswith("\n") else "\n") + _read_file(f)
    return text


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _read_file(path: Path) -> str:
    raw = path.read_bytes()
    if not raw:
        raise UserError(f"{path} is empty")
    return decode(raw, path)


def decode(raw: bytes, name) -> str:
    """UTF-8 bytes (a file's, or stdin's) -> text, newlines normalised and a byte-order mark dropped. UserError
    naming `name`, the first bad byte, its offset and its line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UserError(f"{name} is not UTF-8: invalid byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"(line {line})") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


# --- a corpus: train, valid and test text -------------------------------------------------------------------


@dataclass
class Corpus:
    train: str
    valid: str
    test: str | None = None  # only when a test file was given


def load_corpus(data=None, train=None, valid=None, test=None, valid_fraction: float = 0.1) -> Corpus:
    """Either `data` (a file or directory, split into train and valid) or explicit `train` and `valid` files
    (and optionally `test`). With none of them: the Python standard library's source (`stdlib_text`).

    With `data`, the last `valid_fraction` of the text becomes valid, as in nanoGPT. nanoGPT cuts at exactly
    that character; we move the cut forward to the next line start (when there is one), so no word or
    sentence is cut in two: the split is the same for char and word level, and valid begins with a whole line.
    """
    if data is None and all(f is None for f in (train, valid, test)):  # the embedded default
        data, text = "the Python standard library", stdlib_text()
    elif data is not None:
        if any(f is not None for f in (train, valid, test)):
            raise UserError("give either data (split into train and valid) or train/valid/test files, not both")
        text = read_text(data)
    if data is not None:
        if not 0.0 < valid_fraction < 1.0:
            raise UserError(f"valid_fraction must be in (0, 1), got {valid_fraction!r}")
        cut = _split_point(text, valid_fraction)
        if not 0 < cut < len(text):
            raise UserError(f"{data}: {len(text)} characters are too few to split off a valid_fraction of "
                            f"{valid_fraction}")
        return Corpus(train=text[:cut], valid=text[cut:])
    if train is None or valid is None:
        missing = " and ".join(name for name, f in (("train", train), ("valid", valid)) if f is None)
        raise UserError(f"no {missing} file: give data (split into train and valid), or train and valid files")
    return Corpus(train=read_text(train), valid=read_text(valid), test=None if test is None else read_text(test))


def _split_point(text: str, valid_fraction: float) -> int:
    """The character where valid starts: the first line start at or after the last `valid_fraction`."""
    cut = int(len(text) * (1.0 - valid_fraction))
    if cut == 0 or text[cut - 1] == "\n":
        return cut  # already at a line start
    newline = text.find("\n", cut)
    if newline == -1 or newline + 1 == len(text):
        return cut  # no line starts later: cut inside the last line, as nanoGPT does
    return newline + 1


# --- vocabulary ---------------------------------------------------------------------------------------------


class Vocab:
    """Token <-> id, for char or word level. `itos[i]` is the token of id i; `stoi` the inverse.

    Word level: itos = ["<unk>", "<eos>", then words by frequency (descending, ties by the word)]. Any word
    outside the vocabulary encodes as "<unk>" (id 0); decoding joins words with spaces and turns "<eos>" into
    a newline.

    Char level: itos = ["<unk>", then the distinct characters by frequency (descending, ties by the
    character)], as min-char-rnn and nanoGPT build it plus "<unk>": a real test set holds characters that
    training never saw (an "æ" in an English corpus), and they encode as "<unk>" (id 0) so that a model can
    score them instead of stopping. Pruning (`max_size`, `min_freq` > 1) sends the dropped characters there
    too. A char vocabulary saved before "<unk>" was added has none: encoding an unknown character with it is a
    UserError naming the character and its position.

    `max_size` counts every entry, "<unk>" and "<eos>" included (so PTB's canonical vocabulary is
    max_size=10000); `min_freq` drops tokens seen fewer times.
    """

    def __init__(self, itos: list[str], level: str):
        if level not in LEVELS:
            raise UserError(f"vocabulary level must be one of {LEVELS}, got {level!r}")
        if len(set(itos)) != len(itos):
            raise UserError("vocabulary has duplicate tokens")
        if level == "word" and (itos[:1] != [UNK] or EOS not in itos):
            raise UserError(f"a word vocabulary needs {UNK!r} at id 0 and {EOS!r}, got {itos[:3]} ...")
        self.itos, self.level = list(itos), level
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.unk_index = self.stoi.get(UNK)  # None for a char vocabulary without "<unk>"
        if level == "char":
            # code point -> id as two sorted arrays, for a vectorised lookup in encode
            chars = [(ord(s), i) for i, s in enumerate(self.itos) if len(s) == 1]
            if not chars:
                raise UserError("a char vocabulary needs at least one character")
            chars.sort()
            self._codepoints = np.array([c for c, _ in chars], dtype=np.int64)
            self._ids = np.array([i for _, i in chars], dtype=np.int64)

    @classmethod
    def build(cls, text: str, level: str, max_size: int | None = None, min_freq: int = 1) -> Vocab:
        if level not in LEVELS:
            raise UserError(f"vocabulary level must be one of {LEVELS}, got {level!r}")
        return cls.from_counts(Counter(text) if level == "char" else Counter(_words(text)), level, max_size, min_freq)

    @classmethod
    def from_counts(cls, counts: Counter, level: str, max_size: int | None = None, min_freq: int = 1) -> Vocab:
        """`build` from token counts already made (recurrent/data/corpus_stream.py counts a file in pieces)."""
        if level not in LEVELS:
            raise UserError(f"vocabulary level must be one of {LEVELS}, got {level!r}")
        if max_size is not None and max_size < 2:
            raise UserError(f"max_size must be at least 2 (\"<unk>\" and one token), got {max_size!r}")
        if min_freq < 1:
            raise UserError(f"min_freq must be at least 1, got {min_freq!r}")
        if not counts:
            raise UserError("cannot build a vocabulary from empty text")
        specials = [UNK, EOS] if level == "word" else [UNK]
        tokens = sorted((t for t, n in counts.items() if n >= min_freq and t not in specials),
                        key=lambda t: (-counts[t], t))
        if max_size is not None:
            tokens = tokens[: max_size - len(specials)]
        return cls(specials + tokens, level)

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and (self.level, self.itos) == (other.level, other.itos)

    def __repr__(self) -> str:
        return f"Vocab(level={self.level!r}, size={len(self)}, first={self.itos[:5]})"

    def tokenize(self, text: str) -> list[str]:
        """Characters, or (word level) each line's words followed by "<eos>". Tokens are not mapped to <unk>."""
        return list(text) if self.level == "char" else _words(text)

    def unseen(self, text: str) -> Unseen:
        """The tokens of `text` outside the vocabulary (the ones that encode as "<unk>"), counted. A literal
        "<unk>" in word-level text (PTB has them) is in the vocabulary, so it is not counted."""
        kind = "character" if self.level == "char" else "word"
        return Unseen.count(self.tokenize(text), self.stoi, kind, "place")

    def encode(self, text: str) -> Tensor:
        """LongTensor (N,) of ids."""
        if self.level == "word":
            unk, stoi = self.unk_index, self.stoi
            return torch.tensor([stoi.get(w, unk) for w in _words(text)], dtype=torch.long)
        ids, unknown = self.char_ids(text)
        if len(unknown):
            pos = int(unknown[0])
            raise UserError(self.unknown_char_message(text[pos], pos, text.count("\n", 0, pos) + 1, len(unknown)))
        return torch.from_numpy(ids)

    def char_ids(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Char level: (ids (N,) int64, the positions of characters this vocabulary lacks). They are "<unk>" when
        it has one, and then none are reported; without one their ids are meaningless."""
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)  # (N,)
        where = np.searchsorted(self._codepoints, codepoints).clip(max=len(self._codepoints) - 1)
        known = self._codepoints[where] == codepoints
        ids = self._ids[where]
        if known.all():
            return ids, np.zeros(0, dtype=np.int64)
        if self.unk_index is None:
            return ids, np.flatnonzero(~known)
        ids[~known] = self.unk_index
        return ids, np.zeros(0, dtype=np.int64)

    def unknown_char_message(self, char: str, pos: int, line: int, count: int) -> str:
        """The UserError for a char vocabulary without "<unk>": the first unknown character, where, and how many."""
        more = f" ({count - 1} more unknown characters follow)" if count > 1 else ""
        return (f"character {char!r} (U+{ord(char):04X}) at position {pos} (line {line}) is not in the "
                f"char vocabulary of {len(self)} characters, which has no {UNK!r}{more}: the vocabulary predates "
                f"unknown-character support (rebuild it, or leave such characters out)")

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of ids. Word level: words joined by spaces, "<eos>" as a newline."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        try:
            tokens = [self.itos[i] for i in ids]
        except (IndexError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or not 0 <= i < len(self))
            raise ValueError(f"ids must be ints in 0..{len(self) - 1}, got {bad!r}") from None
        if self.level == "char":
            return "".join(tokens)
        text, line = [], []
        for token in tokens:
            if token == EOS:
                text.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(token)
        return "".join(text) + " ".join(line)

    def to_dict(self) -> dict:
        """JSON-safe: {"level": ..., "itos": [...]}; stored in a checkpoint's meta."""
        return {"level": self.level, "itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if not isinstance(d, dict) or not isinstance(d.get("itos"), list) or "level" not in d:
            raise UserError(f"not a vocabulary: expected a dict with 'level' and 'itos', got {type(d).__name__}")
        return cls(d["itos"], d["level"])


def _words(text: str) -> list[str]:
    """PTB tokens: each line's whitespace-separated words, then "<eos>". A final newline adds no empty line."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [w for line in lines for w in (*line.split(), EOS)]
