"""TensorBoard log of the metrics lines: events read back with tensorboard's own EventAccumulator."""
import sys

import numpy as np
import pytest

from recurrent.errors import UserError
from recurrent.train.tensorboard import TensorBoard

RECORDS = [  # as the loop writes them to metrics.jsonl
    {"step": 10, "epoch": 0, "lr": 0.001, "train_loss": 2.5, "val_loss": None, "tokens_s": 1234.5,
     "clip_fraction": 0.25},
    {"step": 20, "epoch": 1, "lr": 0.0005, "train_loss": 1.75, "val_loss": 1.9, "tokens_s": 1300.0,
     "clip_fraction": 0.0, "accuracy": np.float64(0.8125), "correct": np.int64(13), "macro_f1": 0.7,
     "unseen": {"words": 3, "places": 12},
     "note": "text is skipped", "early_stop": True, "labels": [1, 2]},
]


def read_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def f32(x: float) -> float:
    """TensorBoard stores scalars as float32."""
    return float(np.float32(x))


def test_every_number_is_a_scalar_at_its_step(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed: pip install 'recurrent[tensorboard]'")
    board = TensorBoard(tmp_path)
    for record in RECORDS:
        board.log(record)
    board.close()
    expected = {
        "epoch": [(10, 0.0), (20, 1.0)],
        "lr": [(10, f32(0.001)), (20, f32(0.0005))],
        "train_loss": [(10, 2.5), (20, 1.75)],
        "val_loss": [(20, f32(1.9))],  # None at step 10: no point
        "tokens_s": [(10, 1234.5), (20, 1300.0)],
        "clip_fraction": [(10, 0.25), (20, 0.0)],
        "accuracy": [(20, 0.8125)],
        "correct": [(20, 13.0)],
        "macro_f1": [(20, f32(0.7))],
        "unseen/words": [(20, 3.0)],
        "unseen/places": [(20, 12.0)],
    }  # no "step", "note", "early_stop" (a boolean) or "labels" (a list)
    assert read_scalars(tmp_path) == expected


def test_a_second_writer_appends(tmp_path):
    """A resumed run opens a new writer on the same folder; both runs' points are read back."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed: pip install 'recurrent[tensorboard]'")
    for record in RECORDS:
        board = TensorBoard(tmp_path)
        board.log(record)
        board.close()
    assert read_scalars(tmp_path)["train_loss"] == [(10, 2.5), (20, 1.75)]


def test_missing_package_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now raises ImportError
    for name in [m for m in sys.modules if m.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)  # so that torch imports it again
    with pytest.raises(UserError) as e:
        TensorBoard(tmp_path)
    assert str(e.value) == "--tensorboard needs the tensorboard package: pip install 'recurrent[tensorboard]'"
    assert not (tmp_path / "tensorboard").exists()


def test_the_loop_logs_every_metrics_line_with_tensorboard(tmp_path):
    """`--tensorboard` (TrainConfig.tensorboard) in the one loop: TensorBoard holds what metrics.jsonl holds."""
    pytest.importorskip("tensorboard", reason="tensorboard is not installed: pip install 'recurrent[tensorboard]'")
    import json

    from test_loop import Toy, config  # tests/train/test_loop.py

    from recurrent.train.loop import train

    run = train(lambda resumed: Toy(scores=[3.0, 2.0]), config(tmp_path, epochs=2, tensorboard=True), {})
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(run)
    assert scalars["train_loss"] == [(r["step"], f32(r["train_loss"])) for r in lines if r["train_loss"] is not None]
    assert scalars["val_loss"] == [(4, 3.0), (8, 2.0)]
