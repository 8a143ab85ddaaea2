"""A corpus of bad input for every command (issue 17): each must end in one line on stderr, a non-zero exit and no
traceback, and must leave every file it was given as it was.

Each case is a row of CASES: the command line (run in the case's own folder, so paths are relative), the bytes on
stdin, the files to create there, a change to make to a copied run folder, and a substring of the error line.
Trained run folders (a tiny LM, classifier and translator) are built once, by `python -m recurrent train ...` in a
subprocess, and copied into the case's folder when its command line names them: `lm`, `clf`, `tr`.

Importing torch costs this machine about 2.5 s of CPU, 60 times over for a subprocess per case; so each case runs
`recurrent/__main__.py` (as `python -m recurrent` does) in a fork of this process, which has imported it once: its
own stdin, stdout, stderr, working directory and exit status, as a subprocess has. `test_real_subprocesses` runs a
few of the cases through `python -m recurrent` itself, to keep the fork honest.
"""
from __future__ import annotations

import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file, save_file

from recurrent.checkpoint import CHECKSUM

REPO = Path(__file__).resolve().parents[2]
TEXT = "hello world, said the cat.\nthe dog said nothing.\n" * 30
TSV = "pos\ta fine film\nneg\ta dull film\n" * 10
LATIN1 = "caf\xe9 au lait\n".encode("latin-1")
RUNS = {  # name -> how it is trained (in a folder holding text.txt and train.tsv)
    "lm": ["train", "lm", "--data", "text.txt", "--max-steps", "2", "--hidden-size", "16", "--num-layers", "1",
           "--batch-size", "2", "--bptt", "8", "--eval-every", "2", "--eval-batch-size", "2"],
    "clf": ["train", "classify", "--train", "train.tsv", "--valid", "train.tsv", "--max-steps", "2", "--hidden-size",
            "4", "--embedding-size", "4", "--batch-size", "4"],
    "tr": ["train", "translate", "--task", "reverse", "--task-size", "40", "--max-steps", "2", "--hidden-size", "8",
           "--embedding-size", "8", "--batch-size", "8"],
}


class Case(NamedTuple):
    argv: list[str]
    expect: str  # a substring of the one error line
    stdin: bytes = b""
    files: dict[str, str | bytes] | None = None  # created in the case's folder
    tamper: Callable[[Path], None] | None = None  # changes the case's folder (its copied runs) before the run


