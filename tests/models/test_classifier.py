"""The classifier: every pooling ignores padding (a padded batch equals each sequence run alone), for every
cell; pooling by hand; and it overfits a tiny dataset."""
from __future__ import annotations

import pytest
import torch

from recurrent.models.classifier import POOLINGS, ClassifierConfig, SequenceClassifier, pool


def padded_batch(V: int = 20, B: int = 4, T: int = 7):
    lengths = torch.tensor([T, 3, 1, 5])[:B]
    words = torch.randint(2, V, (B, T))
    words[torch.arange(T) >= lengths.unsqueeze(1)] = 0
    return words, lengths


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", POOLINGS)
def test_padded_batch_equals_each_sequence_alone(cell, pooling):
    config = ClassifierConfig(vocab_size=20, num_classes=3, cell=cell, embedding_size=6, hidden_size=5,
                              num_layers=2, pooling=pooling)
    model = SequenceClassifier(config).double().eval()
    words, lengths = padded_batch()
    batched = model(words, lengths).logits
    for b, n in enumerate(lengths.tolist()):
        alone = model(words[b:b + 1, :n], lengths[b:b + 1]).logits
        torch.testing.assert_close(batched[b:b + 1], alone)
    words[words == 0] = 7  # garbage in the padding changes nothing
    torch.testing.assert_close(model(words, lengths).logits, batched)


def test_pooling_by_hand():
    out = torch.randn(2, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([4, 2])
    torch.testing.assert_close(pool(out, None, lengths, "mean")[1], out[1, :2].mean(0))
    torch.testing.assert_close(pool(out, None, lengths, "max")[1], out[1, :2].max(0).values)
    scorer = torch.nn.Linear(3, 1).double()
    weights = torch.softmax(scorer(out[1, :2]), dim=0)  # (2, 1)
    torch.testing.assert_close(pool(out, None, lengths, "attention", scorer)[1], (weights * out[1, :2]).sum(0))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_overfits_a_tiny_dataset(pooling):
    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=12, num_classes=3, embedding_size=16, hidden_size=16, pooling=pooling,
                              dropout=0.0)
    model = SequenceClassifier(config)
    words = torch.randint(2, 12, (12, 6))
    lengths = torch.randint(2, 7, (12,))  # no two sequences alike
    words[torch.arange(6) >= lengths.unsqueeze(1)] = 0
    labels = torch.arange(12) % 3
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(120):
        optimizer.zero_grad()
        model(words, lengths, labels).loss.backward()
        optimizer.step()
    model.eval()
    assert (model(words, lengths).logits.argmax(-1) == labels).all()


def test_bad_pooling_fails_at_construction():
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(ClassifierConfig(vocab_size=5, num_classes=2, pooling="sum"))
