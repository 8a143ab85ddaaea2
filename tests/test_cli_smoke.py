"""Smoke tests of the entry points a newcomer runs first: `recurrent --help` and the gradient-check demo."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recurrent.cli.main import GROUPS, SINGLE, main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_built_command():
    result = run("-m", "recurrent", "--help")
    assert result.returncode == 0, result.stderr
    built = [name for name, modules in GROUPS.items() if modules] + [n for n, m in SINGLE.items() if m]
    assert built, "no command is registered in recurrent/cli/main.py"
    for name in built:
        assert name in result.stdout, f"`recurrent --help` does not list {name!r}:\n{result.stdout}"


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["bench", "throughput", "--no-such-flag"]],
                         ids=["top-level", "sub-command"])
def test_unknown_flag_fails_with_one_line_not_traceback(argv, capsys):
    assert main(argv) == 2  # argparse's error, returned as an exit status
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("recurrent: error: "), stderr
    assert "--help`)" in stderr  # where to look


def test_gradcheck_demo_passes():
    result = run("benchmarks/gradcheck_demo.py")
    assert result.returncode == 0, result.stdout + result.stderr
    for cell in ("ElmanCell (tanh)", "ElmanCell (relu)", "LSTMCell", "GRUCell"):
        assert cell in result.stdout
    assert "all checks passed" in result.stdout
