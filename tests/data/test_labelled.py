"""Readers of labelled text on small generated files (malformed ones included), IOB1 -> BIO by hand, entity F1
against an independent conlleval-style chunk scorer, and the real files' sentence counts when present."""
from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest
import torch

from recurrent.data.buckets import bucket_batches, pad
from recurrent.data.labelled import (is_iob, parse_tree, read_conll, read_conllu, read_sst, read_tabular,
                                     to_bio)
from recurrent.errors import UserError
from recurrent.inference.tag import entity_scores

DATA = Path("/work/shared/data")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- TSV / CSV ----------------------------------------------------------------------------------------------


def test_tsv_label_then_text_with_empty_text_skipped_and_counted(tmp_path):
    path = write(tmp_path / "a.tsv", "pos\ta fine film\n\nneg\t  \nneg\tdull\n")
    read = read_tabular(path)
    assert [(e.tokens, e.label, e.line) for e in read.examples] == [(["a", "fine", "film"], "pos", 1),
                                                                     (["dull"], "neg", 4)]
    assert read.skipped == 1


def test_csv_with_header_names_and_quoting(tmp_path):
    path = write(tmp_path / "a.csv", 'id,sentence,label\n1,"good, really",pos\n2,bad,neg\n')
    read = read_tabular(path, text_col="sentence", label_col="label", header=True)
    assert [(e.tokens, e.label, e.line) for e in read.examples] == [(["good,", "really"], "pos", 2),
                                                                     (["bad"], "neg", 3)]
    assert read_tabular(path, text_col=1, label_col=-1, header=True).examples[1].label == "neg"


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "pos\tgood\nneg\tbad\textra\n")
    with pytest.raises(UserError, match=r"bad\.tsv:2: expected 2 columns, got 3"):
        read_tabular(path)


def test_column_name_without_header_is_an_error(tmp_path):
    path = write(tmp_path / "a.tsv", "pos\tgood\n")
    with pytest.raises(UserError, match="needs --header"):
        read_tabular(path, text_col="sentence")


# --- SST trees ----------------------------------------------------------------------------------------------

TREES = "(3 (2 The) (4 (3 fine) (2 film)))\n(2 (2 It) (2 exists))\n(0 (1 awful) (2 .))\n"


def test_sst_root_labels_binary_drops_neutral_and_phrases(tmp_path):
    path = write(tmp_path / "sst.txt", TREES)
    five = read_sst(path)
    assert [(e.tokens, e.label, e.line) for e in five.examples] == [
        (["The", "fine", "film"], "3", 1), (["It", "exists"], "2", 2), (["awful", "."], "0", 3)]
    assert [e.label for e in read_sst(path, binary=True).examples] == ["positive", "negative"]
    phrases = read_sst(path, phrases=True).examples
    assert len(phrases) == 5 + 3 + 3  # every node of each tree
    assert (["fine", "film"], "4") in [(e.tokens, e.label) for e in phrases]


@pytest.mark.parametrize("tree", ["(3 (2 a) (2 b)", "(3 (2 a) (2 b)))", "(3 (2 a) 2 b))"])
def test_unbalanced_parentheses_name_file_and_line(tmp_path, tree):
    path = write(tmp_path / "sst.txt", f"(2 (2 ok))\n{tree}\n")
    with pytest.raises(UserError, match=r"sst\.txt:2: "):
        read_sst(path)


def test_parse_tree_leaves():
    assert parse_tree("(1 (2 -LRB-) (0 (0 no) (2 way)))").leaves() == ["-LRB-", "no", "way"]
    assert parse_tree("(3 (2 8 1\\/2) (3 rocks))").leaves() == ["8", "1\\/2", "rocks"]  # SST has such leaves


# --- CoNLL and CoNLL-U --------------------------------------------------------------------------------------

CONLL = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC

-DOCSTART- -X- O O


Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_docstart_blank_lines_and_columns(tmp_path):
    path = write(tmp_path / "eng.train", CONLL)
    read = read_conll(path)
    assert [(e.tokens, e.label, e.line) for e in read.examples] == [
        (["EU", "rejects", "German"], ["I-ORG", "O", "I-MISC"], 3), (["Peter", "Blackburn"], ["I-PER", "I-PER"], 10)]
    assert read_conll(path, column=1).examples[1].label == ["NNP", "NNP"]


def test_conll_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "eng.train", CONLL.replace("rejects VBZ I-VP O", "rejects VBZ O"))
    with pytest.raises(UserError, match=r"eng\.train:4: expected 4 columns, got 3"):
        read_conll(path)


CONLLU = """# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3.1\tknow\tknow\tVERB\tVB\t_\t_\t_\t0:root\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_

# sent_id = 2
# nothing but comments

# sent_id = 3
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_

"""


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path, gz):
    path = tmp_path / ("a.conllu.gz" if gz else "a.conllu")
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(CONLLU)
    else:
        write(path, CONLLU)
    read = read_conllu(path, "upos")
    assert [(e.tokens, e.label) for e in read.examples] == [
        (["I", "do", "n't", "."], ["PRON", "AUX", "PART", "PUNCT"]), (["Hi"], ["INTJ"])]
    assert read.skipped == 1
    assert read_conllu(path, "xpos").examples[0].label == ["PRP", "VBP", "RB", "."]


