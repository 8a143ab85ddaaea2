"""The README's Python examples run as written: every ```python block, in order, in one namespace (as a reader
pastes them into one session), in a temporary folder holding a small input.txt. Only the example's budget and
size are cut down (60 s and 256 units become 3 steps and 16 units), so the test takes seconds."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SHRINK = {"max_time=60": "max_steps=3", "hidden_size=256": "hidden_size=16"}


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def test_every_python_example_in_the_readme_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks()
    assert len(blocks) >= 6, "the README lost its Python examples"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "input.txt").write_text("ROMEO: But soft, what light through yonder window breaks?\n" * 300)
    namespace: dict = {}
    for n, block in enumerate(blocks, start=1):
        for old, new in SHRINK.items():
            block = block.replace(old, new)
        exec(compile(block, f"README.md python block {n}", "exec"), namespace)
    out = capsys.readouterr().out
    assert "torch.Size([3, 5, 32])" in out  # block 1's print of out.shape: (B, T, D*H)
    assert "bptt (forced by backend='bptt')" in out and "bptt (LeakyCell writes only forward: its step traced and compiled to C" in out
