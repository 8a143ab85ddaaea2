"""Smoke runs of `recurrent train translate --task reverse`, `recurrent translate` (stdin to stdout, attention
plot) and `recurrent evaluate` at tiny sizes, and the one-line exit-2 errors for bad input."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import matplotlib.image
import pytest

from recurrent.cli.main import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "reverse"
    code = main(["train", "translate", "--task", "reverse", "--task-min-len", "2", "--task-max-len", "5",
                 "--task-size", "300", "--out", str(out), "--hidden-size", "16", "--embedding-size", "8",
                 "--max-steps", "3", "--batch-size", "16", "--seed", "1", "--no-progress"])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "test.src").write_text("a b c\n\nd e\nj i h g f\n", encoding="utf-8")
    (folder / "test.tgt").write_text("c b a\nx\ne d\nf g h i j\n", encoding="utf-8")
    (folder / "short.tgt").write_text("c b a\n", encoding="utf-8")
    return folder


def recurrent(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as conftest: tiny ops on a shared 2-core machine run best on one
    return subprocess.run([sys.executable, "-m", "recurrent", *args], input=stdin.encode(), capture_output=True,
                          timeout=60, env=env)


def test_train_translate_writes_a_translate_run(run):
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "translate" and config["synthetic"] == "reverse" and config["training"]["max_steps"] == 3
    assert {"model.safetensors", "model.json", "metrics.jsonl", "loss.png"} <= {p.name for p in run.iterdir()}


def test_translate_writes_one_line_per_input_line(run):
    result = recurrent("translate", str(run), "--beam", "3", stdin="a b c\n\nd e\n")
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # three lines, each ended by a newline
    assert "translated 3 lines (1 empty" in result.stderr.decode()


def test_plot_attention_writes_a_png(run, tmp_path, capsys):
    png = tmp_path / "attn.png"
    assert main(["translate", str(run), "--plot-attention", "a b c d", "--out", str(png)]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # the translation
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_evaluate_prints_bleu_chrf_and_perplexity(run, files, capsys):
    assert main(["evaluate", str(run), "--src", str(files / "test.src"), "--tgt", str(files / "test.tgt"),
                 "--beam", "2"]) == 0
    assert re.fullmatch(r"test BLEU \d+\.\d\d  chrF \d+\.\d\d  perplexity \d+\.\d\d  \(beam 2; 3 sentences\)\n",
                        capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["train", "translate", "--task", "reverse", "--hidden-size", "7"], r"hidden_size must be even .*got 7"),
    (["train", "translate", "--task", "reverse", "--attention", "cosine"], "invalid choice: 'cosine'"),
    (["train", "translate", "--src", "{files}/test.src", "--tgt", "{files}/short.tgt", "--valid-src",
      "{files}/test.src", "--valid-tgt", "{files}/test.tgt"], "test.src has 4 lines, .*short.tgt has 1"),
    (["translate", "{run}", "--beam", "0"], "--beam must be >= 1, got 0"),
    (["evaluate", "{run}", "--src", "{files}/test.src"], "needs --src FILE and --tgt FILE"),
    (["evaluate", "{run}", "--src", "{files}/test.src", "--tgt", "{files}/short.tgt"], "has 4 lines"),
])
def test_bad_input_is_one_line_exit_2(argv, message, run, files, tmp_path, capsys):
    argv = [a.format(run=run, files=files) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "bad"), "--max-steps", "1", "--no-progress"]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("recurrent: error: ")
    assert re.search(message, err), err
