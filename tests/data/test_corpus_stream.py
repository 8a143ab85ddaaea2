"""The streamed corpus (recurrent/data/corpus_stream.py) against the in-memory path it replaces in `train lm`:
read_text, load_corpus, Vocab.build and Vocab.encode. Tiny chunk sizes put the chunk boundaries everywhere: inside
a UTF-8 character, between "\\r" and "\\n", inside a word, on an empty line, and at a file's exact end."""
from __future__ import annotations

import itertools
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from recurrent.data import (
    Vocab,
    batchify,
    bptt_batches,
    load_corpus,
    num_bptt_batches,
    read_text,
)
from recurrent.data import corpus_stream as cs
from recurrent.data.text import _split_point, _words
from recurrent.errors import UserError

TRICKY = ("\ufeffthe café 世界 😀\r\nnaïve  words\ton one line\r\n\r\nempty line above\rold mac line\n"
          "tail without newline é")
CHUNKS = [1, 2, 3, 4, 5, 7, 64]


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def file_backed(address: int) -> bool:
    """Whether `address` lies in a mapping of a file (its inode is not 0), from /proc/self/maps (Linux)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, _, _, _, inode = line.split()[:5]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return inode != "0"
    return False


def joined(span: cs.Span) -> str:
    return "".join(span.chunks())


# --- text in pieces -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", CHUNKS)
def test_text_chunks_equal_read_text_on_tricky_bytes(tmp_path, chunk):
    path = write(tmp_path / "a.txt", TRICKY)
    pieces = list(cs.text_chunks(path, chunk))
    assert "".join(pieces) == read_text(path)
    assert chunk > 8 or max(map(len, pieces)) <= chunk + 1  # really in pieces (+1: a "\r" held back)


@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_text_chunks_of_a_directory_join_files_as_read_text(tmp_path, chunk):
    write(tmp_path / "a" / "x.txt", "no newline at the end é")
    write(tmp_path / "a" / "y.txt", b"\xef\xbb\xbf")  # a byte-order mark alone: an empty text
    write(tmp_path / "b.txt", "ends with cr\r")
    write(tmp_path / "c.txt", "\nstarts with a newline\r\n")
    write(tmp_path / ".hidden" / "z.txt", "skipped")
    assert "".join(cs.text_chunks(tmp_path, chunk)) == read_text(tmp_path)


def test_file_size_an_exact_multiple_of_the_chunk(tmp_path):
    path = write(tmp_path / "a.txt", "abc\r\n世界\n")  # 11 bytes ...
    path = write(tmp_path / "a.txt", path.read_bytes() + b"x")  # ... 12: three chunks of 4, then an empty read
    for chunk in (4, 6, 12):
        assert "".join(cs.text_chunks(path, chunk)) == read_text(path) == "abc\n世界\nx"


@pytest.mark.parametrize("raw", [b"ok\nline two \xff here", b"caf\xc3", b"\n\n\xe4\xb8x", b"\xed\xa0\x80",
                                 b"abc\r\n\xe4\xb8\x96\xe7\x95"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 100])
def test_invalid_utf8_same_message_as_read_text(tmp_path, raw, chunk):
    path = write(tmp_path / "bad.txt", raw)
    with pytest.raises(UserError) as expected:
        read_text(path)
    with pytest.raises(UserError) as streamed:
        "".join(cs.text_chunks(path, chunk))
    assert str(streamed.value) == str(expected.value)


def test_missing_and_empty_inputs_same_errors(tmp_path):
    write(tmp_path / "empty.txt", b"")
    (tmp_path / "nothing").mkdir()
    for path in (tmp_path / "nope.txt", tmp_path / "empty.txt", tmp_path / "nothing"):
        with pytest.raises(UserError) as expected:
            read_text(path)
        with pytest.raises(UserError, match=str(expected.value).split(":")[-1].strip()):
            list(cs.text_chunks(path, 2))


# --- the split ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 16])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.5])
def test_stream_corpus_splits_as_load_corpus(tmp_path, chunk, fraction):
    rng = random.Random(chunk)
    for case in range(8):
        lines = ["".join(rng.choice("ab é\t") for _ in range(rng.randrange(0, 9))) for _ in range(rng.randrange(1, 9))]
        text = "\n".join(lines) + rng.choice(["", "\n", "\r\n"])
        path = write(tmp_path / f"c{case}.txt", text)
        try:
            expected = load_corpus(data=path, valid_fraction=fraction)
        except UserError as e:
            with pytest.raises(UserError, match="too few to split"):
                cs.stream_corpus(data=path, valid_fraction=fraction, chunk_bytes=chunk)
            assert "too few" in str(e)
            continue
        streamed = cs.stream_corpus(data=path, valid_fraction=fraction, chunk_bytes=chunk)
        assert (joined(streamed.train), joined(streamed.valid)) == (expected.train, expected.valid), text


def test_split_point_cut_inside_the_last_line():
    text = "short\n" + "x" * 50  # the last tenth falls inside the last line: cut at the character
    span = cs.Span(lambda: iter([text[i : i + 4] for i in range(0, len(text), 4)]), "s")
    assert cs.split_point(span, len(text), 0.1) == _split_point(text, 0.1) == int(len(text) * 0.9)


def test_explicit_files_and_bad_combinations(tmp_path):
    paths = {k: write(tmp_path / f"{k}.txt", f"{k} text\r\n") for k in ("train", "valid", "test")}
    corpus = cs.stream_corpus(**paths, chunk_bytes=3)
    assert [joined(s) for s in (corpus.train, corpus.valid, corpus.test)] == ["train text\n", "valid text\n",
                                                                               "test text\n"]
    with pytest.raises(UserError, match="no valid file"):
        cs.stream_corpus(train=paths["train"])
    with pytest.raises(UserError, match="not both"):
        cs.stream_corpus(data=paths["train"], valid=paths["valid"])
    with pytest.raises(UserError, match="no such file"):
        cs.stream_corpus(train=paths["train"], valid=tmp_path / "nope.txt")


# --- tokens, vocabulary, ids --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "a", "a\n", "\n\na b\n", "one two\nthree", "  lead\ttab\x0bvt  \n\n",
                                  "word level line\nsplit acrossboundaries here\n"])
def test_word_chunks_equal_words_at_every_cut(text):
    for cuts in [[], list(range(1, len(text)))] + [sorted(random.Random(i).sample(range(len(text) + 1), 2))
                                                   for i in range(5) if len(text) > 1]:
        bounds = [0, *cuts, len(text)]
        pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]  # empty pieces included
        assert [w for words in cs.word_chunks(iter(pieces)) for w in words] == _words(text), pieces


@pytest.mark.parametrize("chunk", [1, 4, 9, 1 << 20])
@pytest.mark.parametrize("level, max_size", [("char", None), ("char", 6), ("word", None), ("word", 4)])
def test_vocab_and_ids_equal_the_in_memory_path(tmp_path, chunk, level, max_size):
    """LMTask's rule: char vocabulary from all the text, word vocabulary from train; ids of train and valid."""
    rng = random.Random(0)
    words = ["the", "café", "世界", "😀", "sat", "a"]
    text = "".join(" ".join(rng.choice(words) for _ in range(rng.randrange(0, 6))) + rng.choice(["\n", "\r\n"])
                   for _ in range(60))
    path = write(tmp_path / "corpus.txt", text)
    corpus, streamed = load_corpus(data=path), cs.stream_corpus(data=path, chunk_bytes=chunk)
    vocab = Vocab.build(corpus.train + (corpus.valid if level == "char" else ""), level, max_size=max_size)
    assert streamed.build_vocab(level, max_size=max_size) == vocab
    for span, part in ((streamed.train, corpus.train), (streamed.valid, corpus.valid)):
        ids = cs.encode_span(span, vocab)
        assert ids.dtype == torch.uint8 and torch.equal(ids.long(), vocab.encode(part))


