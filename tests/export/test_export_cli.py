"""`recurrent export` on tiny trained runs: an ONNX file and a torch.export program that match the run's model, and
one-line errors for what does not export.
"""
from __future__ import annotations

import pytest
import torch

from recurrent.cli.main import main

TSV = "pos\ta good film\nneg\ta bad film\npos\tgreat\nneg\tdull plot\n"
CONLL = "-DOCSTART- -X- O O\n\nPeter NNP I-NP I-PER\nlives VBZ I-VP O\n\nParis NNP I-NP I-LOC\nis VBZ I-VP O\n"
TINY = ["--max-steps", "2", "--embedding-size", "4", "--hidden-size", "4", "--batch-size", "2", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    (d / "train.tsv").write_text(TSV)
    (d / "eng.train").write_text(CONLL)
    assert main(["train", "classify", "--train", str(d / "train.tsv"), "--valid", str(d / "train.tsv"),
                 "--out", str(d / "sent"), *TINY]) == 0
    assert main(["train", "tag", "--train", str(d / "eng.train"), "--valid", str(d / "eng.train"), "--column", "3",
                 "--char-encoder", "lstm", "--out", str(d / "ner"), *TINY]) == 0
    return d


def test_cli_exports_a_classifier_run_to_onnx_and_torch_export(runs, capsys):
    pytest.importorskip("onnxruntime")
    from recurrent.inference.classify import load_classifier

    assert main(["export", str(runs / "sent"), "--format", "onnx", "--out", str(runs / "sent.onnx")]) == 0
    printed = capsys.readouterr().out
    assert "inputs words (B, T), lengths (B,)" in printed and "onnxruntime matches the model within" in printed
    worst = float(printed.split("within ")[1].split()[0])
    assert worst < 1e-4
    assert main(["export", str(runs / "sent"), "--format", "torch-export", "--out", str(runs / "sent.pt2")]) == 0
    exported = torch.export.load(runs / "sent.pt2").module()
    model = load_classifier(runs / "sent").model
    words, n = torch.tensor([[2, 3, 4, 5], [3, 4, 0, 0], [5, 0, 0, 0]]), torch.tensor([4, 2, 1])
    with torch.no_grad():
        torch.testing.assert_close(exported(words, n), model(words, n).logits, atol=1e-5, rtol=0)


def test_cli_refuses_what_does_not_export(runs, capsys):
    assert main(["export", str(runs / "ner"), "--format", "onnx", "--out", str(runs / "ner.onnx")]) == 2
    assert "character encoder" in capsys.readouterr().err
    assert main(["export", str(runs / "sent"), "--format", "onnx", "--out", str(runs / "no" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
