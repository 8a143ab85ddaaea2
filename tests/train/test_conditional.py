"""Conditional generation (recurrent/train/conditional.py, `recurrent train lm --condition`): on sentences whose
label decides their words (a: x y, b: p q), a conditioned model writes the asked-for label's words and the
unconditioned baseline, on the same sentences, cannot (about half); the feature-vector path trains and generates;
bad rows are errors naming file:line; --resume is bit-identical; and the CLI trains, generates and evaluates."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from recurrent.checkpoint import load_checkpoint
from recurrent.cli.main import main
from recurrent.errors import UserError
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.inference.lm import load_lm
from recurrent.train.lm import TrainLMConfig, train_lm
from recurrent.train.loop import flat_replace

WORDS = {"a": ["x", "y"], "b": ["p", "q"]}
FEATURES = {"a": [1.0, 0.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0, 0.0]}  # F = 4, plus noise


def corpus(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """n sentences of 2..5 words from their label's pair; labels; and a noisy feature row (F = 4) per sentence."""
    rng = random.Random(seed)
    labels = [rng.choice("ab") for _ in range(n)]
    texts = [" ".join(rng.choice(WORDS[label]) for _ in range(rng.randint(2, 5))) for label in labels]
    noise = np.random.default_rng(seed).normal(0, 0.1, (n, 4))
    return texts, labels, (np.array([FEATURES[label] for label in labels]) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("sentences")
    for split, n, seed in (("train", 200, 0), ("dev", 40, 1)):
        texts, labels, features = corpus(n, seed)
        (d / f"{split}.tsv").write_text("".join(f"{label}\t{text}\n" for label, text in zip(labels, texts)))
        (d / f"{split}.txt").write_text("".join(f"{text}\n" for text in texts))
        np.save(d / f"{split}.npy", features)
        (d / f"{split}.csv").write_text("".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in features))
    return d


def config(data, out, ext: str = "tsv", **changes) -> TrainLMConfig:
    model = LMConfig(hidden_size=16, num_layers=1)
    defaults = dict(train=str(data / f"train.{ext}"), valid=str(data / f"dev.{ext}"), level="word", out=str(out),
                    batch_size=16, lr=1e-2, epochs=8, eval_every=0, log_every=10, progress=False)
    return flat_replace(TrainLMConfig(model=model), **{**defaults, **changes})


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {"label": train_lm(config(data, out / "label", condition="label")),
            "none": train_lm(config(data, out / "none", "txt", condition="none")),
            "vector": train_lm(config(data, out / "vector", "txt", condition=str(data / "train.npy"),
                                      valid_condition=str(data / "dev.csv"), condition_every_step=True))}


def samples(model, vocab, condition, n: int = 40, seed: int = 0) -> list[list[str]]:
    """n sentences sampled (temperature 1) from the start "<eos>", each up to its closing <eos>."""
    generator, sep, out = torch.Generator().manual_seed(seed), vocab.stoi["<eos>"], []
    for _ in range(n):
        tokens = []
        for token in model.generate(torch.tensor([sep]), 12, generator=generator, condition=condition):
            if token == sep:
                break
            tokens.append(vocab.itos[token])
        out.append(tokens)
    return out


def share(sentences: list[list[str]], label: str) -> float:
    """The share of the generated words that belong to `label`'s pair."""
    words = [w for s in sentences for w in s]
    return sum(w in WORDS[label] for w in words) / len(words)


def test_the_conditioned_model_writes_the_labels_words_and_the_baseline_cannot(runs):
    lm = load_lm(runs["label"])
    model, vocab = lm.model, lm.vocab
    for label in "ab":
        assert share(samples(model, vocab, torch.tensor("ab".index(label))), label) >= 0.95
    lm = load_lm(runs["none"])
    baseline, vocab = lm.model, lm.vocab
    assert not baseline.conditioned
    written = samples(baseline, vocab, None)  # the same samples, whichever label is asked for: chance
    assert 0.25 <= share(written, "a") <= 0.75 and 0.25 <= share(written, "b") <= 0.75


