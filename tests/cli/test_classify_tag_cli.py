"""Smoke runs of `recurrent train classify`, `train tag`, `predict` and `evaluate` at tiny sizes (a couple of
steps), and one-line exit-2 errors for bad flags and bad files."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from recurrent.cli.main import main

TSV = "pos\ta good film\nneg\ta bad film\npos\tgreat\nneg\tdull plot\n"
CONLL = "-DOCSTART- -X- O O\n\nPeter NNP I-NP I-PER\nlives VBZ I-VP O\n\nParis NNP I-NP I-LOC\nis VBZ I-VP O\n"
TINY = ["--max-steps", "2", "--embedding-size", "4", "--hidden-size", "4", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    (d / "train.tsv").write_text(TSV)
    (d / "eng.train").write_text(CONLL)
    (d / "bad.tsv").write_text("pos\tgood\nneg\n")
    (d / "sst.txt").write_text("(3 (2 a) (4 good))\n(0 (1 bad) (2 film)\n")
    (d / "trees.txt").write_text("(3 (2 a) (4 good))\n(0 (1 bad) (2 film))\n(4 (2 (2 a) (2 film)) (4 good))\n")
    return d


@pytest.fixture(scope="module")
def classify_run(files):
    out = files / "sent"
    assert main(["train", "classify", "--train", str(files / "train.tsv"), "--valid", str(files / "train.tsv"),
                 "--out", str(out), "--pooling", "attention", *TINY]) == 0
    return out


@pytest.fixture(scope="module")
def tag_run(files):
    out = files / "ner"
    assert main(["train", "tag", "--train", str(files / "eng.train"), "--valid", str(files / "eng.train"),
                 "--column", "3", "--crf", "--char-encoder", "lstm", "--char-hidden-size", "3",
                 "--out", str(out), *TINY]) == 0
    return out


def recurrent(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recurrent", *args], input=stdin.encode(), capture_output=True,
                          timeout=60)


def test_train_classify_writes_the_run_folder(classify_run):
    config = json.loads((classify_run / "config.json").read_text())
    assert config["task"] == "classify" and config["model"]["pooling"] == "attention" and config["training"]["max_steps"] == 2


def test_predict_classifier_one_label_per_line_in_order(classify_run):
    result = recurrent("predict", str(classify_run), stdin="a good film\n\nunseen words here\n")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == "" and {lines[0], lines[2]} <= {"pos", "neg"}


@pytest.fixture(scope="module")
def tree_run(files):
    out = files / "tree"
    trees = str(files / "trees.txt")
    assert main(["train", "classify", "--format", "sst", "--structure", "tree", "--phrases", "--train", trees,
                 "--valid", trees, "--out", str(out), *TINY]) == 0
    return out


def test_tree_classifier_trains_predicts_and_evaluates(tree_run, files, capsys):
    meta = json.loads((tree_run / "model.json").read_text())
    assert meta["model"]["structure"] == "tree" and meta["labels"] == ["0", "1", "2", "3", "4"]  # phrases' too
    result = recurrent("predict", str(tree_run), stdin="(2 (2 a) (2 film))\n\n(2 good)\n")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == "" and {lines[0], lines[2]} <= set(meta["labels"])
    assert main(["evaluate", str(tree_run), "--data", str(files / "trees.txt")]) == 0
    assert re.search(r"^test accuracy \d\.\d{3}$", capsys.readouterr().out, re.M)


def test_tree_classifier_refuses_plain_sentences(tree_run):
    result = recurrent("predict", str(tree_run), stdin="a good film\n")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1 and "stdin:1: word 'a' outside any parenthesis (this classifier composes parse trees" in err, err


def test_predict_tagger_token_tag_pairs(tag_run):
    result = recurrent("predict", str(tag_run), stdin="Peter lives in Paris\nRome\n")
    assert result.returncode == 0, result.stderr.decode()
    first, second = result.stdout.decode().splitlines()
    assert re.fullmatch(r"Peter/\S+ lives/\S+ in/\S+ Paris/\S+", first) and second.startswith("Rome/")
    assert all(t.split("/")[1] in {"O", "B-PER", "B-LOC"} for t in first.split())


def test_evaluate_classifier(classify_run, files, capsys):
    assert main(["evaluate", str(classify_run), "--data", str(files / "train.tsv")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test accuracy \d\.\d{3}$", out, re.M) and re.search(r"^test macro-F1 \d\.\d{3}$", out, re.M)
    assert "confusion matrix" in out


def test_evaluate_tagger(tag_run, files, capsys):
    assert main(["evaluate", str(tag_run), "--data", str(files / "eng.train")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test F1 \d+\.\d$", out, re.M) and re.search(r"^test F1 PER \d+\.\d ", out, re.M)
    assert re.search(r"^test token accuracy \d\.\d{3}$", out, re.M) and "confusion matrix" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "classify", "--train", "{train}", "--valid", "{train}", "--pooling", "sum"],
     "argument --pooling: invalid choice: 'sum'"),
    (["train", "classify", "--train", "{train}", "--valid", "{train}", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["train", "classify", "--train", "{bad}", "--valid", "{train}"], "bad.tsv:2: expected 2 columns, got 1"),
    (["train", "classify", "--format", "sst", "--train", "{sst}", "--valid", "{sst}"], "sst.txt:2: unbalanced"),
    (["train", "classify", "--train", "{train}", "--valid", "{train}", "--structure", "tree"],
     "structure 'tree' needs parse trees: format must be 'sst', got 'tsv'"),
    (["train", "classify", "--format", "sst", "--train", "{trees}", "--valid", "{trees}", "--structure", "tree",
      "--cell", "gru"], "a tree cell must be one of ['elman', 'lstm', 'rnn'], got 'gru'"),
    (["train", "tag", "--train", "{conll}", "--valid", "{conll}", "--char-encoder", "gru"],
     "argument --char-encoder: invalid choice: 'gru'"),
    (["train", "tag", "--train", "{conll}"], "needs --train FILE and --valid FILE"),
    (["predict", "{missing}"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(argv, message, files, tmp_path, capsys):
    paths = {"train": files / "train.tsv", "bad": files / "bad.tsv", "sst": files / "sst.txt",
             "trees": files / "trees.txt", "conll": files / "eng.train", "missing": tmp_path / "missing"}
    argv = [a.format(**paths) for a in argv] + (["--out", str(tmp_path / "out")] if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recurrent: error: ") and message in err, err


def test_bad_flag_value_in_a_subprocess_is_one_line(files):
    result = recurrent("train", "tag", "--train", str(files / "eng.train"), "--valid", str(files / "eng.train"),
                       "--format", "xml", "--out", str(files / "x"))
    assert result.returncode == 2 and result.stderr.decode().count("\n") == 1, result.stderr.decode()
    assert "argument --format: invalid choice: 'xml'" in result.stderr.decode() and "Traceback" not in result.stderr.decode()