def edit_json(path: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A tamper: `change` edits the parsed JSON in place, or returns what to write instead."""
    def tamper(folder: Path) -> None:
        meta = json.loads((folder / path).read_text())
        new = change(meta)
        (folder / path).write_text(json.dumps(meta if new is None else new))
    return tamper


def edit_tensors(path: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    """A tamper: `change` edits the tensors in place; the JSON beside them gets their new checksum, so that what
    is wrong is the tensors, not the pair."""
    def tamper(folder: Path) -> None:
        tensors = load_file(folder / path)
        change(tensors)
        save_file(tensors, folder / path)
        meta_path = (folder / path).with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        meta[CHECKSUM] = hashlib.sha256((folder / path).read_bytes()).hexdigest()
        meta_path.write_text(json.dumps(meta))
    return tamper


def set_model(**fields) -> Callable[[Path], None]:
    return edit_json("lm/model.json", lambda meta: meta["model"].update(fields))


def first_weight_nan(tensors: dict) -> None:
    name = min(tensors)
    tensors[name][...] = float("nan")


def first_weight_wider(tensors: dict) -> None:
    name = next(k for k in sorted(tensors) if tensors[k].dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] + 1)


def classifier_section(meta: dict) -> None:
    meta["model"] = {"vocab_size": 10, "num_classes": 2, "structure": "sequence", "cell": "lstm",
                     "embedding_size": 4, "hidden_size": 4, "num_layers": 1, "bidirectional": True,
                     "pooling": "max", "backend": "auto", "dropout": 0.5}


def shorter_vocab(meta: dict) -> None:
    meta["vocab"]["itos"] = meta["vocab"]["itos"][:-2]


def without_rng(meta: dict) -> None:
    del meta["rng"]


def empty_position(meta: dict) -> None:
    meta["position"] = {}


def make_read_only(folder: Path) -> None:
    (folder / "ro").mkdir()
    (folder / "ro").chmod(0o555)


LM_BASE = ["train", "lm", "--data", "text.txt"]
TRAIN_LM = LM_BASE + ["--out", "out/run", "--max-steps", "1"]
RESUME_LM = RUNS["lm"] + ["--out", "lm", "--resume", "--max-steps", "4"]  # the run's own flags: only last.json is bad


def lm_toml(text: str, expect: str) -> Case:
    """`train lm --config c.toml` with this TOML."""
    return Case(TRAIN_LM + ["--config", "c.toml"], expect, files={"c.toml": text})

TRAIN_CLF = ["train", "classify", "--train", "train.tsv", "--valid", "train.tsv", "--out", "out/run"]
TRAIN_TAG = ["train", "tag", "--train", "train.conll", "--valid", "train.conll", "--out", "out/run"]
TRAIN_TR = ["train", "translate", "--task", "reverse", "--out", "out/run"]
CONLL = "EU B-ORG\nrejects O\n\nPeter B-PER\n"

CASES: dict[str, Case] = {
    # --- train lm: every flag and TOML value by its type and range (issue 17's findings first)
    "lm-weight-decay-nan": Case(TRAIN_LM + ["--weight-decay", "nan"],
                                "--weight-decay must be a finite number >= 0, got nan"),
    "lm-embedding-size-negative": Case(TRAIN_LM + ["--embedding-size", "-3"], "--embedding-size must be >= 0, got -3"),
    "lm-toml-hidden-size-string": lm_toml('hidden_size = "big"\n', "c.toml: hidden_size must be an integer"),
    "lm-max-time-nan": Case(TRAIN_LM + ["--max-time", "nan"], "--max-time must be a finite number >= 0, got nan"),
    "lm-clip-nan": Case(TRAIN_LM + ["--clip", "nan"], "--clip must be a finite number >= 0, got nan"),
    "lm-toml-resume-no": lm_toml('resume = "no"\n', "c.toml: resume must be true or false, got 'no'"),
    "lm-lr-inf": Case(TRAIN_LM + ["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    "lm-lr-zero": Case(TRAIN_LM + ["--lr", "0"], "--lr must be > 0, got 0.0"),
    "lm-dropout-one": Case(TRAIN_LM + ["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    "lm-weight-drop-nan": Case(TRAIN_LM + ["--weight-drop", "nan"], "--weight-drop must be a finite number in [0, 1)"),
    "lm-hidden-size-word": Case(TRAIN_LM + ["--hidden-size", "abc"], "--hidden-size: invalid int value: 'abc'"),
    "lm-hidden-size-zero": Case(TRAIN_LM + ["--hidden-size", "0"], "--hidden-size must be >= 1, got 0"),
    "lm-num-layers-zero": Case(TRAIN_LM + ["--num-layers", "0"], "--num-layers must be >= 1, got 0"),
    "lm-bptt-zero": Case(TRAIN_LM + ["--bptt", "0"], "--bptt must be >= 1, got 0"),
    "lm-seed-negative": Case(TRAIN_LM + ["--seed", "-1"], "--seed must be in [0, "),
    "lm-level-unknown": Case(TRAIN_LM + ["--level", "byte"], "--level: invalid choice: 'byte'"),
    "lm-toml-table": lm_toml("[model]\nhidden_size = 8\n", "c.toml: [model] is a table"),
    "lm-toml-unknown-key": lm_toml("hiden_size = 8\n", "has no field hiden_size"),
    "lm-toml-syntax": lm_toml("hidden_size = \n", "c.toml is not valid TOML"),
    "lm-toml-missing": Case(TRAIN_LM + ["--config", "nope.toml"], "nope.toml: no such config file"),
    "lm-toml-epochs-float": lm_toml("epochs = 2.5\n", "c.toml: epochs must be an integer >= 1, got 2.5"),
    "lm-toml-lr-string": lm_toml('lr = "fast"\n', "c.toml: lr must be a finite number > 0, got 'fast'"),
    "lm-toml-vocab-size-negative": lm_toml("vocab_size = -1\n", "c.toml: vocab_size must be >= 0, got -1"),
    "lm-data-missing": Case(TRAIN_LM[:2] + ["--data", "nope.txt", "--out", "out/run"], "nope.txt: no such file"),
    "lm-data-latin1": Case(TRAIN_LM[:2] + ["--data", "l1.txt", "--out", "out/run"], "l1.txt is not UTF-8",
                           files={"l1.txt": LATIN1}),
    "lm-threads-negative": Case(TRAIN_LM + ["--threads", "-1"], "--threads must be >= 0"),
    "lm-unknown-flag": Case(TRAIN_LM + ["--hidden", "8"], "unrecognized arguments: --hidden 8"),
    # others' work in parallel: the run folder and --resume
    "lm-out-holds-a-run": Case(LM_BASE + ["--out", "lm"], "--overwrite"),
    "lm-out-is-a-file": Case(LM_BASE + ["--out", "text.txt", "--max-steps", "1"], "text.txt"),
    "lm-out-read-only": Case(LM_BASE + ["--out", "ro/run", "--max-steps", "1"], "ro/run", tamper=make_read_only),
    "lm-resume-no-rng": Case(RESUME_LM, "rng", tamper=edit_json("lm/last.json", without_rng)),
    "lm-resume-empty-position": Case(RESUME_LM, "position", tamper=edit_json("lm/last.json", empty_position)),
    "lm-resume-other-model": Case(LM_BASE + ["--out", "lm", "--resume", "--hidden-size", "32"],
                                  "cannot resume: last.safetensors holds (19, 16) for embedding.weight"),
    # --- train classify, tag, translate
    "classify-unk-replace": Case(TRAIN_CLF + ["--unk-replace", "2"], "--unk-replace must be in [0, 1], got 2.0",
                                 files={"train.tsv": TSV}),
    "classify-long-field-then-bad-row": Case(
        TRAIN_CLF[:2] + ["--train", "big.tsv", "--valid", "big.tsv", "--out", "out/run"],
        "big.tsv:3: expected 2 columns, got 1",
        files={"big.tsv": "pos\t" + "word " * 30_000 + "\nneg\tfine\nno label column here\n"}),
    "classify-format-unknown": Case(TRAIN_CLF + ["--format", "xml"], "--format: invalid choice: 'xml'",
                                    files={"train.tsv": TSV}),
    "classify-batch-size-zero": Case(TRAIN_CLF + ["--batch-size", "0"], "--batch-size must be >= 1, got 0",
                                     files={"train.tsv": TSV}),
    "classify-train-missing": Case(TRAIN_CLF, "train.tsv: no such file"),
    "classify-embedding-size-negative": Case(TRAIN_CLF + ["--embedding-size", "-3"],
                                             "--embedding-size must be >= 1, got -3", files={"train.tsv": TSV}),
    "classify-patience-negative": Case(TRAIN_CLF + ["--patience", "-1"], "--patience must be >= 0, got -1",
                                       files={"train.tsv": TSV}),
    "tag-dropout-nan": Case(TRAIN_TAG + ["--dropout", "nan"], "--dropout must be a finite number in [0, 1)",
                            files={"train.conll": CONLL}),
    "tag-field-unknown": Case(TRAIN_TAG + ["--field", "lemmas"], "--field: invalid choice: 'lemmas'"),
    "tag-char-hidden-size-zero": Case(TRAIN_TAG + ["--char-hidden-size", "0"], "--char-hidden-size must be >= 1",
                                      files={"train.conll": CONLL}),
    "translate-task-with-files": Case(TRAIN_TR + ["--src", "a.txt"], "--task reverse makes its own data: --src"),
    "translate-task-unknown": Case(["train", "translate", "--task", "rot13", "--out", "out/run"],
                                   "--task must be one of ('reverse', 'copy', 'sort'), got 'rot13'"),
    "translate-teacher-forcing": Case(TRAIN_TR + ["--teacher-forcing", "1.5"],
                                      "--teacher-forcing must be in [0, 1], got 1.5"),
    "translate-label-smoothing-one": Case(TRAIN_TR + ["--label-smoothing", "1"],
                                          "--label-smoothing must be in [0, 1), got 1.0"),
    "translate-hidden-size-odd": Case(TRAIN_TR + ["--hidden-size", "7"], "hidden_size must be even"),
    "translate-toml-synthetic-number": Case(["train", "translate", "--config", "c.toml", "--out", "out/run"],
                                            "c.toml: synthetic must be a string, got 3",
                                            files={"c.toml": "synthetic = 3\n"}),
    "translate-task-symbols": Case(TRAIN_TR + ["--task-symbols", "1"], "--task-symbols must be in [2, 1000], got 1"),
    "translate-no-data": Case(["train", "translate", "--out", "out/run"], "give --src, --tgt, --valid-src"),
    "memory-seq-len-zero": Case(["train", "memory", "--seq-len", "0", "--out", "out/run"], "--seq-len must be"),
    "forecast-no-data": Case(["train", "forecast", "--out", "out/run"], "--data is required"),
    "forecast-horizon-zero": Case(["train", "forecast", "--data", "s.csv", "--horizon", "0", "--out", "out/run"],
                                  "--horizon must be >= 1, got 0", files={"s.csv": "id,timestamp,value\n"}),
    "forecast-bad-value": Case(["train", "forecast", "--data", "s.csv", "--horizon", "2", "--out", "out/run"],
                               "s.csv:3: value 'abc' is not a number",
                               files={"s.csv": "id,timestamp,value\na,2024-01-01 00:00,1\na,2024-01-01 01:00,abc\n"}),
    "forecast-bad-lags": Case(["train", "forecast", "--data", "s.csv", "--lags", "x", "--out", "out/run"],
                              "--lags must be auto, none or comma-separated integers", files={"s.csv": "id,value\n"}),
    "forecast-bad-quantile-levels": Case(["train", "forecast", "--data", "s.csv", "--architecture", "mqrnn",
                                          "--quantile-levels", "0.5,2", "--out", "out/run"],
                                         "--quantile-levels: quantile levels must lie in (0, 1), got [0.5, 2.0]",
                                         files={"s.csv": "id,value\n"}),
    "speech-no-data": Case(["train", "speech", "--out", "out/run"], "--train and --valid are required"),
    # --- forecast, serve, export, transcribe
    "forecast-missing-run": Case(["forecast", "nope", "--data", "s.csv", "--out", "f.csv"], "nope",
                                 files={"s.csv": "id,value\na,1\n"}),
    "forecast-bad-quantiles": Case(["forecast", "nope", "--data", "s.csv", "--quantiles", "0.5,1.5", "--out", "f.csv"],
                                   "1.5", files={"s.csv": "id,value\na,1\n"}),
    "serve-missing-run": Case(["serve", "nope"], "nope"),
    "serve-port-negative": Case(["serve", "nope", "--port", "-1"], "--port"),
    "export-missing-run": Case(["export", "nope", "--format", "onnx", "--out", "m.onnx"], "nope"),
    "export-bad-format": Case(["export", "nope", "--format", "pickle", "--out", "m.pkl"], "--format"),
    "transcribe-missing-run": Case(["transcribe", "nope", "a.wav"], "nope"),
    # --- generate
    "generate-temperature-nan": Case(["generate", "lm", "--temperature", "nan"],
                                     "--temperature must be a finite number > 0, got nan"),
    "generate-temperature-zero": Case(["generate", "lm", "--temperature", "0"], "--temperature must be > 0, got 0.0"),
    "generate-top-k-negative": Case(["generate", "lm", "--top-k", "-1"], "--top-k must be >= 0, got -1"),
    "generate-top-p-above-one": Case(["generate", "lm", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    "generate-top-p-nan": Case(["generate", "lm", "--top-p", "nan"], "--top-p must be a finite number in (0, 1]"),
    "generate-length-negative": Case(["generate", "lm", "--length", "-3"], "--length must be >= 0, got -3"),
    "generate-beam-zero": Case(["generate", "lm", "--beam", "0"], "--beam must be >= 1, got 0"),
    "generate-two-primes": Case(["generate", "lm", "--prime", "a", "--prime-file", "p.txt"],
                                "give --prime or --prime-file, not both", files={"p.txt": "a"}),
    "generate-prime-file-latin1": Case(["generate", "lm", "--prime-file", "p.txt"], "p.txt is not UTF-8",
                                       files={"p.txt": LATIN1}),
    "generate-missing-run": Case(["generate", "nope"], "nope"),
    "generate-condition-unconditioned": Case(["generate", "lm", "--condition", "pos"], "trained without a condition"),
    "generate-device-unknown": Case(["generate", "lm", "--device", "tpu"], "tpu"),
    "generate-beam-with-temperature": Case(["generate", "lm", "--beam", "2", "--temperature", "0.5"],
                                           "cannot apply"),
    # crafted run folders (others' load-time checks, in parallel)
    "generate-model-json-vocab-2e7": Case(["generate", "lm"], "vocab_size", tamper=set_model(vocab_size=20_000_000)),
    "generate-model-json-layers-1e6": Case(["generate", "lm"], "num_layers", tamper=set_model(num_layers=1_000_000)),
    "generate-model-json-hidden-1e9": Case(["generate", "lm"], "hidden_size",
                                           tamper=set_model(hidden_size=1_000_000_000)),
    "generate-model-json-42": Case(["generate", "lm"], "model.json", tamper=edit_json("lm/model.json", lambda m: 42)),
    "generate-classifier-section": Case(["generate", "lm"], "model.json",
                                        tamper=edit_json("lm/model.json", classifier_section)),
    "generate-tensor-shape": Case(["generate", "lm"], "shape",
                                  tamper=edit_tensors("lm/model.safetensors", first_weight_wider)),
    "generate-vocab-shorter": Case(["generate", "lm"], "vocab", tamper=edit_json("lm/model.json", shorter_vocab)),
    "generate-nan-weights": Case(["generate", "lm"], "NaN",
                                 tamper=edit_tensors("lm/model.safetensors", first_weight_nan)),
    # --- evaluate
    "evaluate-lm-no-data": Case(["evaluate", "lm"], "needs --data FILE"),
    "evaluate-batch-size-zero": Case(["evaluate", "lm", "--data", "text.txt", "--batch-size", "0"],
                                     "--batch-size must be >= 1, got 0"),
    "evaluate-bptt-zero": Case(["evaluate", "lm", "--data", "text.txt", "--bptt", "0"], "--bptt must be >= 1, got 0"),
    "evaluate-data-missing": Case(["evaluate", "lm", "--data", "nope.txt"], "nope.txt: no such file"),
    "evaluate-data-latin1": Case(["evaluate", "lm", "--data", "l1.txt"], "l1.txt is not UTF-8",
                                 files={"l1.txt": LATIN1}),
    "evaluate-classifier-no-data": Case(["evaluate", "clf"], "needs --data FILE"),
    "evaluate-not-a-run": Case(["evaluate", "text.txt", "--data", "text.txt"], "text.txt"),
    # --- predict and translate: stdin
    "predict-lm-run": Case(["predict", "lm"], "predict works on classify and tag runs"),
    "predict-latin1-stdin": Case(["predict", "clf"], "stdin is not UTF-8: invalid byte 0xe9 at offset 15 (line 2)",
                                 stdin=b"a fine film\n" + LATIN1),
    "predict-batch-size-zero": Case(["predict", "clf", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    "translate-latin1-stdin": Case(["translate", "tr"], "stdin is not UTF-8: invalid byte 0xe9 at offset 3 (line 1)",
                                   stdin=LATIN1),
    "translate-beam-zero": Case(["translate", "tr", "--beam", "0"], "--beam must be >= 1, got 0"),
    "translate-alpha-nan": Case(["translate", "tr", "--alpha", "nan"], "--alpha must be a finite number >= 0, got nan"),
    "translate-plot-out-folder": Case(["translate", "tr", "--plot-attention", "1 2 3", "--out", "out"],
                                      "--out must be a .png file name, got 'out'"),
    "translate-plot-out-no-suffix": Case(["translate", "tr", "--plot-attention", "1 2 3", "--out", "out/attn"],
                                         "--out must be a .png file name, got 'out/attn'"),
    "translate-lm-run": Case(["translate", "lm"], "translate"),
    # --- diagnose
    "gradients-out-folder": Case(["diagnose", "gradients", "--out", "out", "--seq-len", "4"],
                                 "--out must be a .png file name, got 'out'"),
    "gradients-seq-len-one": Case(["diagnose", "gradients", "--seq-len", "1"], "--seq-len must be >= 2, got 1"),
    "gradients-vanish-below": Case(["diagnose", "gradients", "--vanish-below", "2"],
                                   "--vanish-below must be in (0, 1), got 2.0"),
    "gradients-spectral-radius-nan": Case(["diagnose", "gradients", "--spectral-radius", "nan"],
                                          "--spectral-radius must be a finite number > 0, got nan"),
    "gradients-run-with-fresh-flag": Case(["diagnose", "gradients", "lm", "--hidden-size", "8"],
                                          "--hidden-size describes a fresh layer"),
    "gradients-classifier-run": Case(["diagnose", "gradients", "clf"], "is a 'classify' run"),
    "activations-text-missing": Case(["diagnose", "activations", "lm", "--text", "nope.txt", "--out", "out/u.html"],
                                     "nope.txt: no such file"),
    "activations-units-zero": Case(["diagnose", "activations", "lm", "--text", "text.txt", "--units", "0"],
                                   "--units must be >= 1, got 0"),
    "activations-out-not-html": Case(["diagnose", "activations", "lm", "--text", "text.txt", "--out", "out/u.txt"],
                                     "--out must be a .html file name"),
    # --- bench, info, the top level
    "throughput-hidden-size-zero": Case(["bench", "throughput", "--hidden-size", "0"], "--hidden-size must be >= 1"),
    "throughput-cells-unknown": Case(["bench", "throughput", "--cells", "tcn"], "--cells must be"),
    "memory-lr-nan": Case(["bench", "memory", "--lr", "nan"], "--lr"),
    "info-unknown-flag": Case(["info", "--yaml"], "unrecognized arguments: --yaml"),
    "no-command": Case([], "required: COMMAND"),
    "unknown-command": Case(["fit"], "invalid choice: 'fit'"),
}


# --- running a command ------------------------------------------------------------------------------------------


class Result(NamedTuple):
    code: int  # the exit status; negative: killed by that signal
    out: str
    err: str


def run_forked(argv: list[str], stdin: bytes, cwd: Path, timeout: float = 60.0) -> Result:
    """`python -m recurrent argv` in a fork of this process: recurrent/__main__.py run as __main__, with its own
    stdin, stdout, stderr and working directory; an uncaught exception prints its traceback, as Python does."""
    with tempfile.TemporaryDirectory() as io_dir:
        paths = {name: Path(io_dir) / name for name in ("in", "out", "err")}
        paths["in"].write_bytes(stdin)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.chdir(cwd)
                for fd, name, flags in ((0, "in", os.O_RDONLY), (1, "out", os.O_WRONLY), (2, "err", os.O_WRONLY)):
                    os.dup2(os.open(paths[name], flags | (os.O_CREAT if fd else 0), 0o600), fd)
                sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the child's own streams, as Python opens them)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                sys.argv = ["recurrent", *argv]
                try:
                    runpy.run_module("recurrent", run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except BaseException:  # noqa: BLE001 (what the interpreter does with an uncaught exception)
                    traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, 9)
            done = os.waitpid(pid, 0)
        read = {name: paths[name].read_bytes().decode("utf-8", "replace") for name in ("out", "err")}
        return Result(os.waitstatus_to_exitcode(done[1]), read["out"], read["err"])


def run_subprocess(argv: list[str], stdin: bytes, cwd: Path, timeout: float = 120.0) -> Result:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "recurrent", *argv], input=stdin, cwd=cwd, env=env,
                            capture_output=True, timeout=timeout, check=False)
    return Result(result.returncode, result.stdout.decode("utf-8", "replace"),
                  result.stderr.decode("utf-8", "replace"))


# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder of tiny trained runs (lm, clf, tr), each trained by `python -m recurrent train ...`."""
    folder = tmp_path_factory.mktemp("trained")
    (folder / "text.txt").write_text(TEXT)
    (folder / "train.tsv").write_text(TSV)
    for name, argv in RUNS.items():
        result = run_subprocess([*argv, "--out", name, "--no-progress"], b"", folder)
        assert result.code == 0, result.err
    return folder


def prepare(case: Case, trained: Path, folder: Path) -> None:
    """The case's folder: out/ (where a command may write), text.txt, the runs its command line names, its files."""
    (folder / "out").mkdir()
    (folder / "text.txt").write_text(TEXT)
    for name in RUNS:
        if name in case.argv:
            shutil.copytree(trained / name, folder / name)
    for name, content in (case.files or {}).items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.tamper is not None:
        case.tamper(folder)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file and folder but out/ and what it holds, and the .lock a trainer takes in the run
    folder it resumes (it records the pid of the process holding it, nothing saved)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))
            if p.relative_to(folder).parts[0] != "out" and p.name != ".lock"}


