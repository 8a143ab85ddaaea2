"""The tagger: a padded batch equals each sentence alone (with either char encoder, softmax or CRF), the char
encoders ignore padded characters, and it overfits a tiny dataset with and without a CRF."""
from __future__ import annotations

import pytest
import torch

from recurrent.models.char_encoder import CharEncoder
from recurrent.models.tagger import SequenceTagger, TaggerConfig

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def batch(B: int = 3, T: int = 5, C: int = 4, V: int = 15, num_chars: int = 9):
    lengths = torch.tensor([T, 2, 4])[:B]
    words = torch.randint(2, V, (B, T))
    char_lengths = torch.randint(1, C + 1, (B, T))
    char_lengths[torch.arange(T) >= lengths.unsqueeze(1)] = 0
    chars = torch.randint(2, num_chars, (B, T, C))
    chars[torch.arange(C) >= char_lengths.unsqueeze(2)] = 0
    words[torch.arange(T) >= lengths.unsqueeze(1)] = 0
    return words, lengths, chars, char_lengths


@pytest.mark.parametrize("char_encoder", ["none", "lstm", "cnn"])
@pytest.mark.parametrize("crf", [False, True], ids=["softmax", "crf"])
def test_padded_batch_equals_each_sentence_alone(char_encoder, crf):
    config = TaggerConfig(vocab_size=15, num_chars=9, num_tags=len(TAGS), embedding_size=6, hidden_size=5,
                          char_encoder=char_encoder, char_embedding_size=4, char_hidden_size=3, crf=crf)
    model = SequenceTagger(config, TAGS).double().eval()
    words, lengths, chars, char_lengths = batch()
    tags = torch.randint(0, len(TAGS), words.shape)
    out = model(words, lengths, chars, char_lengths, tags)
    paths = model.decode(out.emissions, lengths)
    losses = []
    for b, n in enumerate(lengths.tolist()):
        C = int(char_lengths[b, :n].max())
        alone = model(words[b:b + 1, :n], lengths[b:b + 1], chars[b:b + 1, :n, :C], char_lengths[b:b + 1, :n],
                      tags[b:b + 1, :n])
        torch.testing.assert_close(out.emissions[b, :n], alone.emissions[0])
        assert paths[b] == model.decode(alone.emissions, lengths[b:b + 1])[0]
        losses.append(alone.loss)
    if crf:  # mean over sentences
        torch.testing.assert_close(out.loss, torch.stack(losses).mean())


@pytest.mark.parametrize("kind", ["lstm", "cnn"])
def test_char_encoder_ignores_padded_characters(kind):
    encoder = CharEncoder(kind, num_chars=9, embedding_size=4, hidden_size=3).double()
    chars = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    garbage = chars.clone()
    garbage[garbage == 0] = 8
    torch.testing.assert_close(encoder(chars, lengths), encoder(garbage, lengths))
    torch.testing.assert_close(encoder(chars, lengths)[1:], encoder(chars[1:, :2], lengths[1:]))


@pytest.mark.parametrize("crf", [False, True], ids=["softmax", "crf"])
def test_overfits_a_tiny_dataset(crf):
    torch.manual_seed(0)
    config = TaggerConfig(vocab_size=15, num_chars=9, num_tags=len(TAGS), embedding_size=16, hidden_size=16,
                          char_encoder="cnn", char_embedding_size=8, char_hidden_size=8, crf=crf, dropout=0.0)
    model = SequenceTagger(config, TAGS)
    words, lengths, chars, char_lengths = batch(T=6)
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["O", "B-LOC"], ["B-LOC", "O", "B-PER", "I-PER"]]
    tags = torch.zeros(words.shape, dtype=torch.long)
    for b, g in enumerate(gold):
        tags[b, :len(g)] = torch.tensor([TAGS.index(t) for t in g])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(80):
        optimizer.zero_grad()
        model(words, lengths, chars, char_lengths, tags).loss.backward()
        optimizer.step()
    model.eval()
    paths = model.decode(model(words, lengths, chars, char_lengths).emissions, lengths)
    assert [[TAGS[i] for i in p] for p in paths] == gold
