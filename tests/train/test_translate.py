"""The translation trainer on a synthetic task: the run folder, the best checkpoint, and translating with it;
bad data fails with one clear UserError."""
from __future__ import annotations

import json

import pytest

from recurrent.errors import UserError
from recurrent.models.seq2seq import Seq2SeqConfig
from recurrent.inference.translate import load_translator
from recurrent.train.translate import TrainTranslateConfig, train_translate
from recurrent.train.loop import flat_replace


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "reverse"
    config = flat_replace(TrainTranslateConfig(), synthetic="reverse", task_min_len=3, task_max_len=6, task_size=600, out=str(out),
                                  lr=0.01, max_steps=60, eval_every=30, progress=False,
                                  model=Seq2SeqConfig(embedding_size=16, hidden_size=32, dropout=0.0))
    return train_translate(config)


def test_run_folder_holds_config_checkpoint_and_metrics(run):
    assert {"config.json", "model.safetensors", "model.json", "metrics.jsonl", "loss.png"} <= {
        p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "translate" and config["training"]["max_steps"] == 60
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["val_loss"] is not None] == [30, 60]
    assert records[-1]["val_loss"] < records[0]["train_loss"]


def test_translator_keeps_order_and_empty_lines(run):
    translator = load_translator(run)
    lines = ["a b c", "", "d e f g h i j k l"]
    greedy = translator.translate(lines, beam_size=1)
    beam = translator.translate(lines, beam_size=3)
    assert len(greedy) == len(beam) == 3 and greedy[1].text == beam[1].text == ""
    assert all(set(r.text.split()) <= set("abcdefghij") for r in greedy + beam)
    assert greedy[0].src_tokens == ["▁a", "▁b", "▁c"] and greedy[0].hypothesis.attention.shape[1] == 3
    assert 1.0 <= translator.perplexity(["a b c"], ["c b a"]) < 10.0


def test_bad_data_fails_with_a_user_error(tmp_path):
    (tmp_path / "s").write_text("a\nb\n")
    (tmp_path / "t").write_text("a\n")
    config = flat_replace(TrainTranslateConfig(), src=str(tmp_path / "s"), tgt=str(tmp_path / "t"), valid_src=str(tmp_path / "s"),
                                  valid_tgt=str(tmp_path / "s"), out=str(tmp_path / "run"), progress=False)
    with pytest.raises(UserError, match="has 2 lines, .* has 1"):
        train_translate(config)
    with pytest.raises(UserError, match="give --src"):
        train_translate(flat_replace(TrainTranslateConfig(), out=str(tmp_path / "run")))
    with pytest.raises(UserError, match="teacher_forcing must be in"):
        train_translate(flat_replace(TrainTranslateConfig(), synthetic="copy", teacher_forcing=1.5))
