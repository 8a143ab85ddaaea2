"""The CLI end to end, in-process: train a tiny LM at each --precision, generate from it with and without --bf16.

These tests are marked `qemu`: besides running in the normal suite, .ci/run runs the `qemu` subset again under
`qemu-x86_64 -cpu Haswell`, an AVX2 CPU without AVX-512 (torch's CPU capability there is AVX2, and oneDNN has no
native bfloat16), so the fp32 and emulated-bf16 paths are exercised whatever CPU CI has. Under qemu-user a
subprocess that execs a binary runs natively, not emulated, so the CLI runs in this process through
`recurrent.cli.main.main`, never as `recurrent ...` in a subprocess. Everything is tiny: under qemu torch is
10-50x slower.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from recurrent.cli.main import main
from recurrent.precision import choose

pytestmark = pytest.mark.qemu

PRECISIONS = ["auto", "fp32", "bf16"]
# bf16 autocast against fp32 after 20 identical steps (same seed, data and windows) of this tiny model: the final
# validation losses (about 2.90 nats) differed by 4e-5 nats, natively on an AVX2 CPU and under qemu -cpu Haswell
# alike; 0.02 leaves room for CPUs whose bf16 kernels round differently, and still catches a bf16 path that
# trains or evaluates wrongly (tenths of a nat).
BF16_TOLERANCE = 0.02
# Tiny, for speed: 2 layers of 32, batch 4, windows of 16; one evaluation at the end.
TRAIN = ["--max-steps", "20", "--hidden-size", "32", "--batch-size", "4", "--bptt", "16", "--eval-batch-size", "4",
         "--seed", "0", "--no-progress", "--max-time", "120"]

WORDS = ("the model reads each token and keeps a state that carries what it has seen so far through time while "
         "gradients flow back along the same path def return class import self value none true false for in if "
         "else with as lambda yield").split()


@dataclass
class Run:
    code: int
    out: str
    err: str
    path: Path

    def final_val_loss(self) -> float:
        rows = [json.loads(line) for line in (self.path / "metrics.jsonl").read_text().splitlines() if line]
        return next(r["val_loss"] for r in reversed(rows) if r["val_loss"] is not None)


def cli(*argv: str) -> tuple[int, str, str]:
    """`recurrent ARGV...` run in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 20 KB of Python-ish lines from a seeded generator: reading and encoding it takes no time."""
    rng = random.Random(0)
    lines = [" " * rng.choice((0, 4, 8)) + " ".join(rng.choices(WORDS, k=rng.randint(3, 9))) + rng.choice(":.,(")
             for _ in range(450)]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    assert 15_000 < path.stat().st_size < 25_000
    return path


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """trained(precision) -> the Run of `recurrent train lm --precision P` on the corpus; each is trained once."""
    root, runs = tmp_path_factory.mktemp("runs"), {}

    def get(precision: str) -> Run:
        if precision not in runs:
            path = root / f"run_{precision}"
            code, out, err = cli("train", "lm", "--data", corpus, "--out", path, "--precision", precision, *TRAIN)
            runs[precision] = Run(code, out, err, path)
        return runs[precision]

    return get


@pytest.mark.parametrize("precision", PRECISIONS)
def test_train_lm_at_each_precision(trained, precision):
    run = trained(precision)
    assert run.code == 0, run.err
    assert "best valid loss" in run.out
    loss = run.final_val_loss()
    vocab_size = json.loads((run.path / "model.json").read_text())["model"]["vocab_size"]
    assert math.isfinite(loss) and loss < math.log(vocab_size), loss  # better than uniform after 20 steps
    used = json.loads((run.path / "config.json").read_text())["precision_used"]
    assert used["requested"] == precision
    assert used["used"] == (choose("auto", "cpu").name if precision == "auto" else precision)
    if precision == "auto" and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2") \
            and "ATEN_CPU_CAPABILITY" not in os.environ:
        assert used["used"] == "fp32", used  # no AVX-512, so no AVX512-BF16 or AMX (qemu -cpu Haswell): fp32


@pytest.mark.parametrize("flags", [[], ["--bf16"]], ids=["no-flag", "bf16-flag"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_generate_from_a_run(trained, precision, flags):
    run = trained(precision)
    assert run.code == 0, run.err
    code, out, err = cli("generate", run.path, "--length", "40", "--seed", "1", *flags)
    assert code == 0, err
    assert len(out.strip()) >= 10, out  # 40 characters sampled from a char LM: mostly letters and spaces


def test_bf16_final_valid_loss_is_close_to_fp32(trained):
    fp32, bf16 = trained("fp32"), trained("bf16")
    assert fp32.code == 0 and bf16.code == 0, (fp32.err, bf16.err)
    a, b = fp32.final_val_loss(), bf16.final_val_loss()
    assert abs(a - b) < BF16_TOLERANCE, f"fp32 {a:.4f} vs bf16 {b:.4f} nats/token"


def test_the_qemu_selection_names_existing_tests(request):
    """Each name in conftest's QEMU_SELECTION matched a collected test (checked when the whole suite is collected,
    as `make test` and .ci/run's qemu run do)."""
    from conftest import UNMATCHED_QEMU_SELECTION

    unmatched = request.config.stash.get(UNMATCHED_QEMU_SELECTION, None)
    if unmatched is None:
        pytest.skip("only a part of the suite was collected")
    assert not unmatched, f"tests/conftest.py QEMU_SELECTION names tests that do not exist: {unmatched}"