def test_the_feature_vector_model_trains_and_generates(runs, data):
    lm = load_lm(runs["vector"])
    model, vocab = lm.model, lm.vocab
    assert model.config.condition_size == 4 and model.config.condition_every_step
    for label in "ab":
        assert share(samples(model, vocab, torch.tensor(FEATURES[label]), n=20), label) >= 0.9


def test_the_condition_sets_the_initial_state_of_every_layer():
    """forward(condition=c) is forward from condition_state(c); the Stepper, started there, samples what stepping
    forward token by token samples; and the other weights are the unconditioned model's for the same seed."""
    torch.manual_seed(0)
    plain = LanguageModel(LMConfig(vocab_size=9, hidden_size=6, num_layers=2))
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=9, hidden_size=6, num_layers=2, num_conditions=3)).eval()
    assert set(model.state_dict()) - set(plain.state_dict()) == {
        "condition_embedding.weight", *(f"condition_to_state.{l}.{p}" for l in (0, 1) for p in ("weight", "bias"))}
    for key, value in plain.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    tokens, labels = torch.randint(0, 9, (3, 5)), torch.tensor([0, 1, 2])
    state = model.condition_state(model.embed_condition(labels))
    assert [tuple(f.shape) for s in state for f in s] == [(1, 1, 3, 6)] * 4  # h and c of 2 layers
    torch.testing.assert_close(model(tokens, condition=labels).logits, model(tokens, state).logits)
    greedy = list(model.generate(torch.tensor([4]), 6, greedy=True, condition=torch.tensor(2)))
    token, state, by_forward = torch.tensor([[4]]), None, []
    with torch.no_grad():
        for _ in range(6):
            out = model(token, state, condition=torch.tensor([2]) if state is None else None)
            token, state = out.logits[:, -1].argmax(-1, keepdim=True), out.state
            by_forward.append(int(token))
    assert greedy == by_forward
    with pytest.raises(ValueError, match="not conditioned"):
        plain(tokens, condition=labels)
    with pytest.raises(ValueError, match="is conditioned: give a condition"):
        model(tokens)


@pytest.mark.parametrize("files, names, message", [
    ({"t.tsv": "a\tx y\na x y\n"}, dict(train="t.tsv"), r"t.tsv:2: expected label<TAB>text"),
    ({"t.tsv": "a\tx y\nb\t \n"}, dict(train="t.tsv"), r"t.tsv:2: empty text"),
    ({"t.tsv": "a\tx y\n", "v.tsv": "a\tx\nc\tp\n"}, dict(train="t.tsv", valid="v.tsv"),
     r"v.tsv:2: label 'c' never appears in training; known labels: \['a'\]"),
    ({"f.csv": "1,0\n1,0,0\n"}, dict(condition="f.csv", valid_condition="f.csv"), r"f.csv:2: 3 features, expected 2"),
    ({"f.csv": "1,0\n1,zero\n"}, dict(condition="f.csv", valid_condition="f.csv"), r"f.csv:2: expected comma-sep"),
    ({"f.npy": np.array([[1, 0], [np.nan, 1]])}, dict(condition="f.npy", valid_condition="f.npy"),
     r"f.npy:2: a feature is not finite"),
    ({"f.csv": "1,0\n"}, dict(condition="f.csv", valid_condition="f.csv"), r"f.csv: 1 feature rows for the 2 lines"),
    ({"f.csv": "1,0\n1,0\n", "g.csv": "1,0,0\n1,0,0\n"}, dict(condition="f.csv", valid_condition="g.csv"),
     r"g.csv:1: 3 features, expected 2"),
    ({"f.csv": "1,0\n1,0\n"}, dict(condition="f.csv"), r"--valid-condition \(the valid lines' features\) goes with"),
])
def test_bad_rows_are_errors_naming_file_and_line(tmp_path, files, names, message):
    """Plain text t.txt (two lines) is the train and valid file unless the case names others; --condition label
    unless it names a feature file."""
    files = {"t.txt": "x y\np q\n", **files}
    for name, content in files.items():
        np.save(tmp_path / name, content) if name.endswith(".npy") else (tmp_path / name).write_text(content)
    names = {"train": "t.txt", "condition": "label", **names}
    names.setdefault("valid", names["train"])
    paths = {k: v if v == "label" else str(tmp_path / v) for k, v in names.items()}
    with pytest.raises(UserError, match=message):
        train_lm(flat_replace(TrainLMConfig(), level="word", out=str(tmp_path / "run"), max_steps=1, progress=False,
                              **paths))


