"""Labelled text: sentences with one label (classification) or one tag per token (tagging).

    read_tabular("train.tsv")                        label<TAB>text, or any columns of a TSV/CSV file
    read_sst("sst/train.txt", binary=True)           Stanford Sentiment Treebank trees: root label (SST-2/SST-5)
    read_conll("eng.train", column=3)                CoNLL column files: one token per line, blank line between
    read_conllu("en_ewt-ud-train.conllu.gz", "upos") CoNLL-U, plain or gzipped

Every reader returns `Read(examples, skipped)`: the examples in file order, each remembering the line it starts
on, and how many empty sentences it skipped. Malformed input is a UserError naming `file:line`.
CoNLL-2003 tags are IOB1; `to_bio` turns them into the IOB2 (BIO) scheme that seqeval expects.
"""
from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path
from typing import NamedTuple

from recurrent.errors import UserError

MAX_FIELD = 2**31 - 1  # characters in one TSV/CSV field: a whole document fits


class Example(NamedTuple):
    tokens: list[str]
    label: str | list[str]  # a class label, or one tag per token
    line: int  # 1-based line where the example starts, for error messages
    tree: Tree | None = None  # SST: the parse tree (or phrase) the example was read from


class Read(NamedTuple):
    examples: list[Example]
    skipped: int  # empty sentences left out


