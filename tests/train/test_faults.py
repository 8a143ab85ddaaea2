"""Fault injection: a `recurrent train lm` run killed again and again (kill -9 at seeded random moments, SIGINT and
SIGTERM), resumed each time with --resume, ends with exactly the model of an uninterrupted run, the recorded best
never goes down, and no temporary file is left behind.

Why bit-identical is possible: last.* (every --checkpoint-every steps, at every evaluation, and on SIGINT/SIGTERM)
holds the model, the optimizer, every RNG, the schedule, the position in the epoch and the carried state, and the
batches of an epoch come from a generator seeded per epoch, so a resumed run repeats the steps after the save
exactly (one thread: the same float sums in the same order). A kill after a best save and before the next last.*
save is the case that used to lower the best: the resumed run re-scores that step, equal, and keeps it.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # about a minute: 20 starts of the CLI, each importing torch

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it", "was", "red", "big"]
    path = tmp_path_factory.mktemp("faults") / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(400)) + "\n")
    return path


def command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "recurrent", "train", "lm", "--data", str(corpus), "--out", str(out),
            "--hidden-size", "48", "--batch-size", "8", "--bptt", "32", "--max-steps", "600", "--eval-every", "50",
            "--checkpoint-every", "9", "--log-every", "10", "--seed", "3", "--precision", "fp32", "--threads", "1",
            "--no-progress", *extra]


def recorded_best(run: Path) -> float | None:
    path = run / "model.json"
    return json.loads(path.read_text())["metrics"]["val_loss"] if path.exists() else None


def trained_steps(run: Path) -> int:
    """Steps logged so far in metrics.jsonl (0 before the first line)."""
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


def start(corpus: Path, run: Path) -> subprocess.Popen:
    resume = ("--resume",) if (run / "last.safetensors").exists() else ("--overwrite",)
    return subprocess.Popen(command(corpus, run, *resume), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_progress(proc: subprocess.Popen, run: Path, beyond: int, timeout: float = 60) -> bool:
    """Wait until the run has logged a step past `beyond` (it is training, not importing); False if it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if trained_steps(run) > beyond:
            return True
        time.sleep(0.02)
    raise AssertionError(f"no progress past step {beyond} in {timeout} s")


def assert_same_model(run: Path, reference: Path) -> None:
    for name in ("last", "model"):
        ours, theirs = load_file(run / f"{name}.safetensors"), load_file(reference / f"{name}.safetensors")
        assert ours.keys() == theirs.keys()
        model_keys = [k for k in theirs if not k.startswith(("rng.", "optim.", "carry."))] if name == "last" else theirs
        for key in model_keys:
            assert ours[key].equal(theirs[key]), f"{name}.safetensors: {key} differs from the uninterrupted run"
    ours, theirs = (json.loads((r / "model.json").read_text())["metrics"] for r in (run, reference))
    assert (ours["step"], ours["val_loss"]) == (theirs["step"], theirs["val_loss"])
    # every evaluation logged once, with the same value, as in the uninterrupted run
    def evaluations(r):
        return [(x["step"], x["val_loss"]) for x in map(json.loads, (r / "metrics.jsonl").read_text().splitlines())
                if x["val_loss"] is not None]
    assert evaluations(run) == evaluations(reference)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "reference"
    subprocess.run(command(corpus, run), env=ENV, check=True, capture_output=True, text=True, timeout=300)
    return run


def test_ten_kill_9s_then_resume_give_the_uninterrupted_model(corpus, reference, tmp_path):
    run, rng = tmp_path / "killed", random.Random(17)
    # ten kills spread over the run by step (not by time, which a fast machine would outrun to the end), each a
    # random fraction of a second past its step: somewhere in a step, an evaluation or a save
    targets = sorted(rng.sample(range(0, 540, 10), 10))
    kills, bests = 0, []
    while True:
        proc = start(corpus, run)
        if kills < 10 and wait_for_progress(proc, run, beyond=max(targets[kills], trained_steps(run))):
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                bests.append(recorded_best(run))
                continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        break
    assert kills == 10
    bests = [b for b in bests if b is not None]
    assert bests == sorted(bests, reverse=True), f"the recorded best went up after a kill: {bests}"
    assert_same_model(run, reference)
    assert not list(run.glob(".*.tmp")), "temporary files were left behind"


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_save_before_exiting_and_resume_exactly(corpus, reference, tmp_path, sig, code):
    run = tmp_path / "signalled"
    proc = start(corpus, run)
    assert wait_for_progress(proc, run, beyond=50)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "continue with --resume" in err
    stopped = json.loads((run / "last.json").read_text())["position"]["step"]
    assert 50 < stopped < 600  # saved where it stopped, not at an earlier periodic save
    proc = start(corpus, run)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert_same_model(run, reference)
