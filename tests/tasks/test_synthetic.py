"""Synthetic translation tasks: the targets are right, generation is seeded, and both views agree."""
from __future__ import annotations

import pytest
import torch

from recurrent.tasks.synthetic import SyntheticTask, exact_match


@pytest.mark.parametrize("name, expected", [("reverse", [2, 0, 1, 1]), ("copy", [1, 1, 0, 2]),
                                            ("sort", [0, 1, 1, 2])])
def test_targets(name, expected):
    assert SyntheticTask(name).target([1, 1, 0, 2]) == expected


def test_seeded_lengths_in_range_and_views_agree():
    task = SyntheticTask("reverse", num_symbols=5, min_len=2, max_len=6)
    first, second = (task.sample(50, torch.Generator().manual_seed(4)) for _ in range(2))
    assert first == second and {len(s) for s, _ in first} <= set(range(2, 7))
    src, tgt = task.lines(3, torch.Generator().manual_seed(4))
    assert [line.split()[::-1] for line in src] == [line.split() for line in tgt]
    batch = task.batch(3, torch.Generator().manual_seed(4))
    assert [[task.symbols[i - 4] for i in row if i > 3] for row in batch.src.tolist()] == [s.split() for s in src]


def test_bad_arguments_and_exact_match():
    with pytest.raises(ValueError, match="task must be one of"):
        SyntheticTask("shuffle")
    with pytest.raises(ValueError, match="min_len"):
        SyntheticTask("copy", min_len=5, max_len=3)
    assert exact_match([[1, 2], [3]], [[1, 2], [4]]) == 0.5
