"""Feature vectors, one row per example: an (N, F) .npy array or a CSV of N rows (conditional generation's
conditions; any task that reads a vector per line)."""
from __future__ import annotations

import numpy as np

from recurrent.data import read_text
from recurrent.errors import UserError


def read_features(path, width: int = 0) -> np.ndarray:
    """An (N, F) .npy array, or a CSV of N rows of F numbers -> float32 (N, F). Errors name file:row (from 1): a
    value that is not a number or not finite, a row whose width is not `width` (0: the first row's)."""
    if str(path).endswith(".npy"):
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read an .npy array: {e}") from None
        if rows.ndim != 2:
            raise UserError(f"{path}: expected an (N, F) array, got shape {rows.shape}")
    else:
        rows = [text.split(",") for text in read_text(path).splitlines()]
    width = width or len(rows[0])
    for line, row in enumerate(rows, 1):
        try:
            row = np.asarray(row, dtype=np.float32)
        except ValueError:
            raise UserError(f"{path}:{line}: expected comma-separated numbers, got {','.join(row)[:60]!r}") from None
        if len(row) != width:
            raise UserError(f"{path}:{line}: {len(row)} features, expected {width}")
        if not np.isfinite(row).all():
            raise UserError(f"{path}:{line}: a feature is not finite (NaN or inf)")
    return np.asarray(rows, dtype=np.float32)