def test_explicit_files_vocab_counts_every_file_at_char_level(tmp_path):
    paths = {"train": write(tmp_path / "t.txt", "abc\n"), "valid": write(tmp_path / "v.txt", "abd\n"),
             "test": write(tmp_path / "x.txt", "é\n")}
    corpus, streamed = load_corpus(**paths), cs.stream_corpus(**paths, chunk_bytes=2)
    assert streamed.build_vocab("char") == Vocab.build(corpus.train + corpus.valid + corpus.test, "char")
    assert streamed.build_vocab("word") == Vocab.build(corpus.train, "word")


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc/self/maps")
def test_batches_of_the_memory_map_equal_those_of_the_long_ids(tmp_path):
    path = write(tmp_path / "corpus.txt", "".join(f"line {i} of some text\n" for i in range(200)))
    vocab = cs.stream_corpus(data=path).build_vocab("char")
    compact = cs.encode_span(cs.stream_corpus(data=path, chunk_bytes=7).train, vocab)
    assert file_backed(compact.data_ptr())  # the ids live in a mapped file, not on the heap
    streams = batchify(compact, 4)
    assert streams.data_ptr() == compact.data_ptr()  # a view of the map, not a copy
    reference = batchify(vocab.encode(load_corpus(data=path).train), 4)
    pairs = list(zip(bptt_batches(streams, 16), bptt_batches(reference, 16)))
    assert len(pairs) == num_bptt_batches(reference, 16) > 10
    for (x, y), (rx, ry) in pairs:
        assert x.dtype == y.dtype == torch.long and torch.equal(x, rx) and torch.equal(y, ry)