def check_one_line(result: Result, expect: str) -> None:
    lines = [line for line in result.err.splitlines() if not line.startswith("recurrent: warning")]
    assert "Traceback" not in result.err + result.out, result.err
    assert result.code > 0, f"exit status {result.code}: {result.err}"
    assert len(lines) == 1 and lines[0].strip(), result.err
    assert expect in lines[0], lines[0]


# --- the tests ----------------------------------------------------------------------------------------------


def test_the_corpus_covers_every_command():
    commands = {" ".join(case.argv[:2]) if case.argv[:1] in (["train"], ["diagnose"], ["bench"])
                else " ".join(case.argv[:1]) for case in CASES.values()}
    from recurrent.registry import TASKS

    assert {f"train {task}" for task in TASKS} | {"generate", "evaluate", "predict", "translate", "forecast",
                                                  "serve", "export", "transcribe",
                                                  "diagnose gradients", "diagnose activations", "bench throughput",
                                                  "bench memory", "info"} <= commands
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_changes_nothing(name, trained, tmp_path):
    case = CASES[name]
    if case.tamper is make_read_only and os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    prepare(case, trained, tmp_path)
    before = snapshot(tmp_path)
    result = run_forked(case.argv, case.stdin, tmp_path)
    check_one_line(result, case.expect)
    assert snapshot(tmp_path) == before, "a file outside out/ changed"


@pytest.mark.parametrize("name", ["lm-weight-decay-nan", "lm-toml-resume-no", "generate-temperature-nan",
                                  "translate-latin1-stdin"])
def test_real_subprocesses(name, trained, tmp_path):
    """The same checks through `python -m recurrent` itself, for a few cases."""
    case = CASES[name]
    prepare(case, trained, tmp_path)
    before = snapshot(tmp_path)
    check_one_line(run_subprocess(case.argv, case.stdin, tmp_path), case.expect)
    assert snapshot(tmp_path) == before