def _open(path):
    """Text lines of a plain or .gz file, as UTF-8, with a clear error for a missing or non-UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file or directory")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8: {e}") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read: {e}") from None


# --- TSV / CSV ----------------------------------------------------------------------------------------------


def read_tabular(path, text_col: str | int = 1, label_col: str | int = 0, header: bool = False,
                 delimiter: str | None = None) -> Read:
    """One example per row. Columns are 0-based indices, or names from the header row (then header=True).
    The delimiter is "," for a .csv file and a tab otherwise; CSV quoting is honoured. Every row must have as
    many columns as the first. The text is split on whitespace."""
    path = Path(path)
    delimiter = delimiter or ("," if path.name.endswith((".csv", ".csv.gz")) else "\t")
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))  # the csv module's default is 131,072 characters
    reader = csv.reader(_open(path), delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE)
    try:
        numbered = [(reader.line_num, row) for row in reader if row and any(c.strip() for c in row)]
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: cannot read this row: {e}") from None
    if not numbered:
        raise UserError(f"{path} is empty")
    names = None
    if header:
        names = [n.strip() for n in numbered[0][1]]
    width = len(numbered[0][1])
    text_i, label_i = _column(text_col, names, width, path), _column(label_col, names, width, path)
    examples, skipped = [], 0
    for line, row in numbered[1 if header else 0:]:
        if len(row) != width:
            raise UserError(f"{path}:{line}: expected {width} columns, got {len(row)}")
        tokens, label = row[text_i].split(), row[label_i].strip()
        if not tokens:
            skipped += 1
            continue
        if not label:
            raise UserError(f"{path}:{line}: empty label in column {label_i}")
        examples.append(Example(tokens, label, line))
    return Read(examples, skipped)


def _column(col: str | int, names: list[str] | None, width: int, path: Path) -> int:
    col = str(col)
    if re.fullmatch(r"-?\d+", col):
        i = int(col)
        if not -width <= i < width:
            raise UserError(f"{path}: column {i} does not exist: rows have {width} columns (0-based)")
        return i % width
    if names is None:
        raise UserError(f"{path}: column {col!r} is a name, which needs --header (or give a 0-based index)")
    if col not in names:
        raise UserError(f"{path}: no column named {col!r}; the header has {names}")
    return names.index(col)


# --- SST trees ----------------------------------------------------------------------------------------------

SST2 = {"0": "negative", "1": "negative", "3": "positive", "4": "positive"}  # "2" (neutral) is dropped


class Tree(NamedTuple):
    label: str
    children: list  # Trees, or a single leaf word (str)

    def leaves(self) -> list[str]:
        return [w for c in self.children for w in ([c] if isinstance(c, str) else c.leaves())]

    def subtrees(self):
        yield self
        for c in self.children:
            if isinstance(c, Tree):
                yield from c.subtrees()


def parse_tree(text: str, where: str = "<string>") -> Tree:
    """A PTB-bracketed tree such as `(3 (2 The) (4 (2 film) (4 rocks)))`; UserError naming `where` if malformed."""
    tokens = re.findall(r"\(|\)|[^\s()]+", text)
    stack: list[list] = []  # open nodes: [label, children]
    root = None
    for i, tok in enumerate(tokens):
        if tok == "(":
            if root is not None:
                raise UserError(f"{where}: text after the tree's closing parenthesis")
            if i + 1 >= len(tokens) or tokens[i + 1] in "()":
                raise UserError(f"{where}: a node must start with a label, as in (3 word)")
            stack.append([None, []])
        elif tok == ")":
            if not stack:
                raise UserError(f"{where}: unbalanced parentheses: a ')' closes nothing")
            label, children = stack.pop()
            if not children:
                raise UserError(f"{where}: node ({label}) has no children")
            node = Tree(label, children)
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        elif not stack:
            raise UserError(f"{where}: word {tok!r} outside any parenthesis")
        elif stack[-1][0] is None:
            stack[-1][0] = tok
        else:
            stack[-1][1].append(tok)
    if stack:
        raise UserError(f"{where}: unbalanced parentheses: {len(stack)} '(' never closed")
    if root is None:
        raise UserError(f"{where}: no tree")
    return root


def read_sst(path, binary: bool = False, phrases: bool = False) -> Read:
    """One tree per line; the example is the root's label. binary=True gives SST-2: labels 0-1 "negative",
    3-4 "positive", neutral (2) dropped (not counted as skipped). phrases=True adds every phrase below the
    root as an extra example (for training only)."""
    examples, skipped = [], 0
    for line, text in enumerate(_open(path), start=1):
        if not text.strip():
            continue
        tree = parse_tree(text, f"{path}:{line}")
        for node in (tree.subtrees() if phrases else [tree]):
            label = SST2.get(node.label) if binary else node.label
            if label is not None:
                examples.append(Example(node.leaves(), label, line, node))
    if not examples:
        raise UserError(f"{path} holds no trees")
    return Read(examples, skipped)


# --- CoNLL column files -------------------------------------------------------------------------------------


def read_conll(path, column: int = -1, token_column: int = 0) -> Read:
    """Whitespace-separated columns, one token per line; a blank line ends a sentence; -DOCSTART- lines are
    document breaks. `column` is the 0-based tag column (default: the last). Every token line must have as many
    columns as the first."""
    examples, width, skipped = [], None, 0
    tokens, tags, start = [], [], 1
    for line, text in enumerate(_open(path) + [""], start=1):
        cols = text.split()
        if not cols or cols[0] == "-DOCSTART-":
            if tokens:
                examples.append(Example(tokens, tags, start))
            tokens, tags = [], []
            continue
        if width is None:
            width = len(cols)
            if not -width <= column < width or not -width <= token_column < width:
                raise UserError(f"{path}:{line}: column {column} does not exist: lines have {width} columns")
        if len(cols) != width:
            raise UserError(f"{path}:{line}: expected {width} columns, got {len(cols)}")
        if not tokens:
            start = line
        tokens.append(cols[token_column])
        tags.append(cols[column])
    if not examples:
        raise UserError(f"{path} holds no sentences")
    return Read(examples, skipped)


CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conllu(path, field: str = "upos") -> Read:
    """CoNLL-U (plain or .gz): 10 tab-separated fields per word line, `#` comments, a blank line after each
    sentence. Multiword-token ranges ("1-2") and empty nodes ("1.1") are skipped, so tokens are syntactic
    words. A sentence with no word lines is skipped and counted."""
    if field not in CONLLU_FIELDS:
        raise UserError(f"field must be one of {CONLLU_FIELDS}, got {field!r}")
    k = CONLLU_FIELDS.index(field)
    examples, skipped = [], 0
    tokens, tags, start, open_sentence = [], [], 1, False
    for line, text in enumerate(_open(path) + [""], start=1):
        if not text.strip():
            if tokens:
                examples.append(Example(tokens, tags, start))
            elif open_sentence:
                skipped += 1
            tokens, tags, open_sentence = [], [], False
            continue
        if not open_sentence:
            start, open_sentence = line, True
        if text.startswith("#"):
            continue
        cols = text.split("\t")
        if len(cols) != 10:
            raise UserError(f"{path}:{line}: expected 10 tab-separated columns, got {len(cols)}")
        if "-" in cols[0] or "." in cols[0]:
            continue
        tokens.append(cols[1])
        tags.append(cols[k])
    if not examples:
        raise UserError(f"{path} holds no sentences")
    return Read(examples, skipped)


# --- tag schemes --------------------------------------------------------------------------------------------


def is_iob(tags) -> bool:
    """Every tag is O, B-X or I-X."""
    return all(t == "O" or (len(t) > 2 and t[:2] in ("B-", "I-")) for t in tags)


def to_bio(tags: list[str]) -> list[str]:
    """IOB1 -> IOB2 (BIO). In IOB1 (CoNLL-2003), I-X starts a chunk unless the previous tag is of type X, and
    B-X only separates two adjacent chunks of type X. In BIO every chunk starts with B-X. So an I-X whose
    previous tag is O, another type, or nothing (sentence start) becomes B-X. BIO input is returned unchanged."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (i == 0 or tags[i - 1] == "O" or tags[i - 1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out
