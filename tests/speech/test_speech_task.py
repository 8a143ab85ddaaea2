"""`recurrent train speech`, `transcribe` and `evaluate` on a tiny corpus synthesised with espeak-ng: it overfits,
the commands run, streaming gives the whole pass's text, and --resume continues."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from recurrent.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def synth():
    spec = importlib.util.spec_from_file_location("speech_synth", ROOT / "benchmarks" / "speech_synth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return synth().make_corpus("digits", out, {"train": 8, "test": 3}, seed=1)


SMALL = ["--hidden-size", "48", "--num-layers", "1", "--conv-channels", "48", "--conv-stride", "3", "--n-mels", "24", "--batch-size", "4",
         "--freq-masks", "0", "--time-masks", "0", "--dropout", "0", "--threads", "1", "--no-progress"]


def test_corpus_is_deterministic_and_test_voices_are_unseen(tmp_path, corpus):
    module = synth()
    again = module.make_corpus("digits", tmp_path, {"train": 8, "test": 3}, seed=1)
    assert again["train"].read_text() == corpus["train"].read_text()
    first = (corpus["train"].parent / "wav" / "train-00000.wav").read_bytes()
    assert (tmp_path / "wav" / "train-00000.wav").read_bytes() == first
    seen, unseen = module.split_variants(1)
    assert seen and unseen and not set(seen) & set(unseen)


def test_overfits_a_tiny_set_and_the_commands_run(tmp_path, corpus, capsys):
    run = tmp_path / "run"
    assert main(["train", "speech", "--train", str(corpus["train"]), "--valid", str(corpus["train"]), "--out",
                 str(run), "--max-steps", "200", "--epochs", "1000", "--lr", "1e-2", "--eval-every", "100", *SMALL]) == 0
    best = json.loads((run / "model.json").read_text())["metrics"]
    assert best["cer"] < 0.1, best  # the training set, memorised
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(corpus["train"]), "--beam", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test greedy WER") and lines[1].startswith("test beam 4 WER")
    assert float(lines[0].split()[-1]) == pytest.approx(best["cer"], abs=5e-5)  # evaluate agrees with training
    rows = [line.split("\t") for line in corpus["train"].read_text().splitlines()]
    files = [str(corpus["train"].parent / path) for path, _ in rows[:3]]
    unseen = tmp_path / "unseen.tsv"  # a test set with a character training never saw: scored, with a note
    unseen.write_text(f"{files[0]}\t{rows[0][1]}!\n{files[1]}\t{rows[1][1]}\n")
    assert main(["evaluate", str(run), "--data", str(unseen), "--beam", "2"]) == 0
    assert "1 transcript holds characters the model never saw ('!')" in capsys.readouterr().err
    assert main(["transcribe", str(run), *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert sum(hyp == ref for hyp, (_, ref) in zip(out, rows)) >= 2
    words = tmp_path / "words.txt"
    words.write_text("\n".join(synth().DIGITS) + "\n")
    assert main(["transcribe", str(run), *files, "--beam", "4", "--lexicon", str(words)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(w in synth().DIGITS for line in out for w in line.split())
    sentences = tmp_path / "lm.txt"
    sentences.write_text("".join(ref + "\n" for _, ref in rows))
    assert main(["transcribe", str(run), *files, "--beam", "4", "--lm", str(sentences)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["transcribe", str(run), *files, "--beam", "4", "--lm", str(sentences), "--lm-type", "char",
                 "--lm-order", "4", "--lm-weight", "0.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and sum(hyp == ref for hyp, (_, ref) in zip(out, rows)) >= 2
    assert main(["transcribe", str(run), files[0], "--lexicon", str(words)]) == 2
    assert "--lexicon needs beam search" in capsys.readouterr().err
    assert main(["transcribe", str(run), str(tmp_path / "none.wav")]) == 2
    assert "none.wav: no such audio file" in capsys.readouterr().err


def test_stream_equals_the_whole_pass_and_resume(tmp_path, corpus, capsys):
    run = tmp_path / "stream"
    args = ["train", "speech", "--train", str(corpus["train"]), "--valid", str(corpus["test"]), "--out", str(run),
            "--no-bidirectional", "--normalize", "running", "--lookahead", "3", "--lr", "3e-3", *SMALL]
    assert main([*args, "--max-steps", "4"]) == 0
    assert main([*args, "--max-steps", "8", "--resume"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 8
    from recurrent.speech.data import Utterance, load_audio
    from recurrent.speech.inference import load_recognizer

    rec = load_recognizer(run)
    path = corpus["test"].parent / corpus["test"].read_text().split("\t")[0]
    audio = load_audio(Utterance(path, "", "x"), 16000)
    whole, streamed = rec.log_probs(audio), rec.stream_log_probs(audio, chunk_ms=70)
    assert streamed.shape == whole.shape and torch.allclose(streamed, whole, atol=1e-4)
    capsys.readouterr()
    assert main(["transcribe", str(run), str(path), "--stream"]) == 0
    streamed_text = capsys.readouterr().out
    assert main(["transcribe", str(run), str(path)]) == 0
    assert capsys.readouterr().out == streamed_text
    meta = json.loads((run / "model.json").read_text())
    from recurrent.errors import UserError
    from recurrent.schema import check_model_meta

    assert check_model_meta(meta, "speech", "m.json") is meta
    assert meta["features"]["normalize"] == "running" and meta["model"]["running_norm"] == 100  # the default prior
    assert meta["model"]["lookahead"] == 3
    for bad, message in [({**meta, "chars": meta["chars"][:-1]}, "m.json: chars holds"),
                         ({**meta, "features": {**meta["features"], "normalize": "x"}}, "features.normalize must be"),
                         ({**meta, "model": {**meta["model"], "conv_stride": 99}}, "model.conv_stride must be <= 16")]:
        with pytest.raises(UserError, match=message):
            check_model_meta(bad, "speech", "m.json")


def test_bad_inputs_are_one_line_errors(tmp_path, corpus, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"{corpus['train'].parent / 'wav' / 'train-00000.wav'}\tONE\n")
    assert main(["train", "speech", "--train", str(corpus["train"]), "--valid", str(bad), "--out",
                 str(tmp_path / "r"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert "bad.tsv:1: the transcript has characters 'E', 'N', 'O' outside the vocabulary" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["train", "speech", "--train", str(corpus["train"]), "--valid", str(corpus["test"]), "--out",
                 str(tmp_path / "r"), "--running-norm", "50", "--normalize", "global", *SMALL]) == 2
    assert "--running-norm 50 needs --normalize running, got --normalize global" in capsys.readouterr().err
