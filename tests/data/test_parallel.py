"""Parallel data: line-aligned reading (mismatched counts, empty lines, overlong sentences), word and BPE
vocabularies from `tokenizers` that decode back to the original text, and length-bucketed padded batches."""
from __future__ import annotations

import pytest
import torch

from recurrent.data.parallel import (BOS_ID, EOS_ID, PAD_ID, ReadReport, TextCodec, bucket_batches, encode_pairs,
                                     read_parallel)
from recurrent.errors import UserError

EN = ["Two young, White males are outside near many bushes.", "A man rides a bike.", "", "Dogs run.", "A cat."]
DE = ["Zwei junge weiße Männer sind im Freien.", "Ein Mann fährt Fahrrad.", "Leer.", "", "Eine Katze."]


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_mismatched_line_counts_name_both_counts(tmp_path):
    src, tgt = write(tmp_path / "a.de", DE), write(tmp_path / "a.en", EN[:3])
    with pytest.raises(UserError, match=r"a\.de has 5 lines, .*a\.en has 3"):
        read_parallel(src, tgt)


def test_pairs_with_an_empty_side_are_skipped_and_counted(tmp_path):
    pairs, report = read_parallel(write(tmp_path / "a.de", DE), write(tmp_path / "a.en", EN))
    assert [t for _, t in pairs] == [EN[0], EN[1], EN[4]]
    assert (report.pairs, report.empty) == (3, 2)
    assert "skipped 2 with an empty line" in str(report)


def test_overlong_sentences_are_truncated_and_counted():
    codec = TextCodec.train(["a b c d e f", "a b"])
    report = ReadReport(pairs=2)
    pairs = encode_pairs([("a b c d e f", "a b"), ("a b", "a b c d e f")], codec, codec, max_len=4, report=report)
    assert [len(s) for s, _ in pairs] == [4, 2] and [len(t) for _, t in pairs] == [2, 4]
    assert report.truncated == 2


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_vocabularies_decode_to_the_original_text(kind):
    codec = TextCodec.train(EN, kind=kind, vocab_size=0 if kind == "word" else 120, split_punctuation=True)
    for line in filter(None, EN):
        assert codec.decode(codec.encode(line)) == line
    assert codec.tokens("bushes.") == ["▁bushes", "."]
    assert [codec.tokenizer.token_to_id(t) for t in ("<pad>", "<unk>", "<s>", "</s>")] == [0, 1, 2, 3]
    again = TextCodec.from_json(codec.to_json())
    assert again.encode(EN[0]) == codec.encode(EN[0]) and len(again) == len(codec)


def test_lowercasing_is_an_option_and_unknown_words_map_to_unk():
    lower = TextCodec.train(EN, lowercase=True)
    assert lower.decode(lower.encode("A Man")) == "a man"
    assert TextCodec.train(EN).encode("Zebra") == [1]


def test_buckets_cover_every_pair_once_with_padding_and_markers():
    pairs = [([5] * n, [6] * (n % 4 + 1)) for n in range(1, 40)]
    batches = list(bucket_batches(pairs, 8, shuffle=True, generator=torch.Generator().manual_seed(0), pool=5))
    assert sorted(i for b in batches for i in b.index.tolist()) == list(range(39))
    for b in batches:
        assert b.src.shape[1] == int(b.src_lengths.max())
        assert ((b.src != PAD_ID).sum(1) == b.src_lengths).all()
        assert (b.tgt_in[:, 0] == BOS_ID).all()
        lengths = (b.tgt_out != PAD_ID).sum(1)
        assert (b.tgt_out.gather(1, (lengths - 1).unsqueeze(1)) == EOS_ID).all()
        words = b.tgt_out[:, :-1] > EOS_ID  # y_1..y_n: what <s> y_1..y_n repeats one step later
        assert (b.tgt_in[:, 1:][words] == b.tgt_out[:, :-1][words]).all()
    spread = [int(b.src_lengths.max() - b.src_lengths.min()) for b in batches]
    assert max(spread) < 10  # one pool of 40: sorted, so each batch holds neighbours (random order: ~30)
