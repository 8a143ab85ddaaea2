"""Smoke runs of `recurrent diagnose gradients` and `recurrent bench memory` at tiny sizes, through the real
entry point (`recurrent.cli.main.main`), and the one-line exit-2 errors for bad flag values."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from recurrent.cli.main import main

VERDICT_LINE = re.compile(r"^layer (\d+): (vanishing|healthy|exploding) +rate ([\d.e+-]+)/step", re.M)
PNG = b"\x89PNG\r\n\x1a\n"


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
    (["diagnose", "gradients", "--spectral-radius", "-1"], "--spectral-radius must be positive, got -1.0"),
    (["bench", "memory", "--cells", "rnn,tcn"], "--cells must be a comma-separated list from rnn, lstm, gru"),
    (["bench", "memory", "--task", "sort"], "--task must be one of adding, copy, got 'sort'"),
    (["bench", "memory", "--lr", "0"], "--lr must be positive, got 0.0"),
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
    assert result.stderr.splitlines() == [
        "recurrent: error: --cells must be a comma-separated list from rnn, lstm, gru, got 'rnn,tcn'"]
