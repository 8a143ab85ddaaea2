"""Shared fixtures: a fixed seed, the cells under test, and the example cells of docs/cells.md.

Key: B batch, T time, I input, H hidden, L layers, D directions.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import recurrent as rc

DOCS = Path(__file__).resolve().parents[1] / "docs"

# Tiny problems keep the suite fast; the shared machine has 2 cores, and small ops run fastest on one.
torch.set_num_threads(1)


def python_blocks(path: Path) -> list[str]:
    """The ```python code blocks of a markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def exec_markdown(path: Path) -> dict:
    """Run a markdown file's python blocks in order, in one namespace (as a reader pasting them would)."""
    namespace = {"__name__": f"docs_{path.stem}"}
    for i, block in enumerate(python_blocks(path)):
        exec(compile(block, f"{path}:python-block-{i + 1}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="session")
def cells_doc() -> dict:
    """The namespace left by docs/cells.md: PeepholeLSTMCell, IndRNNCell, ..."""
    return exec_markdown(DOCS / "cells.md")


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# The cells with a hand-derived backward step: the built-ins and the IndRNN example of docs/cells.md.
CELLS = ["elman_tanh", "elman_relu", "lstm", "gru", "indrnn"]


@pytest.fixture
def make_cell(cells_doc):
    """make_cell(name, input_size, hidden_size, bias=True) -> a float64 cell."""

    def make(name: str, input_size: int, hidden_size: int, bias: bool = True) -> rc.Cell:
        factories = {
            "elman_tanh": lambda: rc.ElmanCell(input_size, hidden_size, bias=bias, nonlinearity="tanh"),
            "elman_relu": lambda: rc.ElmanCell(input_size, hidden_size, bias=bias, nonlinearity="relu"),
            "lstm": lambda: rc.LSTMCell(input_size, hidden_size, bias=bias),
            "gru": lambda: rc.GRUCell(input_size, hidden_size, bias=bias),
            "indrnn": lambda: cells_doc["IndRNNCell"](input_size, hidden_size, bias=bias),
        }
        return factories[name]().double()

    return make



# The `qemu` subset: what .ci/run runs again under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512, no native
# bfloat16), besides the tests marked `qemu` in their own files (tests/test_qemu.py). These existing tests exercise
# bf16 autocast, the native C++ kernels and generation, and are fast enough to run emulated; each name selects
# every parametrization of that test function. A name that matches no collected test fails
# tests/test_qemu.py::test_the_qemu_selection_names_existing_tests, so a rename cannot silently drop one.
QEMU_SELECTION = [
    "tests/test_engine.py::test_bptt_under_bf16_autocast_tracks_float32_and_really_runs_bf16",
    "tests/test_layers.py::test_auto_lstm_under_cpu_bf16_autocast_runs_the_native_bptt_loop",
    "tests/test_layers.py::test_forced_fused_under_cpu_bf16_autocast_really_runs_bf16",
    "tests/test_native_lstm.py::test_layer_matches_torch_lstm",
    "tests/test_native_lstm.py::test_bfloat16_products_agree_with_the_python_loop",
    "tests/test_native_lstm.py::test_lm_step_matches_torch_for_odd_sizes_and_either_thread_count",
    "tests/models/test_lm.py::test_generation_is_deterministic_with_a_seed_and_respects_top_k",
    "tests/models/test_lm.py::test_bf16_stepper_stays_close_to_float32",
    "tests/models/test_lm.py::test_the_native_step_equals_the_python_step",
]
UNMATCHED_QEMU_SELECTION = pytest.StashKey[list]()  # names of QEMU_SELECTION that matched nothing, on a full run


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the markers added here must be seen by `-m qemu`
def pytest_collection_modifyitems(config, items):
    matched = set()
    for item in items:
        name = item.nodeid.split("[", 1)[0]
        if name in QEMU_SELECTION:
            item.add_marker(pytest.mark.qemu)
            matched.add(name)
        # `slow` tests (tests/test_install.py: builds a wheel, installs it into a new venv) run only when a -m
        # expression is given, as .ci/run does with `-m slow`; a plain `pytest` / `make test` reports them skipped.
        if "slow" in item.keywords and not config.option.markexpr:
            item.add_marker(pytest.mark.skip(reason="slow: run with -m slow (as .ci/run does)"))
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:  # the whole suite was collected
        config.stash[UNMATCHED_QEMU_SELECTION] = sorted(set(QEMU_SELECTION) - matched)