def test_unknown_character_without_unk_is_the_same_error(tmp_path):
    vocab = Vocab(["a", "b", "\n"], "char")  # a vocabulary from before "<unk>"
    text = "ab\nba\nbaXa\nYY\n"
    with pytest.raises(UserError) as expected:
        vocab.encode(text)
    with pytest.raises(UserError) as streamed:
        cs.encode_span(cs.stream_corpus(train=write(tmp_path / "t.txt", text), valid=write(tmp_path / "v.txt", "a"),
                                  chunk_bytes=4).train, vocab)
    assert str(streamed.value) == str(expected.value)
    assert "position 8 (line 3)" in str(expected.value) and "2 more" in str(expected.value)


def test_id_dtype_is_the_smallest_that_holds_the_vocabulary():
    assert [cs.id_dtype(n) for n in (2, 256, 257, 32768, 32769)] == [np.uint8, np.uint8, np.int16, np.int16, np.int32]
    vocab = Vocab(["<unk>", "<eos>", *(f"w{i}" for i in range(300))], "word")
    ids = cs.encode_span(cs.Span(lambda: iter(["w299 w0 nope\n"]), "s"), vocab)
    assert ids.dtype == torch.int16 and ids.tolist() == vocab.encode("w299 w0 nope\n").tolist()


def test_lm_task_reads_the_same_streams_as_before(tmp_path):
    """The trainer's streams and valid ids, streamed, equal the in-memory path's (load_corpus, build, encode)."""
    from recurrent.models.lm import LMConfig
    from recurrent.train.lm import LMTask, TrainLMConfig

    rng = random.Random(1)
    path = write(tmp_path / "corpus.txt", "".join(" ".join(rng.choice(["a", "bé", "c"]) for _ in range(5)) + "\n"
                                                  for _ in range(100)))
    corpus = load_corpus(data=path)
    for level in ("char", "word"):
        task = LMTask(TrainLMConfig(data=str(path), level=level, batch_size=4, model=LMConfig(hidden_size=8)), None)
        vocab = Vocab.build(corpus.train + (corpus.valid if level == "char" else ""), level)
        assert task.vocab == vocab
        assert torch.equal(task.streams.long(), batchify(vocab.encode(corpus.train), 4))
        assert torch.equal(task.valid_ids.long(), vocab.encode(corpus.valid))
        assert task.evaluate(task.model)["val_loss"] > 0


# --- real corpora (skipped without /work/shared/data) -------------------------------------------------------

SHARED = Path(__file__).resolve().parents[3] / "shared/data"


@pytest.mark.parametrize("level, files", [("char", {"data": "tinyshakespeare/input.txt"}),
                                          ("word", {"train": "ptb/ptb.train.txt", "valid": "ptb/ptb.valid.txt",
                                                    "test": "ptb/ptb.test.txt"})])
def test_real_corpora_stream_to_the_same_vocab_and_ids(level, files):
    paths = {k: SHARED / v for k, v in files.items()}
    if not all(p.exists() for p in paths.values()):
        pytest.skip(f"needs {', '.join(map(str, paths.values()))} (the shared data folder)")
    corpus, streamed = load_corpus(**paths), cs.stream_corpus(**paths, chunk_bytes=100_003)  # an odd chunk size
    vocab = Vocab.build(corpus.train + (corpus.valid + (corpus.test or "") if level == "char" else ""), level)
    assert streamed.build_vocab(level) == vocab
    for span, part in ((streamed.train, corpus.train), (streamed.valid, corpus.valid)):
        assert torch.equal(cs.encode_span(span, vocab).long(), vocab.encode(part))
