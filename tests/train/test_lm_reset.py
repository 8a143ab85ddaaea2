"""`recurrent train lm --reset-at TOKEN`: each stream's state restarts before every TOKEN, so a document's logits
are those of the document read alone, whatever came before it in the stream."""
import json

import pytest
import torch

from recurrent.cli.main import main
from recurrent.errors import UserError
from recurrent.inference.lm import load_lm
from recurrent.train.lm import TrainLMConfig, train_lm
from recurrent.train.loop import flat_replace

TEXT = "\n".join(["the cat sat", "a dog ran far", "birds fly", "fish swim deep"] * 40) + "\n"


def test_reset_at_a_newline_makes_each_line_its_own_document(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert main(["train", "lm", "--data", str(tmp_path / "input.txt"), "--out", str(out), "--reset-at", "\\n",
                 "--hidden-size", "16", "--num-layers", "2", "--bptt", "16", "--batch-size", "4", "--max-steps", "3",
                 "--precision", "fp32", "--no-progress"]) == 0
    lm = load_lm(out)
    newline = lm.vocab.stoi["\n"]
    assert json.loads((out / "model.json").read_text())["model"]["reset_id"] == newline
    model = lm.model.eval()
    ids = lm.vocab.encode("fish swim deep\na dog ran far\nbirds")[None]  # (1, T): a stream crossing two boundaries
    start = int((ids[0] == newline).nonzero()[0])  # the first boundary
    with torch.no_grad():
        whole = model(ids).logits  # (1, T, V)
        alone = model(ids[:, start:]).logits  # the stream from the boundary on, from the initial state
        carried = model(ids[:, start:], model(ids[:, :start]).state).logits  # with the state of what came before
    assert torch.allclose(whole[:, start:], alone, atol=1e-6)
    assert torch.allclose(carried, alone, atol=1e-6)  # the boundary restarts it: the carried state is forgotten


def test_reset_at_names_a_token_the_data_lacks(tmp_path):
    (tmp_path / "input.txt").write_text(TEXT)
    config = flat_replace(TrainLMConfig(), data=str(tmp_path / "input.txt"), out=str(tmp_path / "run"),
                          reset_at="|", hidden_size=8, max_steps=1, progress=False)
    with pytest.raises(UserError, match=r"--reset-at '\|': the training data's vocabulary has no such token"):
        train_lm(config)
