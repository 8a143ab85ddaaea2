"""Reading text, splitting a corpus, and the char and word vocabularies (PTB conventions).

Every test writes its own small files in tmp_path; the PTB test also reads the real files when present.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from recurrent.data import Corpus, Vocab, load_corpus, read_text
from recurrent.errors import UserError

PTB = Path("/work/shared/data/ptb")


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# --- read_text ----------------------------------------------------------------------------------------------


def test_read_text_file_is_exact_utf8(tmp_path):
    text = "héllo → 世界 🙂\nsecond line\n"
    assert read_text(write(tmp_path / "a.txt", text)) == text


def test_read_text_normalises_newlines_and_drops_bom(tmp_path):
    assert read_text(write(tmp_path / "a.txt", b"\xef\xbb\xbfone\r\ntwo\rthree\n")) == "one\ntwo\nthree\n"


def test_read_text_directory_recursive_sorted_hidden_skipped(tmp_path):
    write(tmp_path / "b.txt", "bee\n")
    write(tmp_path / "a" / "z.txt", "zed")  # no final newline: the next file still starts on a new line
    write(tmp_path / "a" / "y.txt", "why\n")
    write(tmp_path / ".hidden.txt", "never read")
    write(tmp_path / ".git" / "config", "never read")
    assert read_text(tmp_path) == "why\nzed\nbee\n"  # a/y.txt, a/z.txt, b.txt


def test_read_text_missing(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'nope.txt'}: no such file or directory")):
        read_text(tmp_path / "nope.txt")


def test_read_text_empty_file(tmp_path):
    path = write(tmp_path / "empty.txt", "")
    with pytest.raises(UserError, match=re.escape(f"{path} is empty")):
        read_text(path)


def test_read_text_empty_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'd'} is empty")):
        read_text(tmp_path / "d")


def test_read_text_invalid_utf8_names_byte_offset_and_line(tmp_path):
    good = "line one\nline twö\nthree "  # ö is 2 bytes: the offset counts bytes, not characters
    offset = len(good.encode())
    path = write(tmp_path / "bad.txt", good.encode() + b"\xff rest\n")
    with pytest.raises(UserError) as info:
        read_text(path)
    assert str(info.value) == f"{path} is not UTF-8: invalid byte 0xff at offset {offset} (line 3)"
    assert offset == 25 and "\n" not in str(info.value)


def test_read_text_invalid_utf8_in_directory_names_the_file(tmp_path):
    write(tmp_path / "a.txt", "fine\n")
    bad = write(tmp_path / "sub" / "b.txt", b"\xc3\x28")  # a lead byte without its continuation
    with pytest.raises(UserError, match=re.escape(f"{bad} is not UTF-8: invalid byte 0xc3 at offset 0 (line 1)")):
        read_text(tmp_path)


# --- load_corpus --------------------------------------------------------------------------------------------


def test_load_corpus_tail_split_at_next_line_start(tmp_path):
    text = "".join(f"line {i} " + "x" * (i % 7) + "\n" for i in range(40))
    corpus = load_corpus(data=write(tmp_path / "all.txt", text), valid_fraction=0.2)
    assert corpus.train + corpus.valid == text and corpus.test is None
    target = int(len(text) * 0.8)
    line_starts = [i for i in range(1, len(text)) if text[i - 1] == "\n"]
    assert len(corpus.train) == min(s for s in line_starts if s >= target)  # the first line start at or after


def test_load_corpus_single_line_splits_at_the_character(tmp_path):
    text = "abcdefghij" * 10  # no newline: nanoGPT's exact cut
    corpus = load_corpus(data=write(tmp_path / "all.txt", text), valid_fraction=0.1)
    assert (corpus.train, corpus.valid) == (text[:90], text[90:])


def test_load_corpus_explicit_files(tmp_path):
    paths = {k: write(tmp_path / f"{k}.txt", f"{k} text\n") for k in ("train", "valid", "test")}
    assert load_corpus(**paths) == Corpus("train text\n", "valid text\n", "test text\n")
    assert load_corpus(train=paths["train"], valid=paths["valid"]).test is None


@pytest.mark.parametrize("kwargs, message", [
    ({"train": "t.txt"}, "no valid file"),
    ({"data": "d.txt", "valid": "v.txt"}, "not both"),
    ({"data": "d.txt", "valid_fraction": 1.0}, "valid_fraction must be in (0, 1), got 1.0"),
])
def test_load_corpus_bad_combinations(tmp_path, kwargs, message):
    write(tmp_path / "d.txt", "some text\n")
    kwargs = {k: tmp_path / v if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(UserError, match=re.escape(message)):
        load_corpus(**kwargs)


def test_load_corpus_too_short_to_split(tmp_path):
    with pytest.raises(UserError, match="too few to split"):
        load_corpus(data=write(tmp_path / "d.txt", "a"), valid_fraction=0.1)  # cut at int(0.9) = 0


# --- char vocabulary ----------------------------------------------------------------------------------------


def test_char_vocab_order_and_unicode_round_trip():
    text = "héllo → 世界 🙂 héé"
    vocab = Vocab.build(text, "char")
    counts = Counter(text)
    assert vocab.itos[0] == "<unk>" and vocab.unk_index == 0  # reserved for characters training never saw
    assert vocab.itos[1:] == sorted(counts, key=lambda c: (-counts[c], c))
    assert vocab.itos[1:4] == [" ", "é", "h"]  # 4, 3, then the ties (2 each) by character: "h" < "l"
    ids = vocab.encode(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert ids.tolist() == [vocab.stoi[c] for c in text]
    assert vocab.decode(ids) == text == vocab.decode(ids.tolist())
    assert vocab.tokenize("世界") == ["世", "界"]


def test_char_vocab_unknown_character_is_unk_and_counted():
    vocab = Vocab.build("abc\nabc\n", "char")
    assert vocab.encode("ab\ncaz🙂z").tolist() == [vocab.stoi[c] for c in "ab\nca"] + [0, 0, 0]
    unseen = vocab.unseen("ab\ncaz🙂z")
    assert unseen.counts == {"z": 2, "🙂": 1} and str(unseen) == "unseen in training: 2 characters (z, 🙂) in 3 places"


def test_old_char_vocab_without_unk_names_the_unknown_character():
    vocab = Vocab(["a", "b", "c", "\n"], "char")  # as saved before char vocabularies had "<unk>"
    with pytest.raises(UserError) as info:
        vocab.encode("ab\ncaz🙂")
    assert "'z' (U+007A) at position 5 (line 2)" in str(info.value)
    assert "1 more unknown characters" in str(info.value) and "predates" in str(info.value)


def test_char_vocab_pruning_adds_unk():
    vocab = Vocab.build("aaaabbbcc d", "char", min_freq=2)
    assert vocab.itos == ["<unk>", "a", "b", "c"]
    assert vocab.encode("abz d").tolist() == [1, 2, 0, 0, 0]
    assert Vocab.build("aaaabbbcc d", "char", max_size=3).itos == ["<unk>", "a", "b"]


# --- word vocabulary (PTB conventions) ----------------------------------------------------------------------


PTB_LIKE = " the cat sat on the mat \n the <unk> sat N times \n\n a dog \n"


def test_word_vocab_ptb_conventions(tmp_path):
    text = read_text(write(tmp_path / "ptb.train.txt", PTB_LIKE))
    vocab = Vocab.build(text, "word")
    expected_tokens = [w for line in PTB_LIKE.splitlines() for w in line.split() + ["<eos>"]]
    assert vocab.tokenize(text) == expected_tokens  # the empty line is a sentence of length 0: just "<eos>"
    assert len(expected_tokens) == 17 and expected_tokens.count("<eos>") == 4
    assert vocab.itos[:2] == ["<unk>", "<eos>"]
    counts = Counter(t for t in expected_tokens if t not in ("<unk>", "<eos>"))
    assert vocab.itos[2:] == sorted(counts, key=lambda w: (-counts[w], w))  # the, sat, then a-z
    assert vocab.itos[2:4] == ["the", "sat"]  # 3 and 2 times
    ids = vocab.encode(text)
    assert ids.tolist() == [vocab.stoi[t] for t in expected_tokens]
    assert vocab.decode(ids) == "the cat sat on the mat\nthe <unk> sat N times\n\na dog\n"


def test_word_vocab_out_of_vocabulary_is_unk():
    vocab = Vocab.build("a b c\n", "word")
    assert vocab.encode("a zebra c").tolist() == [vocab.stoi["a"], 0, vocab.stoi["c"], vocab.stoi["<eos>"]]
    assert vocab.decode(vocab.encode("a zebra c")) == "a <unk> c\n"
    assert vocab.decode([vocab.stoi["a"], vocab.stoi["b"]]) == "a b"  # no "<eos>": no newline


def test_word_vocab_max_size_and_min_freq():
    text = "a a a a b b b c c d\n"
    assert Vocab.build(text, "word").itos == ["<unk>", "<eos>", "a", "b", "c", "d"]
    assert Vocab.build(text, "word", min_freq=2).itos == ["<unk>", "<eos>", "a", "b", "c"]
    assert Vocab.build(text, "word", min_freq=3).itos == ["<unk>", "<eos>", "a", "b"]
    small = Vocab.build(text, "word", max_size=4)  # max_size counts "<unk>" and "<eos>"
    assert small.itos == ["<unk>", "<eos>", "a", "b"]
    assert small.encode("c a d").tolist() == [0, 2, 0, 1]


def test_vocab_dict_round_trip_is_json_safe():
    for vocab in (Vocab.build("héllo 🙂", "char"), Vocab.build(PTB_LIKE, "word", max_size=5)):
        again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
        assert again == vocab and again.stoi == vocab.stoi and again.level == vocab.level


def test_vocab_bad_arguments():
    with pytest.raises(UserError, match="level must be one of"):
        Vocab.build("abc", "byte")
    with pytest.raises(UserError, match="empty text"):
        Vocab.build("", "char")
    with pytest.raises(UserError, match="needs '<unk>' at id 0"):
        Vocab.from_dict({"level": "word", "itos": ["a", "<eos>"]})
    with pytest.raises(ValueError, match=re.escape("ids must be ints in 0..3, got 7")):  # <unk> a b c
        Vocab.build("abc", "char").decode([0, 7])


@pytest.mark.skipif(not (PTB / "ptb.train.txt").exists(), reason="PTB not in /work/shared/data")
def test_real_ptb_canonical_sizes():
    corpus = load_corpus(train=PTB / "ptb.train.txt", valid=PTB / "ptb.valid.txt", test=PTB / "ptb.test.txt")
    vocab = Vocab.build(corpus.train, "word")
    assert len(vocab) == 10_000  # Mikolov's 10k, with "<unk>" and "<eos>"
    sizes = [len(vocab.encode(t)) for t in (corpus.train, corpus.valid, corpus.test)]
    assert sizes == [929_589, 73_760, 82_430]  # the token counts of Zaremba et al. (2014)
