"""Run folders: what a `recurrent train ...` command writes, and how later commands recognise it.

Every run folder has a config.json whose "task" names what was trained ("lm", "classify", "tag",
"translate"); `evaluate`, `predict` and `generate` dispatch on it.
"""
from __future__ import annotations

import json
from pathlib import Path

from recurrent.errors import UserError


def read_task(run_dir) -> str:
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise UserError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run folder: it has no config.json")
    try:
        task = json.loads(path.read_text(encoding="utf-8")).get("task")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(task, str):
        raise UserError(f"{path} names no task (expected a \"task\" key such as \"lm\")")
    return task
