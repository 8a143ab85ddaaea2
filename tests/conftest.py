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