def test_conllu_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "a.conllu", CONLLU.replace("2\tdo\tdo\tAUX", "2\tdo\tAUX"))
    with pytest.raises(UserError, match=r"a\.conllu:5: expected 10 tab-separated columns, got 9"):
        read_conllu(path)


# --- IOB1 -> BIO and entity F1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("iob1, bio", [
    ("I-PER I-PER O I-LOC", "B-PER I-PER O B-LOC"),
    ("I-PER B-PER", "B-PER B-PER"),  # IOB1's B- separates two adjacent chunks of one type
    ("I-PER I-LOC I-LOC", "B-PER B-LOC I-LOC"),  # a type change starts a chunk
    ("O I-MISC B-MISC I-MISC", "O B-MISC B-MISC I-MISC"),
    ("B-ORG I-ORG O", "B-ORG I-ORG O"),  # already BIO: unchanged
    ("O O", "O O"),
])
def test_iob1_to_bio(iob1, bio):
    assert to_bio(iob1.split()) == bio.split()


def conlleval_chunks(tags: list[str]) -> set[tuple[int, int, str]]:
    """Chunks (start, end, type) as conlleval.pl finds them (its startOfChunk / endOfChunk for O, B, I tags)."""
    chunks, start, prev_tag, prev_type = set(), None, "O", ""
    for i, tag in enumerate(tags + ["O"]):
        kind, typ = (tag, "") if tag == "O" else (tag[0], tag[2:])
        end = (prev_tag in "BI" and kind in "BO") or (prev_tag != "O" and prev_type != typ)
        begin = kind == "B" or (prev_tag == "O" and kind == "I") or (kind != "O" and prev_type != typ)
        if end and start is not None:
            chunks.add((start, i, prev_type))
            start = None
        if begin:
            start = i
        prev_tag, prev_type = kind, typ
    return chunks


def conlleval_f1(gold: list[list[str]], pred: list[list[str]]) -> float:
    found = correct = wanted = 0
    for g, p in zip(gold, pred):
        gc, pc = conlleval_chunks(g), conlleval_chunks(p)
        found, wanted, correct = found + len(pc), wanted + len(gc), correct + len(gc & pc)
    precision, recall = correct / found if found else 0, correct / wanted if wanted else 0
    return 100 * 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def test_conlleval_reference_on_hand_built_iob1():
    assert conlleval_chunks("I-PER B-PER O I-LOC I-LOC".split()) == {(0, 1, "PER"), (1, 2, "PER"), (3, 5, "LOC")}
    assert conlleval_chunks("O I-ORG I-MISC".split()) == {(1, 2, "ORG"), (2, 3, "MISC")}


@pytest.mark.parametrize("seed", range(5))
def test_entity_f1_on_bio_equals_conlleval_on_raw_iob1(seed):
    """Random raw tag sequences (IOB1-valid or not, predictions included): seqeval's F1 on the converted tags
    equals the conlleval-style F1 on the original tags."""
    rng = random.Random(seed)
    vocab = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    gold = [[rng.choice(vocab) for _ in range(rng.randint(1, 12))] for _ in range(40)]
    pred = [[t if rng.random() < 0.6 else rng.choice(vocab) for t in g] for g in gold]
    f1, per_type = entity_scores([to_bio(g) for g in gold], [to_bio(p) for p in pred])
    assert f1 == pytest.approx(conlleval_f1(gold, pred), abs=1e-9)
    assert set(per_type) <= {"PER", "LOC", "ORG"}


def test_is_iob():
    assert is_iob(["O", "B-PER", "I-LOC"]) and not is_iob(["NOUN", "O"]) and not is_iob(["B-"])


# --- buckets ------------------------------------------------------------------------------------------------


def test_bucket_batches_cover_every_example_once_and_group_lengths():
    lengths = [random.Random(0).randint(1, 50) for _ in range(503)]
    batches = bucket_batches(lengths, 16, torch.Generator().manual_seed(0), pool=4)
    assert sorted(i for b in batches for i in b) == list(range(503))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # sorted within pools: far below the ~47 of random batches
    ordered = bucket_batches(lengths, 16)
    assert [lengths[i] for b in ordered for i in b] == sorted(lengths, reverse=True)


def test_pad():
    x, lengths = pad([[3, 4, 5], [7]])
    assert x.tolist() == [[3, 4, 5], [7, 0, 0]] and lengths.tolist() == [3, 1]


# --- the real files, when present ---------------------------------------------------------------------------


@pytest.mark.parametrize("reader, path, count", [
    (lambda p: read_sst(p), DATA / "sst/dev.txt", 1101),
    (lambda p: read_conll(p), DATA / "conll2003/eng.testa", 3250),
    (lambda p: read_conllu(p, "upos"), DATA / "ud_english_ewt/en_ewt-ud-dev.conllu.gz", 2001),
], ids=["sst", "conll2003", "ud"])
def test_real_files_sentence_counts(reader, path, count):
    if not path.exists():
        pytest.skip(f"{path} not present")
    assert len(reader(path).examples) == count
