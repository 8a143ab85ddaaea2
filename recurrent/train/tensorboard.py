"""An optional TensorBoard log of the training loop's metrics lines (`--tensorboard`).

Every line the loop appends to metrics.jsonl is also written here, each number as a scalar at the line's step:

    board = TensorBoard(run_dir)          # events go to <run_dir>/tensorboard/
    board.log({"step": 100, "train_loss": 2.31, "val_loss": None, "f1": 71.5})   # None: nothing to plot
    board.close()

    tensorboard --logdir runs/             # then compare runs side by side

Needs the `tensorboard` package (`pip install 'recurrent[tensorboard]'`); torch's own SummaryWriter writes the
event files.
"""
from __future__ import annotations

import numbers
from pathlib import Path

from recurrent.errors import UserError

EXTRA = "recurrent[tensorboard]"  # pyproject.toml's optional dependency


class TensorBoard:
    """Writes each numeric value of a metrics record as a TensorBoard scalar at record["step"]."""

    def __init__(self, run_dir):
        try:  # torch.utils.tensorboard imports the tensorboard package, which is optional
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(f"--tensorboard needs the tensorboard package: pip install '{EXTRA}'") from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict) -> None:
        """One metrics line: every number but the step itself, nested dicts as "outer/inner" tags."""
        step = record["step"]
        for tag, value in scalars(record):
            if tag != "step":
                self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a line every --log-every steps: cheap, and a live `tensorboard` sees it at once

    def close(self) -> None:
        self.writer.close()


def scalars(record: dict, prefix: str = ""):
    """(tag, value) for each real number in `record` (numpy's too), depth first; None, text, lists and booleans are
    skipped."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from scalars(value, f"{prefix}{key}/")
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield f"{prefix}{key}", value
