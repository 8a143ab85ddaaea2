"""Smoke runs of `recurrent diagnose gradients` (a fresh layer, and a tiny trained LM run) and `recurrent bench
memory` at tiny sizes, through the real entry point (`recurrent.cli.main.main`), and the one-line exit-2 errors for
bad flag values."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from recurrent.cells import registry
from recurrent.cli.main import main

VERDICT_LINE = re.compile(r"^layer (\d+): (vanishing|healthy|exploding) +rate ([\d.e+-]+)/step", re.M)
PNG = b"\x89PNG\r\n\x1a\n"
TEXT = "to be, or not to be: that is the question.\n" * 12


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A two-layer char LSTM trained for 2 steps, and its text."""
    root = tmp_path_factory.mktemp("lm")
    data = root / "text.txt"
    data.write_text(TEXT, encoding="utf-8")
    code = main(["train", "lm", "--data", str(data), "--out", str(root / "run"), "--hidden-size", "8",
                 "--num-layers", "2", "--batch-size", "2", "--bptt", "8", "--max-steps", "2", "--no-progress"])
    assert code == 0
    return root / "run", data


def test_diagnose_gradients_prints_one_verdict_per_layer_and_plots(tmp_path, capsys):
    out = tmp_path / "grads.png"
    code = main(["diagnose", "gradients", "--cell", "lstm", "--num-layers", "2", "--hidden-size", "6",
                 "--seq-len", "12", "--batch-size", "3", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    verdicts = VERDICT_LINE.findall(stdout)
    assert [layer for layer, _, _ in verdicts] == ["0", "1"], stdout
    assert "spectral radius of W_hh blocks: i " in stdout and "gate saturation" in stdout
    assert len(re.findall(r"^summary layer \d: .* -> (vanishing|healthy|exploding)$", stdout, re.M)) == 2
    assert out.read_bytes()[:8] == PNG


def test_diagnose_gradients_verdict_follows_the_spectral_radius(capsys):
    """A tanh RNN with W_hh rescaled to spectral radius 0.3 vanishes over 40 steps."""
    assert main(["diagnose", "gradients", "--cell", "rnn", "--hidden-size", "8", "--seq-len", "40",
                 "--batch-size", "2", "--spectral-radius", "0.3"]) == 0
    stdout = capsys.readouterr().out
    (layer, verdict, rate), = VERDICT_LINE.findall(stdout)
    assert verdict == "vanishing" and float(rate) < 0.5
    assert "spectral radius of W_hh blocks: h 0.300" in stdout


def test_diagnose_gradients_of_a_trained_run(lm_run, capsys):
    run, data = lm_run
    assert main(["diagnose", "gradients", str(run), "--data", str(data), "--seq-len", "12", "--batch-size", "3",
                 "--warmup", "5"]) == 0
    stdout = capsys.readouterr().out
    assert [layer for layer, _, _ in VERDICT_LINE.findall(stdout)] == ["0", "1"], stdout
    assert "lstm, 2 layer(s), hidden 8, char-level" in stdout and "3 windows of T=12 of " in stdout
    assert "loss = next-token cross-entropy" in stdout
    assert re.search(r"^layer 1: spectral radius of W_hh blocks: i ", stdout, re.M)
    assert re.search(r"^layer 1: gate saturation", stdout, re.M)
    assert (run / "gradients.png").read_bytes()[:8] == PNG  # the default --out with RUN


def test_diagnose_gradients_of_a_trained_run_on_random_tokens(lm_run, tmp_path, capsys):
    run, _ = lm_run
    out = tmp_path / "g.png"
    assert main(["diagnose", "gradients", str(run), "--seq-len", "6", "--batch-size", "2", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "2 windows of T=6 of random tokens after 100 warm-up tokens" in stdout
    assert len(VERDICT_LINE.findall(stdout)) == 2 and out.read_bytes()[:8] == PNG


def test_diagnose_gradients_run_errors(lm_run, tmp_path, capsys):
    run, data = lm_run
    (tmp_path / "tagger").mkdir()
    (tmp_path / "tagger" / "config.json").write_text('{"task": "tag"}')
    cases = [
        ([str(run), "--cell", "gru"], "--cell describes a fresh layer; RUN brings its own trained layers"),
        (["--data", str(data)], "--data needs a trained RUN folder"),
        ([str(tmp_path / "nowhere")], "does not exist"),
        ([str(tmp_path / "tagger")], "is a 'tag' run; diagnose gradients RUN needs a language model"),
        ([str(run), "--data", str(data), "--seq-len", "1000"], "tokens; --warmup 100 + --seq-len 1000 + 1 needs 1101"),
        ([str(run), "--data", str(tmp_path / "missing.txt")], "missing.txt: no such file or directory"),
    ]
    for argv, message in cases:
        assert main(["diagnose", "gradients", *argv]) == 2
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("recurrent: error: ") and message in lines[0], captured.err


@pytest.mark.parametrize("task, baseline", [("adding", "0.1667"), ("copy", "0.6931")])  # copy: 10 ln 8 / 30
def test_bench_memory_table(task, baseline, tmp_path, capsys):
    out = tmp_path / "curves.png"
    code = main(["bench", "memory", "--task", task, "--seq-len", "10", "--cells", "rnn,lstm,gru", "--max-steps",
                 "3", "--hidden-size", "4", "--batch-size", "4", "--eval-size", "8", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    rows = re.findall(r"^(\w+) +(\d+\.\d{4}) +(\d+\.\d{4}) +(\d+) +(\d+\.\d)$", stdout, re.M)
    assert [r[0] for r in rows] == ["rnn", "lstm", "gru"], stdout
    assert all(r[2] == baseline and r[3] == "3" for r in rows), rows
    assert re.search(r"^cell +final_loss +baseline +steps +seconds$", stdout, re.M)
    assert stdout.count("clipping at 1 fired on") == 3
    assert out.read_bytes()[:8] == PNG


@pytest.mark.parametrize("argv, message", [
    (["diagnose", "gradients", "--cell", "transformer"], "--cell must be one of rnn, lstm, gru, got 'transformer'"),
    (["diagnose", "gradients", "--hidden-size", "0"], "--hidden-size must be >= 1, got 0"),
    (["diagnose", "gradients", "--spectral-radius", "-1"], "--spectral-radius must be > 0, got -1.0"),
    (["bench", "memory", "--cells", "rnn,tcn"], "--cells must be a comma-separated list from rnn, lstm, gru"),
    (["bench", "memory", "--task", "sort"], "--task must be one of ('adding', 'copy'), got 'sort'"),
    (["bench", "memory", "--lr", "0"], "--lr must be > 0, got 0.0"),
    (["bench", "memory", "--task", "adding", "--seq-len", "1"], "--seq-len must be >= 2 for the adding task"),
])
def test_bad_flag_values_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2  # returned, not raised: no traceback
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recurrent: error: ") and message in lines[0], captured.err


def test_bad_flag_from_the_shell_has_no_traceback():
    result = subprocess.run([sys.executable, "-m", "recurrent", "bench", "memory", "--cells", "rnn,tcn"],
                            cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    known = ", ".join(registry.NAMES)  # every registered cell
    assert result.stderr.splitlines() == [
        f"recurrent: error: --cells must be a comma-separated list from {known}, got 'rnn,tcn'"]