@pytest.mark.parametrize("kind", ["label", "vector"])
def test_resume_is_bit_identical(data, tmp_path, kind):
    """6 steps straight == 3 steps, then --resume to 6: every tensor of last.safetensors, and the position."""
    extra = dict(condition="label") if kind == "label" else dict(
        ext="txt", condition=str(data / "train.npy"), valid_condition=str(data / "dev.npy"), condition_every_step=True)
    base = config(data, tmp_path, **{"eval_every": 2, "log_every": 1, "dropout": 0.3, **extra})
    straight = train_lm(flat_replace(base, out=str(tmp_path / "straight"), max_steps=6))
    train_lm(flat_replace(base, out=str(tmp_path / "split"), max_steps=3))
    split = train_lm(flat_replace(base, out=str(tmp_path / "split"), max_steps=6, resume=True))
    a, meta_a = load_checkpoint(straight, name="last")
    b, meta_b = load_checkpoint(split, name="last")
    assert meta_a["position"]["step"] == meta_b["position"]["step"] == 6
    assert meta_a["position"]["batch"] == meta_b["position"]["batch"] and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- the command line --------------------------------------------------------------------------------------------

TINY = ["--level", "word", "--hidden-size", "8", "--num-layers", "1", "--batch-size", "8", "--max-steps", "3",
        "--no-progress"]


def test_cli_label_run_trains_generates_and_evaluates(data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "lm", "--train", str(data / "train.tsv"), "--valid", str(data / "dev.tsv"),
                 "--condition", "label", "--out", run, *TINY]) == 0
    capsys.readouterr()
    assert main(["generate", run, "--condition", "b", "--length", "6", "--seed", "2"]) == 0
    words = capsys.readouterr().out.split()
    assert len(words) <= 6 and set(words) <= {"x", "y", "p", "q", "<unk>"}
    assert main(["generate", run, "--condition", "positive"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--condition must be one of ['a', 'b'], got 'positive'" in err, err
    assert main(["generate", run]) == 2 and "must be one of ['a', 'b']" in capsys.readouterr().err
    assert main(["evaluate", run, "--data", str(data / "dev.tsv")]) == 0
    assert re.search(r"^test perplexity \d+\.\d$", capsys.readouterr().out, re.M)
    text = tmp_path / "text.txt"
    text.write_text("x y p q\n")
    for command in (["diagnose", "activations", run, "--text", str(text)], ["diagnose", "gradients", run]):
        assert main(command) == 2  # a one-line error, not a traceback from a forward without its condition
        assert "is a conditioned language model" in capsys.readouterr().err


def test_cli_vector_run_generates_from_a_vector_or_a_row(data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "lm", "--train", str(data / "train.txt"), "--valid", str(data / "dev.txt"),
                 "--condition", str(data / "train.csv"), "--valid-condition", str(data / "dev.npy"),
                 "--condition-every-step", "--out", run, *TINY]) == 0
    for flags in (["--condition-vector", "1,0,0,0"], ["--condition-row", f"{data / 'dev.npy'}:3"]):
        capsys.readouterr()
        assert main(["generate", run, *flags, "--length", "5"]) == 0
        assert len(capsys.readouterr().out.split()) <= 5
    assert main(["generate", run, "--condition-vector", "1,0"]) == 2
    assert "--condition-vector must be 4 finite numbers, got 2" in capsys.readouterr().err
    assert main(["generate", run, "--condition-row", f"{data / 'dev.npy'}:41"]) == 2
    assert "--condition-row must be FILE:N with N in 1..40" in capsys.readouterr().err
    assert main(["evaluate", run, "--data", str(data / "dev.txt"), "--condition", str(data / "dev.csv")]) == 0
    assert re.search(r"^test perplexity \d+\.\d$", capsys.readouterr().out, re.M)
    assert main(["evaluate", run, "--data", str(data / "dev.txt")]) == 2
