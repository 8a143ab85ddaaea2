"""Smoke runs of `recurrent train lm`, `recurrent generate` and `recurrent evaluate` at tiny sizes: train through
the real entry point (`recurrent.cli.main.main`), generate and evaluate in a subprocess as a user would, and the
one-line exit-2 errors for bad input."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from recurrent.cli.main import main

TEXT = "le café est chaud\n世界 est grand\nthe cat sat on the mat\n" * 30


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    code = main(["train", "lm", "--data", str(data), "--out", str(out), "--hidden-size", "16", "--num-layers", "1",
                 "--batch-size", "4", "--bptt", "8", "--max-steps", "2", "--no-progress"])
    assert code == 0
    return out


def recurrent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recurrent", *args], capture_output=True, timeout=60)


def test_train_lm_writes_the_run_folder(run):
    assert {"model.safetensors", "metrics.jsonl", "loss.png", "config.json"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["max_steps"] == 2 and config["model"]["hidden_size"] == 16


def test_generate_is_seeded_streamed_and_unicode_safe(run):
    args = [str(run), "--prime", "世界 é", "--length", "60", "--temperature", "0.8", "--top-k", "5", "--seed", "7"]
    first, second = recurrent("generate", *args), recurrent("generate", *args)
    assert first.returncode == 0, first.stderr.decode()
    text = first.stdout.decode("utf-8")
    assert first.stdout == second.stdout
    assert text.startswith("世界 é") and len(text) == len("世界 é") + 60 + 1  # prime, 60 chars, final newline
    other = recurrent("generate", *args[:-1], "8")
    assert other.stdout != first.stdout


def test_evaluate_prints_bits_per_char(run, data):
    result = recurrent("evaluate", str(run), "--data", str(data))
    assert result.returncode == 0, result.stderr.decode()
    assert re.fullmatch(r"test bits/char \d+\.\d{3}\ntest unseen in training: no characters\n",
                        result.stdout.decode())


def test_toml_config_fills_flags_and_explicit_flags_win(data, tmp_path, capsys):
    toml = tmp_path / "lm.toml"
    toml.write_text('hidden_size = 8\nnum_layers = 1\nbatch_size = 4\nbptt = 6\nmax_steps = 1\nlr = 0.5\n')
    out = tmp_path / "run"
    assert main(["train", "lm", "--config", str(toml), "--data", str(data), "--out", str(out), "--lr", "0.01",
                 "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["lr"] == 0.01 and config["bptt"] == 6 and config["model"]["hidden_size"] == 8


def test_threads_flag_sets_torch_threads_and_is_not_a_config_field(data, tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["train", "lm", "--data", str(data), "--out", str(tmp_path / "run"), "--threads", "1",
                     "--hidden-size", "8", "--max-steps", "1", "--no-progress"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "threads" not in json.loads((tmp_path / "run" / "config.json").read_text())


@pytest.mark.parametrize("argv, message", [
    (["train", "lm", "--data", "{data}", "--bptt", "0"], "bptt must be >= 1, got 0"),
    (["train", "lm", "--data", "{data}", "--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
    (["train", "lm", "--data", "{data}", "--threads", "-1"], "--threads must be >= 0 (0: torch's default), got -1"),
    (["train", "lm", "--data", "{missing}"], "no such file or directory"),
    (["train", "lm", "--data", "{latin1}"], "is not UTF-8"),
    (["train", "lm", "--data", "{empty}"], "is empty"),
    (["generate", "{missing}"], "no checkpoint"),
    (["generate", "{run}", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["evaluate", "{run}", "--data", "{missing}"], "no such file or directory"),
])
def test_bad_input_is_one_line_exit_2(argv, message, run, data, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "empty.txt").write_bytes(b"")
    paths = {"data": data, "run": run, "missing": tmp_path / "missing.txt", "latin1": tmp_path / "latin1.txt",
             "empty": tmp_path / "empty.txt"}
    argv = [a.format(**paths) for a in argv] + (["--out", str(tmp_path / "out")] if argv[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recurrent: error: ") and message in err, err
    assert "Traceback" not in err


def test_bad_flag_in_a_subprocess_is_one_line_without_traceback(run):
    result = recurrent("generate", str(run), "--length", "-3")
    err = result.stderr.decode()
    expected = "recurrent: error: --length must be >= 0, got -3 (see `recurrent generate --help`)\n"
    assert result.returncode == 2 and err == expected


def test_a_closed_pipe_ends_generate_quietly(run):
    """`recurrent generate ... | head -c 10`: the reader leaves early; no traceback, exit 141 as for SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "recurrent", "generate", str(run), "--length", "200000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
