"""Export of the language model, the classifier and the tagger (ONNX through onnxruntime, and the torch.export
program) against the eager model on several batch sizes and lengths (tests/export/test_export_cli.py runs the command).

Key: B batch, T time, V vocab, C classes, K tags.
"""
from __future__ import annotations

import pytest
import torch

from recurrent.errors import UserError
from recurrent.export import check_onnx, export_onnx, export_program, exportable
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.models.tagger import SequenceTagger, TaggerConfig

SIZES = [(1, 1), (2, 8), (6, 3)]


def batch(V: int, B: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids (B, T) with zeros past each length, and the lengths (B,) (the first one T)."""
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, T + 1, (B,), generator=g)
    n[0] = T
    words = torch.randint(1, V, (B, T), generator=g)
    words[torch.arange(T) >= n.unsqueeze(1)] = 0
    return words, n


def models():
    torch.manual_seed(0)
    return {
        "lm-lstm-2": LanguageModel(LMConfig(vocab_size=11, hidden_size=6, num_layers=2)),
        "classifier-bilstm-max": SequenceClassifier(ClassifierConfig(vocab_size=13, num_classes=3,
                                                                     embedding_size=5, hidden_size=4)),
        "classifier-gru-last": SequenceClassifier(ClassifierConfig(vocab_size=13, num_classes=2, cell="gru",
                                                                   embedding_size=5, hidden_size=4,
                                                                   bidirectional=False, pooling="last")),
        "tagger-birnn-crf": SequenceTagger(TaggerConfig(vocab_size=9, num_tags=4, cell="rnn", embedding_size=5,
                                                        hidden_size=4, num_layers=2, crf=True)),
    }


@pytest.mark.parametrize("name", list(models()))
def test_exported_model_matches_eager(name, tmp_path):
    pytest.importorskip("onnxruntime")
    model = models()[name].eval()
    spec = exportable(model)
    exported = export_program(spec).module()
    V = model.config.vocab_size
    for i, (B, T) in enumerate(SIZES):
        words, n = batch(V, B, T, i)
        with torch.no_grad():
            if name.startswith("lm"):
                expected, got = model(words).logits, exported(words)
            elif name.startswith("classifier"):
                expected, got = model(words, n).logits, exported(words, n)
            else:
                expected, got = model(words, n).emissions, exported(words, n)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert check_onnx(spec, export_onnx(spec, tmp_path / "model.onnx"), SIZES) < 1e-4


def test_unsupported_models_are_a_user_error():
    with pytest.raises(UserError, match="character encoder"):
        exportable(SequenceTagger(TaggerConfig(vocab_size=9, num_chars=5, num_tags=3, char_encoder="lstm")))
    with pytest.raises(UserError, match="conditioned"):
        exportable(LanguageModel(LMConfig(vocab_size=9, hidden_size=4, num_layers=1, num_conditions=2)))
    with pytest.raises(UserError, match="cannot export a Linear"):
        exportable(torch.nn.Linear(2, 2))
