"""The embedded default corpus: the Python standard library's own source code.

Every Python installation carries it, so `recurrent train lm` with no data has something real to
learn, and `recurrent generate` then writes Python-looking code. The files are found with
`sysconfig`, read in sorted path order and cut at a fixed size, so a run is reproducible on a
given Python version.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

MAX_CHARS = 2_000_000  # about 2 MB of source: enough for a small char model's few minutes of training
SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__",
             "ensurepip", "turtledemo", "pydoc_data"}  # tests, vendored data, installed packages


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's .py files, in sorted relative-path order."""
    root = Path(sysconfig.get_paths()["stdlib"]) if root is None else root
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith("config-")]  # prune the walk
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_text(max_chars: int = MAX_CHARS, root: Path | None = None) -> str:
    """Concatenated stdlib source, cut at max_chars (files that are not UTF-8 are skipped)."""
    parts, size = [], 0
    for path in stdlib_files(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(text)
        size += len(text)
        if size >= max_chars:
            break
    return "".join(parts)[:max_chars]
